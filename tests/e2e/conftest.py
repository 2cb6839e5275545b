"""Fixtures for the local stack tests.

``stub_stack`` runs the stack in this process with tiny handlers injected, to test the
stack's own parts (resources, pollers, HTTP adapter) apart from the engine.
``local_stack_url`` runs the real thing as users do, ``python -m infra.local`` in a
subprocess, shared by every e2e test of the session (they share one xdist group).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import LocalStack, wait_until_ok
from tests.conftest import scan_text

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecordingHandler:
    """A step handler that records each record and fails the ids it is told to."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail_bodies: set[str] = set()
        self.raise_for_bodies: set[str] = set()
        self.changed = threading.Condition()

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        failures = []
        with self.changed:
            self.records += event["Records"]
            self.changed.notify_all()
        for record in event["Records"]:
            if record["body"] in self.raise_for_bodies:
                raise RuntimeError("boom")
            if record["body"] in self.fail_bodies:
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        with self.changed:
            arrived = self.changed.wait_for(lambda: len(self.records) >= count, timeout=timeout_s)
            # Loud: a caller that goes on with fewer records would assert on the wrong thing.
            assert arrived, (
                f"waited {timeout_s} s for {count} step records, got {len(self.records)}"
            )
            return list(self.records)


def echo_api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An API handler answering with the event it got (to check what the adapter builds)."""
    import json

    if event["path"] == "/boom":
        raise RuntimeError("handler failure")
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "X-Single": "one"},
        "multiValueHeaders": {"X-Multi": ["a", "b"]},
        "body": json.dumps({"event": event, "function": context.function_name}),
        "isBase64Encoded": False,
    }


@pytest.fixture
def step_handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def stub_stack(step_handler: RecordingHandler) -> Iterator[LocalStack]:
    stack = LocalStack(
        port=0,
        workers=2,
        retry_delay_s=0,
        api_handler=echo_api,
        step_handler=step_handler,
        housekeeping_handler=lambda event, context: {"requeued": 0},
    )
    with stack:
        yield stack


@pytest.fixture(scope="session")
def local_stack_url() -> Iterator[str]:
    """``python -m infra.local`` in a subprocess, as ``make run`` starts it."""
    port = free_port()
    env = {
        **os.environ,
        "LAMBDAGRAPH_PORT": str(port),
        "LAMBDAGRAPH_MOTO_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LAMBDAGRAPH_API_KEYS", None)
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lambdagraph-e2e-{port}.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local"],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ok(url, timeout_s=60)
            except TimeoutError:
                pytest.fail(f"local stack did not start; its log:\n{log_path.read_text()}")
            yield url
        finally:
            process.terminate()
            process.wait(30)
            # The stack's own log is log output of the suite too: no secret may be in it.
            scan_text(log_path.read_text(errors="replace"), f"local stack log {log_path.name}")
