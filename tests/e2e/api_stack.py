"""``python -m tests.e2e.api_stack``: the local stack with the real API whose runs never move.

The step worker takes every message and does nothing with it, so a run stays ``pending``
for as long as a test needs (a run "longer than the join"). Everything else is the local
stack as ``make run`` starts it: the real API handler, its execution environments (the
first in this process, the others cold-started processes), the API Gateway adapter with its
29 s integration timeout. Settings come from the environment (``LAMBDAGRAPH_PORT``,
``LAMBDAGRAPH_API_KEYS``, ``LAMBDAGRAPH_CORS_ORIGINS``, ``LAMBDAGRAPH_JOIN_TIMEOUT_S``...).
Stops on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.local.stack import LocalStack, wait_until_ok

REPO = Path(__file__).resolve().parents[2]


def take_no_step(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"batchItemFailures": []}


@contextmanager
def running(port: int, env: Mapping[str, str]) -> Iterator[str]:
    """This module in a subprocess on ``port``, with ``env`` added; yields its URL."""
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lambdagraph-api-stack-{port}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.api_stack"],
            cwd=REPO,
            env={
                **os.environ,
                "LAMBDAGRAPH_PORT": str(port),
                "LAMBDAGRAPH_MOTO_PORT": "0",
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ok(url, timeout_s=60)
            except TimeoutError as exc:
                raise RuntimeError(
                    f"api_stack did not start; its log:\n{log_path.read_text()}"
                ) from exc
            yield url
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stack = LocalStack(
        port=int(os.environ.get("LAMBDAGRAPH_PORT", "0")),
        step_handler=take_no_step,
        housekeeping_interval_s=0,
    )
    with stack:
        print(f"api_stack ready at {stack.url}", flush=True)
        while not stopping.wait(0.2):
            pass


if __name__ == "__main__":
    main()
