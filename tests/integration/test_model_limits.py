"""Shared rate limits, retries and the circuit breaker (functions/models/limits.py and
managed.py) on moto's DynamoDB, and a rate-limited step deferred through the step worker."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from functions import clock
from functions.models.factory import platform_model
from functions.models.limits import ModelGate, ModelLimit, ModelUnavailable, RateLimited
from functions.models.managed import ManagedChatModel, classify_error
from functions.models.meter import UsageMeter
from graphs.offline_model import OfflineChatModel
from tests.clocks import FakeClock
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

TEXT = {"messages": [{"role": "user", "content": "I was charged twice"}]}


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(time.time())
    monkeypatch.setattr(clock, "now", fake.now)
    return fake


def _gate(stack: Stack, model: str, limit: ModelLimit, **kw: Any) -> ModelGate:
    return ModelGate(stack.settings.runtime_table, model, limit, **kw)


def test_the_bucket_gives_its_burst_then_the_rate(stack: Stack, frozen: FakeClock) -> None:
    gate = _gate(stack, "m-rate", ModelLimit(rpm=60, burst=3))
    for _ in range(3):
        gate.acquire("high", 10)
    with pytest.raises(RateLimited) as raised:
        gate.acquire("high", 10)
    # 60 per minute: the next request is 1 s away
    assert raised.value.retry_after_s == pytest.approx(1.0)
    frozen.advance(1.0)
    gate.acquire("high", 10)
    with pytest.raises(RateLimited):
        gate.acquire("high", 10)


def test_high_priority_keeps_a_reserve_that_background_work_cannot_take(
    stack: Stack, frozen: FakeClock
) -> None:
    def taken(gate: ModelGate, priority: str) -> int:
        n = 0
        while True:
            try:
                gate.acquire(priority, 10)
            except RateLimited:
                return n
            n += 1

    limit = ModelLimit(rpm=600, burst=10)
    # low leaves 40% of the bucket, normal 20%, high nothing
    low = _gate(stack, "m-low", limit, reserve=0.2)
    assert taken(low, "low") == 6
    assert taken(low, "normal") == 2
    assert taken(low, "high") == 2


def test_concurrent_workers_never_get_more_than_the_bucket_holds(
    stack: Stack, frozen: FakeClock
) -> None:
    # GIVEN 8 workers (threads, each its own gate as each Lambda has) on one model's bucket
    limit = ModelLimit(rpm=60, burst=20)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        gate = _gate(stack, "m-shared", limit)
        for _ in range(10):
            try:
                gate.acquire("high", 1)
            except RateLimited:
                continue
            with lock:
                granted.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN with the clock standing still exactly the burst went through, not one more
    assert len(granted) == 20


def test_tokens_are_limited_and_settled_to_what_the_call_used(
    stack: Stack, frozen: FakeClock
) -> None:
    gate = _gate(stack, "m-tokens", ModelLimit(rpm=6000, tpm=6000, burst=100))
    # token capacity banks as long as requests do: 100 requests = 1 s = 100 tokens
    assert gate.limit.token_capacity == pytest.approx(100)
    ticket = gate.acquire("high", 60)
    gate.settle(ticket, 90)  # it used 90: 10 left
    with pytest.raises(RateLimited) as raised:
        gate.acquire("high", 20)
    assert raised.value.retry_after_s == pytest.approx(1.0)  # 10 more tokens: 0.1 s, min 1


class Failing(BaseChatModel):
    """Fails with ``error`` the first ``times`` calls, then answers."""

    error: Any
    times: int = 10**9
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return ChatResult(generations=[ChatGeneration(message=AIMessage("recovered"))])


class ProviderError(Exception):
    def __init__(self, status_code: int, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.response = type(
            "R", (), {"headers": {"retry-after": retry_after} if retry_after else {}}
        )()


def test_errors_are_classified_as_providers_report_them() -> None:
    from botocore.exceptions import ClientError

    assert classify_error(ProviderError(429, "7")) == ("rate", 7.0)
    assert classify_error(ProviderError(503)) == ("transient", None)
    assert classify_error(TimeoutError()) == ("transient", None)
    assert classify_error(ProviderError(400)) == ("fatal", None)
    throttled = ClientError({"Error": {"Code": "ThrottlingException"}}, "Converse")
    assert classify_error(throttled)[0] == "rate"


def test_a_transient_failure_is_retried_with_backoff_in_the_call(
    stack: Stack, frozen: FakeClock
) -> None:
    sleeps: list[float] = []
    inner = Failing(error=ProviderError(503), times=2)
    model = ManagedChatModel(
        inner=inner,
        gate=_gate(stack, "m-retry", ModelLimit(rpm=600)),
        sleep=sleeps.append,
    )
    assert model.invoke("hi").content == "recovered"
    assert inner.calls == 3
    assert len(sleeps) == 2
    assert all(0 <= s <= 4 for s in sleeps)


def test_a_provider_429_drains_the_bucket_until_its_retry_after(
    stack: Stack, frozen: FakeClock
) -> None:
    gate = _gate(stack, "m-429", ModelLimit(rpm=600))
    model = ManagedChatModel(inner=Failing(error=ProviderError(429, "7")), gate=gate)
    with pytest.raises(RateLimited) as raised:
        model.invoke("hi")
    assert raised.value.retry_after_s == pytest.approx(7.0)
    # AND every worker's next call waits too, until the retry-after passed
    with pytest.raises(RateLimited):
        _gate(stack, "m-429", ModelLimit(rpm=600)).acquire("high", 1)
    frozen.advance(7.5)
    _gate(stack, "m-429", ModelLimit(rpm=600)).acquire("high", 1)


def test_the_breaker_opens_falls_back_and_recovers_through_a_probe(
    stack: Stack, frozen: FakeClock
) -> None:
    # GIVEN a model failing with 5xx, no in-call retries, a breaker opening after 3 failures
    inner = Failing(error=ProviderError(502), times=3)
    fallback = OfflineChatModel(model_name="backup")
    model = ManagedChatModel(
        inner=inner,
        gate=_gate(
            stack, "m-breaker", ModelLimit(rpm=600), breaker_failures=3, breaker_cooldown_s=30
        ),
        fallback=fallback,
        retries=0,
    )
    # WHEN three calls fail: each defers its step
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            model.invoke("hi")
    # THEN the breaker is open: calls go to the fallback without touching the model
    meter = UsageMeter()
    answer = model.invoke([HumanMessage("I need a refund")], {"callbacks": [meter]})
    assert inner.calls == 3
    assert answer.response_metadata["model_name"] == "backup"
    assert set(meter.take()) == {"backup"}  # accounted under the model that answered
    # AND without a fallback the step is deferred until the cool-down ends
    bare = ManagedChatModel(inner=inner, gate=model.gate, retries=0)
    with pytest.raises(ModelUnavailable) as raised:
        bare.invoke("hi")
    assert raised.value.retry_after_s == pytest.approx(30)
    # AND after it one call probes the model; it answers, and the breaker closes
    frozen.advance(31)
    assert bare.invoke("hi").content == "recovered"
    assert bare.invoke("hi").content == "recovered"
    assert inner.calls == 5


def test_a_failed_probe_reopens_the_breaker(stack: Stack, frozen: FakeClock) -> None:
    inner = Failing(error=ProviderError(500))
    gate = _gate(stack, "m-probe", ModelLimit(rpm=600), breaker_failures=2, breaker_cooldown_s=10)
    model = ManagedChatModel(inner=inner, gate=gate, retries=0)
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            model.invoke("hi")
    frozen.advance(11)
    with pytest.raises(ModelUnavailable, match="failed"):
        model.invoke("hi")  # the probe, failing
    assert inner.calls == 3
    with pytest.raises(ModelUnavailable, match="circuit breaker open"):
        model.invoke("hi")
    assert inner.calls == 3


def test_tools_bind_through_the_managed_model(stack: Stack) -> None:
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    class ToolModel(OfflineChatModel):
        def bind_tools(self, tools: Any, **kw: Any) -> Any:
            return self.bind(tools=[t.name for t in tools])

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(json.dumps(kw)))])

    model = ManagedChatModel(inner=ToolModel(), gate=_gate(stack, "m-tools", ModelLimit(rpm=600)))
    assert json.loads(str(model.bind_tools([add]).invoke("2+2").content)) == {"tools": ["add"]}


def test_a_rate_limited_step_is_deferred_not_failed(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, frozen: FakeClock
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # GIVEN a deployment whose offline model may make 6 calls a minute, 1 at once
    limits = json.dumps({"offline": {"rpm": 6, "burst": 1}})
    stack = Stack(moto_endpoint, model_limits=limits)
    assert isinstance(platform_model(stack.settings), ManagedChatModel)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=TEXT)

    # WHEN its steps are delivered (the support graph asks the model twice, steps apart)
    stack.pump()

    # THEN the second model call found no capacity: its step was deferred, not failed
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    assert record.status == "running"
    assert record.deferrals == 1
    assert "rate limit" in (record.last_error or "")
    assert record.claim_token is None  # nobody holds the step while it waits
    assert record.attempts == 0  # the deferral is not a failed attempt
    (priority, waiting) = _wait_for_message(stack)
    assert json.loads(waiting["Body"])["step"] == record.claimed_step
    assert int(waiting["Attributes"]["ApproximateReceiveCount"]) == 1  # a new message

    # AND once the bucket has refilled the step's new message runs it and the run ends
    frozen.advance(10)
    stack.deliver(priority, [waiting])
    stack.pump()
    final = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert final["status"] == "success", final
    assert final["usage"]["by_model"]["offline"]["calls"] == 2


def _wait_for_message(stack: Stack, timeout_s: float = 20) -> tuple[str, dict[str, Any]]:
    """The next step message, waiting out its SQS delay (real time on moto)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        batch = stack.receive(max_messages=1)
        if batch:
            return batch[0]
        time.sleep(0.5)
    raise AssertionError("no step message came back")


