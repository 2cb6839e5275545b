"""Time-ordered ids (UUID version 7 layout), so a thread's runs sort by creation.

Written here rather than imported because Python 3.11 has no ``uuid.uuid7`` and the
alternatives pull heavy modules into the API's cold start.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def time_ordered_id() -> str:
    """48-bit millisecond timestamp, then a 12-bit counter (ordered within a millisecond),
    then 62 random bits."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same (or an earlier, clock-stepped) millisecond: keep counting from the last one.
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        counter = _counter
    random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | random_bits
    return str(uuid.UUID(int=value))
