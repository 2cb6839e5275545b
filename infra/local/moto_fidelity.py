"""Make the embedded moto behave like AWS where the run path depends on it.

DynamoDB applies a conditional write atomically: of two concurrent ``UpdateItem`` calls
whose condition only one can meet, exactly one succeeds. moto evaluates the condition and
applies the update in Python, on one server thread per request, with nothing in between: two
racing requests can both see the old item and both succeed. (Measured with moto 5.2.5: two
threads racing the same ``SET claimed = :n`` with ``claimed < :n``, 200 times, both
succeeded 5 times.) The step worker's claim is such a write, so under duplicate delivery
moto let two invocations claim, and run, the same superstep; on AWS the second claim fails.

``serialise_dynamodb_requests()`` gives every DynamoDB request to the in-process moto server
the same lock, so each request is applied whole before the next one starts: conditions and
updates are atomic, as on DynamoDB. Requests are fast (about a millisecond), and the
interpreter serialises most of their work anyway.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_MARK = "_lambdagraph_serialised"


def serialise_dynamodb_requests() -> None:
    """Apply each DynamoDB request to moto whole, one at a time (idempotent, process-wide)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    setattr(call_action, _MARK, True)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