def test_a_deferred_steps_stream_events_are_read_once(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, frozen: FakeClock
) -> None:
    from tests.integration.test_streaming import BILLING, STEP_MODES, _tail
    from tests.stream_parity import comparable, reference_stream

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    # GIVEN what the official server streams for the run in one process
    expected = reference_stream("support", BILLING, STEP_MODES)
    # AND a deployment whose model makes 1 call at once, 6 a minute
    stack = Stack(moto_endpoint, model_limits=json.dumps({"offline": {"rpm": 6, "burst": 1}}))
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=BILLING, stream_mode=STEP_MODES, stream_resumable=True)
    # WHEN a step is deferred for want of capacity, then runs
    stack.pump()
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    assert record.deferrals == 1
    priority, waiting = _wait_for_message(stack)
    frozen.advance(10)
    stack.deliver(priority, [waiting])
    stack.pump()
    # THEN the stream is the official one: the deferred step's events once, none missing
    events = _tail(stack, thread_id, run["run_id"])
    assert comparable([(n, d) for n, d, _ in events[1:]]) == comparable(expected)


class Hanging(BaseChatModel):
    """Hangs the first ``times`` calls (until released), then answers."""

    times: int = 1
    calls: int = 0
    release: Any = None

    @property
    def _llm_type(self) -> str:
        return "hanging"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            self.release.wait(30)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("answered"))])


def test_a_hung_call_times_out_and_is_retried(stack: Stack, frozen: FakeClock) -> None:
    release = threading.Event()
    inner = Hanging(times=1, release=release)
    model = ManagedChatModel(
        inner=inner,
        gate=_gate(stack, "m-hang", ModelLimit(rpm=600)),
        timeout_s=0.2,
        sleep=lambda _s: None,
    )
    try:
        # the first call hangs past the timeout; the retry answers
        assert model.invoke("hi").content == "answered"
        assert inner.calls == 2
        # AND a model that keeps hanging defers the step, counted by the breaker
        stuck = ManagedChatModel(
            inner=Hanging(times=10, release=release),
            gate=_gate(stack, "m-hang-2", ModelLimit(rpm=600)),
            timeout_s=0.1,
            retries=1,
            sleep=lambda _s: None,
        )
        with pytest.raises(ModelUnavailable, match=r"did not answer within 0\.1 s"):
            stuck.invoke("hi")
    finally:
        release.set()
