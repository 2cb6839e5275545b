"""A simulated clock for tests: epoch seconds that a test advances instead of sleeping."""

from __future__ import annotations


class FakeClock:
    """Stands still until advanced (``monkeypatch.setattr(clock, "now", fake.now)``)."""

    def __init__(self, start: float = 1_800_000_000.25) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
