"""Writes of any size are stored (through S3 when needed), and the ones that cannot be say so
as write errors: which item, which part, which limit, and what setting would store it."""

from __future__ import annotations

import operator
import os
import re
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from functions.checkpoint import (
    CheckpointBucketMissingError,
    CheckpointReadError,
    CheckpointTooLargeError,
    CheckpointWriteError,
    DynamoDBSaver,
)
from tests.checkpoint import graphs
from tests.checkpoint.conftest import SaverFactory
from tests.checkpoint.test_saver import _config, _fresh, _put

pytestmark = pytest.mark.integration


def _noise(size: int) -> str:
    return os.urandom(size // 2).hex()  # deflates to about half: still past the limit


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def _append_graph(checkpointer: Any, elements: list[str]) -> Any:
    """One node that appends ``elements[i]`` at its i-th run."""

    def append(state: Log) -> dict[str, Any]:
        return {"log": [elements[len(state["log"])]]}

    def route(state: Log) -> str:
        return END if len(state["log"]) >= len(elements) else "append"

    builder = StateGraph(Log)
    builder.add_node("append", append)
    builder.add_edge(START, "append")
    builder.add_conditional_edges("append", route, ["append", END])
    return builder.compile(checkpointer=checkpointer)


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _parallel_chat(checkpointer: Any, contents: dict[str, str], as_dicts: bool) -> Any:
    """Two branches, each appending one large message in the same superstep."""
    builder = StateGraph(Chat)
    for name, content in contents.items():

        def reply(state: Chat, name: str = name, content: str = content) -> dict[str, Any]:
            if as_dicts:
                return {"messages": [{"role": "assistant", "content": content, "id": name}]}
            return {"messages": [AIMessage(content=content, id=name)]}

        builder.add_node(name, reply)
        builder.add_edge(START, name)
        builder.add_edge(name, END)
    return builder.compile(checkpointer=checkpointer)


def _same_as_in_memory(build: Any, inputs: dict[str, Any], saver: DynamoDBSaver) -> None:
    memory = InMemorySaver()
    memory_config = graphs.run_stepwise(lambda: build(memory), inputs)
    our_config = graphs.run_stepwise(lambda: build(_fresh(saver)), inputs)
    ours = build(_fresh(saver))
    theirs = build(memory)
    assert ours.get_state(our_config).values == theirs.get_state(memory_config).values
    assert graphs.history(ours, our_config) == graphs.history(theirs, memory_config)


@pytest.mark.parametrize("compress", [512, None], ids=["compressed", "raw"])
def test_a_node_appending_one_400_kb_element_is_stored_and_read_back(
    make_saver: SaverFactory, compress: int | None
) -> None:
    # GIVEN a list grown by a 1 KB element, then one of 800 KB (its write goes to S3), then
    # one more small one, each superstep run by a fresh saver
    saver = make_saver(compress_min_bytes=compress)
    elements = ["a" * 1000, _noise(800_000), "c"]

    # WHEN the graph runs to the end
    # THEN no write fails, and state and history are InMemorySaver's
    _same_as_in_memory(lambda s: _append_graph(s, elements), {"log": []}, saver)


@pytest.mark.parametrize("as_dicts", [False, True], ids=["messages", "dicts"])
def test_two_parallel_200_kb_message_appends_are_stored_and_read_back(
    make_saver: SaverFactory, as_dicts: bool
) -> None:
    # GIVEN two branches that each append a 210 KB message (given as message objects, or as
    # dicts that add_messages turns into messages) in the same superstep, uncompressed
    saver = make_saver(compress_min_bytes=None)
    contents = {"left": _noise(210_000), "right": _noise(210_000)}

    # WHEN the graph runs
    # THEN both appends are stored, and state and history are InMemorySaver's
    _same_as_in_memory(lambda s: _parallel_chat(s, contents, as_dicts), {"messages": []}, saver)


def test_without_a_bucket_a_too_large_write_is_a_write_error_naming_the_limit(
    make_saver: SaverFactory,
) -> None:
    # GIVEN a saver without a payload bucket, and a node appending a 500 KB element
    saver = make_saver(bucket=False, compress_min_bytes=None)
    graph = _append_graph(saver, [_noise(500_000)])

    # WHEN the graph runs
    with pytest.raises(CheckpointTooLargeError) as raised:
        graph.invoke({"log": []}, {"configurable": {"thread_id": "t-no-bucket"}})

    # THEN the error is a write error (not a read error) naming the task's writes, the
    # size, DynamoDB's limit and the setting that would store it
    error = raised.value
    assert isinstance(error, CheckpointWriteError)
    assert isinstance(error, CheckpointBucketMissingError)
    assert not isinstance(error, CheckpointReadError)
    message = str(error)
    assert message.startswith("cannot write the writes of task")
    assert re.search(r"is 500,0\d\d bytes", message)  # the serialized value
    assert "400 KB" in message
    assert "LAMBDAGRAPH_PAYLOAD_BUCKET" in message


def test_without_a_bucket_a_too_large_checkpoint_value_names_the_channel(
    make_saver: SaverFactory,
) -> None:
    # GIVEN a saver without a payload bucket
    saver = make_saver(bucket=False, compress_min_bytes=None)

    # WHEN a checkpoint holding a 600 KB value is stored
    # THEN the write error names the checkpoint and the channel
    with pytest.raises(CheckpointTooLargeError, match=r"cannot write checkpoint .*'huge'.*400 KB"):
        _put(saver, "t-no-bucket-value", {"huge": _noise(600_000)})


def test_metadata_too_large_for_an_item_is_a_write_error(saver: DynamoDBSaver) -> None:
    # GIVEN checkpoint metadata of 500 KB (values can go to S3, metadata cannot)
    # WHEN the checkpoint is stored
    # THEN the write error says the item is too large and why, before DynamoDB refuses it
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*metadata"):
        _put(saver, "t-big-metadata", {"a": 1}, note=_noise(500_000))


def test_a_rerun_task_cannot_replace_a_large_write_others_rely_on(saver: DynamoDBSaver) -> None:
    # GIVEN a task's 500 KB write (stored in S3) to a checkpoint
    checkpoint_id = _put(saver, "t-rerun", {"a": 1})
    first, second = _noise(500_000), _noise(500_000)
    saver.put_writes(_config("t-rerun", checkpoint_id), [("doc", first)], "task-1")

    # WHEN the same task runs again (a retry) and writes another value at the same index
    saver.put_writes(_config("t-rerun", checkpoint_id), [("doc", second)], "task-1")

    # THEN the first write stays what is read back, its S3 object included
    tup = _fresh(saver).get_tuple(_config("t-rerun"))
    assert tup is not None
    assert tup.pending_writes == [("task-1", "doc", first)]
