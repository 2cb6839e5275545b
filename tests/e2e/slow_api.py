"""An API handler for the execution-environment test, importable by another process.

``GET /slow?marker=PATH`` creates PATH.started, then waits until PATH exists;
``GET /release?marker=PATH`` creates PATH.
If the two could not run at the same time, ``/slow`` would time out.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    marker = Path((event.get("queryStringParameters") or {})["marker"])
    if event["path"] == "/release":
        marker.touch()
        outcome = "released"
    else:
        marker.with_suffix(".started").touch()
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        outcome = "saw release" if marker.exists() else "timed out"
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"outcome": outcome, "pid": os.getpid()}),
        "isBase64Encoded": False,
    }
