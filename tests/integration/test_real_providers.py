"""Smoke test against real model providers, through the step worker on moto.

Runs only where credentials are present, and says so when it skips:
- OpenAI: ``OPENAI_API_KEY`` (model ``LAMBDAGRAPH_SMOKE_OPENAI_MODEL``, default gpt-4o-mini);
- Bedrock: ``LAMBDAGRAPH_SMOKE_BEDROCK_MODEL`` (e.g. ``amazon.nova-micro-v1:0``) and real
  AWS credentials; Bedrock is called at its real endpoint while everything else stays on
  moto (``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``).
Both need the ``models`` extra (``pip install -e '.[models]'``).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

TEXT = {"messages": [{"role": "user", "content": "I was charged twice for my order"}]}


def _smoke(stack: Stack) -> dict[str, Any]:
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, input=TEXT)
    stack.pump()
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "success", got
    usage = got["usage"]
    assert usage["calls"] >= 2
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
    assert usage["cost_usd"] > 0, usage  # a listed model: priced
    return dict(got)


@pytest.mark.skipif(
    not os.environ.get("OPENAI_API_KEY") or importlib.util.find_spec("langchain_openai") is None,
    reason="real-provider smoke test: set OPENAI_API_KEY and pip install -e '.[models]' to run",
)
def test_support_on_openai(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    model = os.environ.get("LAMBDAGRAPH_SMOKE_OPENAI_MODEL", "gpt-4o-mini")
    _smoke(Stack(moto_endpoint, chat_model=f"openai:{model}"))


@pytest.mark.skipif(
    not os.environ.get("LAMBDAGRAPH_SMOKE_BEDROCK_MODEL")
    or importlib.util.find_spec("langchain_aws") is None,
    reason=(
        "real-provider smoke test: set LAMBDAGRAPH_SMOKE_BEDROCK_MODEL (and real AWS "
        "credentials) and pip install -e '.[models]' to run"
    ),
)
def test_support_on_bedrock(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    region = os.environ.get("AWS_REGION", "us-east-1")
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", f"https://bedrock-runtime.{region}.amazonaws.com"
    )
    model = os.environ["LAMBDAGRAPH_SMOKE_BEDROCK_MODEL"]
    _smoke(Stack(moto_endpoint, chat_model=f"bedrock:{model}"))
