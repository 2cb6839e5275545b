"""Retention: with ``ttl_seconds``, a thread is readable for the whole TTL after its last
write — although its head is rebuilt from older items — and gone after it.

Time is a fake clock handed to the saver; DynamoDB's TTL deletion is played by deleting
every item whose ``ttl`` has passed (DynamoDB may do that any time after it passes).
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from functions.checkpoint import DynamoDBSaver
from tests.checkpoint import graphs
from tests.checkpoint.conftest import SaverFactory
from tests.checkpoint.test_saver import _appender, _config, _put

pytestmark = pytest.mark.integration

DAY = 86400
TTL = 7 * DAY
MARGIN = DAY  # the saver's margin for a 7-day TTL: half of it, at most a day


class FakeClock:
    """Starts at the real time (checkpoint ids carry it) and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _on(saver: DynamoDBSaver, clock: FakeClock, **options: Any) -> DynamoDBSaver:
    """A new saver on the same table (a new Lambda invocation) with the fake clock."""
    return DynamoDBSaver(
        saver.table_name,
        bucket_name=saver.bucket_name,
        dynamodb_client=saver.client,
        s3_client=saver.s3,
        ttl_seconds=TTL,
        clock=clock,
        **options,
    )


def _items(saver: DynamoDBSaver) -> list[dict[str, Any]]:
    return list(saver.client.scan(TableName=saver.table_name, ConsistentRead=True)["Items"])


def _expire(saver: DynamoDBSaver, clock: FakeClock) -> int:
    """Delete what DynamoDB's TTL may have deleted by now; returns how many items."""
    gone = [i for i in _items(saver) if int(i["ttl"]["N"]) < clock.now]
    for item in gone:
        saver.client.delete_item(
            TableName=saver.table_name, Key={"pk": item["pk"], "sk": item["sk"]}
        )
    return len(gone)


def _run_spread_out(
    saver: DynamoDBSaver, clock: FakeClock, invocations: int, gap: float, steps: int = 50
) -> tuple[Any, float]:
    """An appending loop (``steps`` messages in all), one superstep per invocation,
    ``gap`` seconds apart; returns the thread's config and the time of its last write."""
    config: dict[str, Any] = {"configurable": {"thread_id": "t-retention"}}
    inputs: Any = {"messages": ["m" * 600]}
    last_write = clock.now
    for _ in range(invocations):
        written = len(_items(saver))
        for _chunk in _appender(_on(saver, clock), steps=steps).stream(
            inputs, config, interrupt_after="*"
        ):
            pass
        if len(_items(saver)) > written:
            last_write = clock.now
        inputs = None
        clock.now += gap
    return config, last_write


