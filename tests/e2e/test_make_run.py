"""``python -m infra.local`` as ``make run`` starts it: what it prints, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
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


def test_with_api_keys_each_key_sees_only_its_own_threads() -> None:
    from langgraph_sdk import get_sync_client

    # GIVEN the stack started with two API keys
    port = free_port()
    env = {**os.environ, "LAMBDAGRAPH_PORT": str(port), "LAMBDAGRAPH_API_KEYS": "key-one,key-two"}
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url, timeout_s=60)
        one = get_sync_client(url=url, api_key="key-one")
        two = get_sync_client(url=url, api_key="key-two")
        anonymous = get_sync_client(url=url, api_key="")

        # WHEN the first key creates a thread and the others try to read it
        thread = one.threads.create()
        with pytest.raises(httpx.HTTPStatusError) as other_tenant:
            two.threads.get(thread["thread_id"])
        with pytest.raises(httpx.HTTPStatusError) as no_key:
            anonymous.threads.get(thread["thread_id"])
        own = one.threads.get(thread["thread_id"])
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)

    # THEN only its owner sees it, a missing key is refused, and no auth-off warning was printed
    assert own["thread_id"] == thread["thread_id"]
    assert other_tenant.value.response.status_code == 404
    assert no_key.value.response.status_code == 401
    assert "LAMBDAGRAPH_API_KEYS is not set" not in output.decode()
    assert "x-api-key: key-one" in output.decode()
