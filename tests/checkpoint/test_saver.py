"""DynamoDBSaver behaviour beyond the conformance suite, against moto over HTTP."""

from __future__ import annotations

import operator
import os
import time
import uuid
from typing import Annotated, Any, TypedDict

import boto3
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from functions.checkpoint import (
    CheckpointBucketMissingError,
    CheckpointDecodeError,
    CheckpointTableMissingError,
    DynamoDBSaver,
)
from tests.checkpoint import graphs
from tests.checkpoint.conftest import SaverFactory

pytestmark = pytest.mark.integration


def _fresh(saver: DynamoDBSaver, **options: Any) -> DynamoDBSaver:
    return DynamoDBSaver(
        saver.table_name,
        bucket_name=saver.bucket_name,
        dynamodb_client=saver.client,
        s3_client=saver.s3,
        **options,
    )


def _config(thread_id: str, checkpoint_id: str | None = None, ns: str = "") -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _put(
    saver: DynamoDBSaver,
    thread_id: str,
    values: dict[str, Any],
    *,
    parent: str | None = None,
    step: int = 0,
    new: list[str] | None = None,
    versions: dict[str, Any] | None = None,
    **metadata: Any,
) -> str:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = versions or {k: step + 1 for k in values}
    new_versions = {k: checkpoint["channel_versions"][k] for k in (new or list(values))}
    stored = saver.put(
        _config(thread_id, parent),
        checkpoint,
        {"source": "loop", "step": step, "parents": {}, **metadata},
        new_versions,
    )
    return str(stored["configurable"]["checkpoint_id"])


def _objects(saver: DynamoDBSaver) -> list[str]:
    listing = saver.s3.list_objects_v2(Bucket=saver.bucket_name)
    return [o["Key"] for o in listing.get("Contents", [])]


def _big(size: int, seed: str = "") -> str:
    # Random text so nothing along the way can shrink it.
    return (seed + os.urandom(size).hex())[:size]


class Appender(TypedDict):
    messages: Annotated[list[str], operator.add]


def _appender(checkpointer: Any, steps: int, size: int = 1000) -> Any:
    def append(state: Appender) -> dict[str, Any]:
        return {"messages": [f"{len(state['messages'])}:" + "m" * size]}

    def route(state: Appender) -> str:
        return END if len(state["messages"]) >= steps else "append"

    builder = StateGraph(Appender)
    builder.add_node("append", append)
    builder.add_edge(START, "append")
    builder.add_conditional_edges("append", route, ["append", END])
    return builder.compile(checkpointer=checkpointer)


# ----------------------------------------------------------------------- writes


def test_writes_whose_value_is_none_are_kept(saver: DynamoDBSaver) -> None:
    # GIVEN a checkpoint
    checkpoint_id = _put(saver, "t-none", {"a": 1})

    # WHEN a task writes None to a channel
    saver.put_writes(_config("t-none", checkpoint_id), [("a", None), ("b", 2)], "task-1")

    # THEN the None write is returned, in order, by a fresh saver
    tup = _fresh(saver).get_tuple(_config("t-none"))
    assert tup is not None
    assert tup.pending_writes == [("task-1", "a", None), ("task-1", "b", 2)]


def test_threads_over_one_megabyte_list_and_load_completely(saver: DynamoDBSaver) -> None:
    # GIVEN 30 checkpoints whose 40 KB value changes at each one (1.2 MB in all), and a
    # last checkpoint with 1.2 MB of pending writes from 15 tasks, stored uncompressed
    saver = _fresh(saver, compress_min_bytes=None)
    parent = None
    values = {}
    for step in range(30):
        values = {"doc": _big(40_000, f"{step}-"), "step": step}
        parent = _put(saver, "t-big", values, parent=parent, step=step)
    for task in range(15):
        saver.put_writes(_config("t-big", parent), [("doc", _big(80_000))], f"task-{task:02}")

    # WHEN a fresh saver loads the latest checkpoint and lists the thread
    reader = _fresh(saver)
    latest = reader.get_tuple(_config("t-big"))
    listed = list(reader.list(_config("t-big")))

    # THEN everything comes back: DynamoDB's 1 MB query pages were all read
    assert latest is not None
    assert latest.checkpoint["channel_values"] == values
    assert len(latest.pending_writes or []) == 15
    assert [t.metadata["step"] for t in listed] == list(range(29, -1, -1))
    assert all(t.checkpoint["channel_values"]["step"] == t.metadata["step"] for t in listed)
    assert all(len(t.checkpoint["channel_values"]["doc"]) == 40_000 for t in listed)