def test_an_idle_thread_is_readable_for_the_whole_ttl_after_its_last_write(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a thread written over two days, a step every 8 hours: its head is rebuilt from
    # items up to a day older than the head (appends are stored once, in the task's writes)
    clock = FakeClock()
    config, last_write = _run_spread_out(saver, clock, invocations=7, gap=8 * 3600)
    expected = _appender(_on(saver, clock), steps=50).get_state(config).values
    assert len(expected["messages"]) == 8

    # WHEN the thread stays idle until a minute before its TTL ends, and DynamoDB has
    # deleted every item whose ttl passed by then
    clock.now = last_write + TTL - 60
    _expire(saver, clock)

    # THEN a fresh saver reads the head in full
    state = _appender(_on(saver, clock), steps=50).get_state(config)
    assert state.values == expected


def test_a_thread_is_gone_once_its_ttl_after_the_last_write_has_passed(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a thread last written at some time
    clock = FakeClock()
    config, last_write = _run_spread_out(saver, clock, invocations=3, gap=3600)

    # WHEN its TTL has passed, but DynamoDB has not deleted its items yet
    clock.now = last_write + TTL + 60
    assert _expire(saver, clock) == 0

    # THEN it reads as gone (not as a partial or broken state), latest and history alike
    reader = _on(saver, clock)
    assert reader.get_tuple(config) is None
    assert list(reader.list(config)) == []


def test_a_step_after_more_than_the_margin_stores_a_self_contained_checkpoint(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a thread whose steps came minutes apart (stored as small deltas), then a pause
    # longer than the margin before one more step
    clock = FakeClock()
    config, _ = _run_spread_out(saver, clock, invocations=4, gap=60)
    clock.now += MARGIN
    small = max(len(i["d"]["B"]) for i in _items(saver) if i["sk"]["S"].count("\x1f") == 1)
    for _chunk in _appender(_on(saver, clock), steps=50).stream(None, config, interrupt_after="*"):
        pass
    head = _on(saver, clock).get_tuple(config)
    assert head is not None
    head_key = "\x1f" + head.config["configurable"]["checkpoint_id"]

    # WHEN every item older than the new head disappears
    for item in _items(saver):
        if item["sk"]["S"] < head_key:
            saver.client.delete_item(
                TableName=saver.table_name, Key={"pk": item["pk"], "sk": item["sk"]}
            )

    # THEN the head still reads in full: it was stored self-contained (compacted), while
    # the steps inside the margin were stored as small deltas
    state = _appender(_on(saver, clock), steps=50).get_state(config)
    assert len(state.values["messages"]) == 6
    assert small < 600


def test_items_a_live_head_is_rebuilt_from_are_used_even_past_their_own_ttl(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a head rebuilt from its parent's items, and those items' ttl already passed
    # (written under a shorter TTL) while DynamoDB has not deleted them
    clock = FakeClock()
    writer = _on(saver, clock)
    first = _put(writer, "t-dep", {"log": ["a" * 400]})
    writer.get_tuple(_config("t-dep"))
    _put(writer, "t-dep", {"log": ["a" * 400, "b"]}, parent=first, step=1)
    for item in _items(saver):
        if item["sk"]["S"] == "\x1f" + first:
            item["ttl"] = {"N": str(int(clock.now) - 10)}
            saver.client.put_item(TableName=saver.table_name, Item=item)

    # WHEN a fresh saver reads the head
    tup = _on(saver, clock).get_tuple(_config("t-dep"))

    # THEN its values are whole; the expired parent itself is no longer listed
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {"log": ["a" * 400, "b"]}
    assert [t.metadata["step"] for t in _on(saver, clock).list(_config("t-dep"))] == [1]


def test_items_expire_after_the_ttl_and_margin_and_the_bucket_matches(
    make_saver: SaverFactory,
) -> None:
    # GIVEN a saver with a seven-day TTL, set up from scratch
    clock = FakeClock()
    saver = make_saver(ttl_seconds=TTL, clock=clock)

    # WHEN a checkpoint and a write are stored
    checkpoint_id = _put(saver, "t-ttl", {"a": 1})
    saver.put_writes(_config("t-ttl", checkpoint_id), [("a", 2)], "task-1")

    # THEN every item's ttl is the TTL plus the margin ahead, the table expires on it, and
    # the bucket expires objects after as many days, rounded up
    items = _items(saver)
    assert len(items) == 2
    assert {int(i["ttl"]["N"]) for i in items} == {math.ceil(clock.now + TTL + MARGIN)}
    ttl = saver.client.describe_time_to_live(TableName=saver.table_name)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "ttl"
    rules = saver.s3.get_bucket_lifecycle_configuration(Bucket=saver.bucket_name)["Rules"]
    assert rules[0]["Expiration"]["Days"] == 8


def test_without_ttl_items_carry_no_expiry(saver: DynamoDBSaver) -> None:
    # GIVEN the default saver (no TTL)
    # WHEN a short run is stored
    graphs.run_stepwise(lambda: _appender(saver, steps=3), {"messages": []})

    # THEN no item has a ttl attribute
    assert all("ttl" not in i for i in _items(saver))
