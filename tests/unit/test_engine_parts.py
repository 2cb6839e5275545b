"""Small engine parts: JSON shaping, request models, step messages, API-key auth."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.types import Interrupt
from pydantic import ValidationError

from functions.api_models import RunCreate
from functions.auth import PUBLIC_TENANT, authenticate, key_hash, tenant_of
from functions.errors import UnauthorizedError
from functions.jsonable import to_jsonable
from functions.queues import StepMessage
from functions.settings import Settings


def test_messages_and_interrupts_become_plain_json() -> None:
    value = {"messages": [AIMessage(content="hi", id="m1")], "i": Interrupt(value={"a": 1}, id="x")}
    data = to_jsonable(value)
    assert data["messages"][0]["type"] == "ai"
    assert data["messages"][0]["content"] == "hi"
    assert data["i"] == {"value": {"a": 1}, "id": "x"}


def test_run_create_keeps_what_the_worker_needs() -> None:
    body = RunCreate.model_validate(
        {
            "assistant_id": "support",
            "input": {"messages": []},
            "command": {"resume": "yes"},
            "checkpoint": {"checkpoint_id": "c1", "checkpoint_ns": ""},
            "stream_mode": ["values"],
        }
    )
    kwargs = body.run_kwargs()
    assert kwargs["checkpoint_id"] == "c1"
    assert kwargs["command"] == {"resume": "yes"}
    assert body.priority == "normal"
    assert body.multitask_strategy == "enqueue"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"assistant_id": ""},
        {"assistant_id": "s", "priority": "urgent"},
        {"assistant_id": "s", "if_not_exists": "x"},
    ],
)
def test_run_create_rejects_invalid_bodies(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RunCreate.model_validate(bad)


def test_step_message_round_trip() -> None:
    message = StepMessage("r", "t", 3, "high", "c")
    assert StepMessage.from_json(message.to_json()) == message


class _KeyTable:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = {key_hash(k): tenant for k, tenant in keys.items()}

    def tenant_for_key_hash(self, digest: str) -> str | None:
        return self.keys.get(digest)


def test_auth_off_without_keys() -> None:
    assert authenticate(None, Settings(api_keys=""), None) == PUBLIC_TENANT


def test_each_configured_key_is_its_own_tenant() -> None:
    settings = Settings(api_keys="k1, k2")
    one, two = authenticate("k1", settings, None), authenticate("k2", settings, None)
    assert one != two
    assert one == tenant_of(key_hash("k1"))
    with pytest.raises(UnauthorizedError):
        authenticate("k3", settings, None)
    with pytest.raises(UnauthorizedError):
        authenticate(None, settings, None)


def test_keys_from_the_runtime_table() -> None:
    settings = Settings(api_keys="", api_keys_in_table=True)
    table = _KeyTable({"secret": "acme"})
    assert authenticate("secret", settings, table) == "acme"  # type: ignore[arg-type]
    with pytest.raises(UnauthorizedError):
        authenticate("other", settings, table)  # type: ignore[arg-type]


def test_time_ordered_ids_sort_by_creation() -> None:
    from functions.ids import time_ordered_id

    ids = [time_ordered_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