def test_compressible_values_are_stored_deflated_and_read_back_by_any_saver(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a 20 KB text channel and a 5 KB text write (prose-like, compressible), stored
    # once with the default options and once with compression off
    text = " ".join(f"the agent read row {i} of the report and wrote a note" for i in range(400))
    sizes: dict[str, int] = {}
    for name, writer in (("on", _fresh(saver)), ("off", _fresh(saver, compress_min_bytes=None))):
        thread_id = f"t-zip-{name}"
        checkpoint_id = _put(writer, thread_id, {"doc": text[:20_000], "n": 1})
        writer.put_writes(_config(thread_id, checkpoint_id), [("note", text[:5_000])], "task-1")
        items = writer.client.query(
            TableName=writer.table_name,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": thread_id}},
        )["Items"]
        sizes[name] = sum(len(i["d"]["B"]) for i in items)

        # WHEN fresh savers with either setting read the thread back
        for reader in (_fresh(saver), _fresh(saver, compress_min_bytes=None)):
            tup = reader.get_tuple(_config(thread_id))

            # THEN the values are exactly what was stored, whatever wrote them
            assert tup is not None
            assert tup.checkpoint["channel_values"] == {"doc": text[:20_000], "n": 1}
            assert tup.pending_writes == [("task-1", "note", text[:5_000])]

    # AND the compressed items are a fraction of the raw ones
    assert sizes["off"] > 25_000
    assert sizes["on"] * 4 < sizes["off"]


def test_incompressible_values_and_task_ids_are_stored_as_they_are(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a random (incompressible) 2 KB write from a LangGraph-style uuid task and a
    # write from a task whose id is not a canonical uuid
    checkpoint_id = _put(saver, "t-raw", {"n": 1})
    task_uuid = str(uuid.uuid4())
    odd_task = str(uuid.uuid4()).upper()
    noise = os.urandom(2048)
    saver.put_writes(_config("t-raw", checkpoint_id), [("blob", noise)], task_uuid)
    saver.put_writes(_config("t-raw", checkpoint_id), [("n", 2)], odd_task)

    # WHEN a fresh saver reads the checkpoint
    tup = _fresh(saver).get_tuple(_config("t-raw"))

    # THEN both task ids come back exactly, and the random bytes were not deflated (their
    # item is larger than the value itself)
    assert tup is not None
    assert sorted(tup.pending_writes or []) == sorted(
        [(task_uuid, "blob", noise), (odd_task, "n", 2)]
    )
    items = saver.client.query(
        TableName=saver.table_name,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "t-raw"}},
    )["Items"]
    assert max(len(i["d"]["B"]) for i in items) > 2048


def test_value_over_the_item_limit_round_trips_through_s3(saver: DynamoDBSaver) -> None:
    # GIVEN a 600 KB channel value and a 500 KB pending write (DynamoDB items hold 400 KB)
    huge_value, huge_write = _big(600_000), _big(500_000)
    checkpoint_id = _put(saver, "t-huge", {"huge": huge_value, "small": 1})
    saver.put_writes(_config("t-huge", checkpoint_id), [("huge", huge_write)], "task-1")

    # WHEN a fresh saver reads it back
    tup = _fresh(saver).get_tuple(_config("t-huge"))

    # THEN both round-trip, and they were stored in S3
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {"huge": huge_value, "small": 1}
    assert tup.pending_writes == [("task-1", "huge", huge_write)]
    assert len(_objects(saver)) == 2


def test_delete_thread_removes_its_s3_objects(saver: DynamoDBSaver) -> None:
    # GIVEN two threads with values offloaded to S3
    _put(saver, "t-gone", {"huge": _big(500_000)})
    _put(saver, "t-kept", {"huge": _big(500_000)})

    # WHEN one thread is deleted
    saver.delete_thread("t-gone")

    # THEN its objects are gone and the other thread's remain
    assert saver.get_tuple(_config("t-gone")) is None
    remaining = _objects(saver)
    assert len(remaining) == 1
    assert remaining[0].startswith("t-kept/")


def test_value_over_the_item_limit_without_a_bucket_says_what_to_do(
    make_saver: SaverFactory,
) -> None:
    # GIVEN a saver with no bucket
    saver = make_saver(bucket=False)

    # WHEN a value too large for an item is stored
    # THEN the error names the missing setting
    with pytest.raises(CheckpointBucketMissingError, match="bucket_name"):
        _put(saver, "t-nobucket", {"huge": _big(500_000)})


