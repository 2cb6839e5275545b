"""The one clock the run path reads (leases, deadlines, TTLs).

Everything that compares against a lease or a deadline calls ``clock.now()`` instead of
``time.time()``, so a test can run the deployed timings (a 360 s lease, a 30 min visibility
timeout, a 5 min housekeeping schedule) on a simulated clock that it advances instead of
sleeping: ``monkeypatch.setattr(clock, "now", fake.now)``.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds since the epoch (``time.time()`` unless a test replaced it)."""
    return time.time()
