"""``python -m infra.local`` as ``make run`` starts it: what it prints, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from infra.local.stack import wait_until_ok

from .conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_start_prints_how_to_run_and_sigterm_stops_cleanly() -> None:
    # GIVEN the stack started as users start it, with no API keys configured
    port = free_port()
    env = {**os.environ, "LAMBDAGRAPH_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    env.pop("LAMBDAGRAPH_API_KEYS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ok(f"http://127.0.0.1:{port}", timeout_s=60)

        # WHEN it gets SIGTERM
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # THEN it had printed the first-run help and the auth warning, and it exits 0 after stopping
    text = output.decode()
    assert process.returncode == 0, text
    assert f"curl -s -X POST http://127.0.0.1:{port}/threads" in text
    assert "get_sync_client" in text
    assert "LAMBDAGRAPH_API_KEYS is not set" in text
    assert "SIGTERM received, stopping" in text
    assert text.rstrip().endswith("stopped")