def test_a_channel_keeping_its_version_without_a_value_holds_the_parents_value(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a checkpoint whose "notes" hold a value at version 1, and a child put by another
    # saver (a fork, update_state) that keeps notes at version 1 without giving its value,
    # as LangGraph does for a DeltaChannel between snapshots; the same on InMemorySaver
    memory = InMemorySaver()
    children = []
    for writer in (saver, memory):
        parent = _put(writer, "t-kept", {"notes": ["n" * 700], "n": 1})
        reader = _fresh(saver) if writer is saver else memory
        children.append(
            _put(
                reader,
                "t-kept",
                {"n": 2},
                parent=parent,
                step=1,
                new=["n"],
                versions={"notes": 1, "n": 2},
            )
        )

    # WHEN the child is read back
    ours = _fresh(saver).get_tuple(_config("t-kept", children[0]))
    theirs = memory.get_tuple(_config("t-kept", children[1]))

    # THEN it holds notes at version 1, as InMemorySaver (and LangGraph's savers) give it
    assert ours is not None
    assert theirs is not None
    assert theirs.checkpoint["channel_values"] == {"notes": ["n" * 700], "n": 2}
    assert ours.checkpoint["channel_values"] == theirs.checkpoint["channel_values"]


# ------------------------------------------------------------------------- list


def test_list_filter_before_and_limit_match_in_memory(saver: DynamoDBSaver) -> None:
    # GIVEN the same stepwise chat run on both savers
    memory = InMemorySaver()
    memory_config = graphs.run_stepwise(lambda: graphs.chat_graph(memory), graphs.chat_input())
    our_config = graphs.run_stepwise(lambda: graphs.chat_graph(_fresh(saver)), graphs.chat_input())
    ours, theirs = _fresh(saver), memory

    def listed(s: Any, config: dict[str, Any], **kw: Any) -> list[tuple[Any, ...]]:
        return [
            (t.metadata["step"], t.metadata["source"], t.checkpoint["channel_values"])
            for t in s.list(config, **kw)
        ]

    our_all = list(ours.list(our_config))
    their_all = list(theirs.list(memory_config))
    before_ours = {
        "configurable": {**our_config["configurable"], **our_all[5].config["configurable"]}
    }
    before_theirs = {
        "configurable": {**memory_config["configurable"], **their_all[5].config["configurable"]}
    }

    # WHEN listing with a metadata filter, a cursor and a limit
    # THEN both savers give the same checkpoints, newest first
    assert listed(ours, our_config) == listed(theirs, memory_config)
    assert len(our_all) > 10
    assert listed(ours, our_config, filter={"source": "loop", "step": 4}) == listed(
        theirs, memory_config, filter={"source": "loop", "step": 4}
    )
    assert listed(ours, our_config, filter={"source": "input"}) == listed(
        theirs, memory_config, filter={"source": "input"}
    )
    assert listed(ours, our_config, before=before_ours, limit=3) == listed(
        theirs, memory_config, before=before_theirs, limit=3
    )
    assert len(listed(ours, our_config, before=before_ours, limit=3)) == 3
    assert listed(ours, our_config, limit=2) == listed(theirs, memory_config, limit=2)


# ------------------------------------------------------------------- write cost


def test_checkpoint_items_do_not_grow_with_an_append_only_list(saver: DynamoDBSaver) -> None:
    # GIVEN a graph that appends a 1 KB message per superstep, run one step per invocation
    config = graphs.run_stepwise(lambda: _appender(_fresh(saver), steps=40), {"messages": []})

    # WHEN the stored items are inspected
    items = saver.client.scan(TableName=saver.table_name)["Items"]
    checkpoints = sorted(
        (i["sk"]["S"], len(i["d"]["B"])) for i in items if i["sk"]["S"].count("\x1f") == 1
    )
    sizes = [size for _, size in checkpoints]

    # THEN late checkpoint items are as small as early ones although the list is 40 KB:
    # each stores what changed, and the appended message is the task's write it references
    state = _appender(_fresh(saver), steps=40).get_state(config)
    assert len(state.values["messages"]) == 40
    assert max(sizes[5:]) < 600
    assert max(sizes[-5:]) - min(sizes[5:10]) < 64


def test_reads_stay_bounded_when_a_large_value_changes_every_step(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a 30 KB value replaced at each of 40 checkpoints (1.2 MB of history)
    writer = _fresh(saver)
    parent = None
    for step in range(40):
        writer.get_tuple(_config("t-churn"))
        parent = _put(writer, "t-churn", {"doc": _big(30_000), "n": step}, parent=parent, step=step)
    read_bytes: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        read_bytes.append(sum(len(i["d"]["B"]) for i in parsed.get("Items", [])))

    writer.client.meta.events.register("after-call.dynamodb.Query", count)

    # WHEN the saver that wrote it (a warm worker) reads the latest checkpoint
    tup = writer.get_tuple(_config("t-churn"))
    writer.client.meta.events.unregister("after-call.dynamodb.Query", count)

    # THEN it reads the live value and a bounded window, not the whole history (compaction
    # moved the window up; a cold saver's first page is bounded by read_items instead)
    assert tup is not None
    assert tup.checkpoint["channel_values"]["n"] == 39
    assert sum(read_bytes) < 200_000


# ---------------------------------------------------------------- maintenance


def test_copy_thread_copies_s3_values_so_the_copy_outlives_the_source(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a thread holding an offloaded value
    huge = _big(500_000)
    _put(saver, "t-src", {"huge": huge})

    # WHEN it is copied and the source deleted
    saver.copy_thread("t-src", "t-dst")
    saver.delete_thread("t-src")

    # THEN the copy still reads in full
    tup = _fresh(saver).get_tuple(_config("t-dst"))
    assert tup is not None
    assert tup.checkpoint["channel_values"]["huge"] == huge


def test_prune_keeps_the_latest_checkpoint_readable_when_built_from_deltas(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a thread whose latest state is rebuilt from earlier items
    config = graphs.run_stepwise(
        lambda: _appender(_fresh(saver), steps=8), {"messages": ["p" * 1000]}
    )
    before = _fresh(saver).get_tuple(config)

    # WHEN everything but the latest checkpoint is pruned
    saver.prune([config["configurable"]["thread_id"]], strategy="keep_latest")

    # THEN the latest checkpoint alone reads the same
    reader = _fresh(saver)
    after = reader.get_tuple(config)
    assert before is not None
    assert after is not None
    assert after.checkpoint["channel_values"] == before.checkpoint["channel_values"]
    assert len(after.checkpoint["channel_values"]["messages"]) == 8
    assert len(list(reader.list(config))) == 1


def test_delete_for_runs_keeps_later_runs_readable(saver: DynamoDBSaver) -> None:
    # GIVEN two runs on one thread, the second one's state built from the first one's items
    writer = _fresh(saver)
    first = _put(writer, "t-runs", {"log": ["a" * 300]}, run_id="run-1")
    second = _put(
        writer,
        "t-runs",
        {"log": ["a" * 300, "b" * 300]},
        parent=first,
        step=1,
        run_id="run-2",
    )

    # WHEN the first run is deleted
    saver.delete_for_runs(["run-1"])

    # THEN the second run's checkpoint still reads in full
    tup = _fresh(saver).get_tuple(_config("t-runs"))
    assert tup is not None
    assert tup.config["configurable"]["checkpoint_id"] == second
    assert tup.checkpoint["channel_values"] == {"log": ["a" * 300, "b" * 300]}
    assert _fresh(saver).get_tuple(_config("t-runs", first)) is None


# ------------------------------------------------------------------------- ttl


def test_expired_items_are_not_returned(make_saver: SaverFactory) -> None:
    # GIVEN a checkpoint whose ttl has passed but that DynamoDB has not deleted yet
    saver = make_saver(ttl_seconds=60)
    _put(saver, "t-expired", {"a": 1})
    item = saver.client.scan(TableName=saver.table_name)["Items"][0]
    item["ttl"] = {"N": str(int(time.time()) - 10)}
    saver.client.put_item(TableName=saver.table_name, Item=item)

    # WHEN it is read
    # THEN it is treated as gone
    assert _fresh(saver).get_tuple(_config("t-expired")) is None


# ----------------------------------------------------------------------- errors


def test_missing_table_says_to_run_setup_or_deploy(make_saver: SaverFactory) -> None:
    # GIVEN a saver whose table was never created
    saver = make_saver(setup=False)

    # WHEN it is used
    # THEN the error names the table and says what to do
    with pytest.raises(CheckpointTableMissingError, match=r"setup\(\).*deploy"):
        saver.get_tuple(_config("t-any"))
    with pytest.raises(CheckpointTableMissingError, match=saver.table_name):
        _put(saver, "t-any", {"a": 1})


def test_unreadable_item_names_the_thread_and_checkpoint(saver: DynamoDBSaver) -> None:
    # GIVEN a checkpoint item whose data was damaged
    checkpoint_id = _put(saver, "t-broken", {"a": 1})
    saver.client.put_item(
        TableName=saver.table_name,
        Item={"pk": {"S": "t-broken"}, "sk": {"S": f"\x1f{checkpoint_id}"}, "d": {"B": b"\xc1"}},
    )

    # WHEN it is read
    # THEN the error says which thread and checkpoint could not be read
    with pytest.raises(CheckpointDecodeError, match=f"{checkpoint_id}.*t-broken"):
        _fresh(saver).get_tuple(_config("t-broken"))


def test_setup_is_idempotent_and_creates_what_is_missing(moto_endpoint: str) -> None:
    # GIVEN names of a table and a bucket that do not exist yet
    suffix = uuid.uuid4().hex[:8]
    saver = DynamoDBSaver(
        f"setup-{suffix}", bucket_name=f"setup-{suffix}", endpoint_url=moto_endpoint
    )

    # WHEN setup runs twice
    saver.setup()
    saver.setup()

    # THEN the table has the shared key schema and the bucket exists
    table = saver.client.describe_table(TableName=f"setup-{suffix}")["Table"]
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
        "pk": "HASH",
        "sk": "RANGE",
    }
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    assert s3.head_bucket(Bucket=f"setup-{suffix}")["ResponseMetadata"]["HTTPStatusCode"] == 200


async def test_async_methods_round_trip(saver: DynamoDBSaver) -> None:
    # GIVEN a checkpoint stored through the async API
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"a": [1, 2]}
    checkpoint["channel_versions"] = {"a": 1}
    stored = await saver.aput(_config("t-async"), checkpoint, {"step": 0}, {"a": 1})
    await saver.aput_writes(stored, [("a", [3])], "task-1")

    # WHEN it is read through the async API
    tup = await _fresh(saver).aget_tuple(_config("t-async"))
    listed = [t async for t in saver.alist(_config("t-async"))]

    # THEN it is all there
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {"a": [1, 2]}
    assert tup.pending_writes == [("task-1", "a", [3])]
    assert len(listed) == 1


def test_graph_input_is_kept_beside_the_read_window_and_survives_copy(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a run whose 5 KB input is stored beside the namespace's read window
    config = graphs.run_stepwise(
        lambda: _appender(_fresh(saver), steps=3), {"messages": ["i" * 5000]}
    )
    thread_id = config["configurable"]["thread_id"]
    saver.copy_thread(thread_id, f"{thread_id}-copy")
    read_bytes: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        read_bytes.append(sum(len(i["d"]["B"]) for i in parsed.get("Items", [])))

    reader = _fresh(saver)
    reader.client.meta.events.register("after-call.dynamodb.Query", count)

    # WHEN the latest checkpoint is read, then the input checkpoint of the copy
    latest = reader.get_tuple(config)
    reader.client.meta.events.unregister("after-call.dynamodb.Query", count)
    copied = list(reader.list({"configurable": {"thread_id": f"{thread_id}-copy"}}))
    first = next(t for t in copied if t.metadata["source"] == "input")

    # THEN the latest read carries the input once (in the input task's writes), and the
    # input checkpoint still holds the whole input
    assert latest is not None
    assert len(latest.checkpoint["channel_values"]["messages"]) == 3
    assert sum(read_bytes) < 2 * 5000
    assert first.checkpoint["channel_values"]["__start__"] == {"messages": ["i" * 5000]}


def test_a_cold_read_of_a_window_larger_than_its_first_page_takes_two_queries(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a 30-step loop (about 60 items in the read window) and a fresh saver whose first
    # page holds only 16 items
    config = graphs.run_stepwise(lambda: _appender(_fresh(saver), steps=30), {"messages": []})
    reader = _fresh(saver, read_items=16)
    queries: list[int] = []
    reader.client.meta.events.register(
        "after-call.dynamodb.Query", lambda parsed, **_: queries.append(len(parsed["Items"]))
    )

    # WHEN it loads the latest checkpoint
    tup = reader.get_tuple(config)

    # THEN it finds the window's base among the newest items (the base is stored every few
    # records) and reads the rest in one more Query, not one Query per older step
    assert tup is not None
    assert len(tup.checkpoint["channel_values"]["messages"]) == 30
    assert len(queries) == 2
