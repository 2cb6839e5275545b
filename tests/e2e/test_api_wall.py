"""The 29-second wall on the local stack, with the deployed timeouts: a cold ``runs/wait`` for
a run that outlasts the join answers in time, with the run as it is, never a 504.

API Gateway gives up on an integration after 29 s (``API_GATEWAY_TIMEOUT_S``; the local
adapter does the same). The deployed join timeout is what the wall leaves after a cold
start, the run's creation and the final read (functions/resources.py). Two waits go at
once: the first to the warm environment, the second to a new one, which starts cold (a
process importing the handler, as Lambda's init).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from functions.resources import API_GATEWAY_TIMEOUT_S, API_JOIN_POLL_S, API_JOIN_TIMEOUT_S

from .api_stack import running
from .conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("api-wall")]

KEY = "wall-test-key-0123456789"


@pytest.fixture(scope="module")
def idle_stack() -> Iterator[str]:
    """tests.e2e.api_stack with the deployed join settings and an API key."""
    env = {
        "LAMBDAGRAPH_API_KEYS": KEY,
        # What CDK gives the deployed function (tests/infra checks they are these).
        "LAMBDAGRAPH_JOIN_TIMEOUT_S": f"{API_JOIN_TIMEOUT_S:g}",
        "LAMBDAGRAPH_JOIN_POLL_S": f"{API_JOIN_POLL_S:g}",
        "LAMBDAGRAPH_LOCAL_API_ENVIRONMENTS": "2",
    }
    with running(free_port(), env) as url:
        yield url


def _post(url: str, body: Any, timeout_s: float = 60) -> tuple[int, Any, dict[str, str], float]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": KEY, "Content-Type": "application/json"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = json.loads(response.read() or b"null")
            return response.status, payload, dict(response.headers), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), {}, time.monotonic() - started


def test_a_cold_wait_for_a_run_longer_than_the_join_answers_before_the_wall(
    idle_stack: str,
) -> None:
    # GIVEN two threads, and runs on them that will not end while anyone waits
    threads = [_post(f"{idle_stack}/threads", {})[1]["thread_id"] for _ in range(2)]
    body = {
        "assistant_id": "support",
        "input": {"messages": [{"role": "user", "content": "I want a refund"}]},
    }

    # WHEN both are waited for at once (the second one lands on a cold environment)
    with ThreadPoolExecutor(2) as pool:
        waits = list(
            pool.map(lambda tid: _post(f"{idle_stack}/threads/{tid}/runs/wait", body), threads)
        )

    # THEN each answers 200 before API Gateway's wall, after waiting the whole join
    for status, values, headers, seconds in waits:
        print(f"runs/wait answered {status} in {seconds:.1f} s")
        assert status == 200, values
        assert API_JOIN_TIMEOUT_S <= seconds < API_GATEWAY_TIMEOUT_S, seconds
        # AND with the run as it is: still pending, nothing computed yet
        assert values == {}
        run_path = headers["Content-Location"]
        with urllib.request.urlopen(
            urllib.request.Request(f"{idle_stack}{run_path}", headers={"x-api-key": KEY}),
            timeout=10,
        ) as response:
            assert json.loads(response.read())["status"] == "pending"


def test_the_local_gateway_answers_504_at_its_integration_timeout_readable_by_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from functions.settings import get_settings
    from infra.local.api_gateway import ApiGatewayServer

    # GIVEN the local API Gateway adapter with a handler slower than its integration timeout
    monkeypatch.setenv("LAMBDAGRAPH_CORS_ORIGINS", "http://page.test")
    get_settings.cache_clear()
    release = threading.Event()

    def slow(event: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)
        return {"statusCode": 200, "body": "late"}

    server = ApiGatewayServer(slow, integration_timeout_s=0.5)
    server.start()
    try:
        # WHEN a page's request waits on it
        request = urllib.request.Request(
            f"{server.url}/slow", headers={"Origin": "http://page.test"}
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        # THEN it gets API Gateway's 504, with the CORS header its page needs to read it
        assert answer.value.code == 504
        assert json.loads(answer.value.read()) == {"message": "Endpoint request timed out"}
        assert answer.value.headers["Access-Control-Allow-Origin"] == "http://page.test"
    finally:
        release.set()
        server.stop()
        get_settings.cache_clear()
