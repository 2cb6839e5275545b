"""delete_for_runs in the middle of a loop whose records are stored as repeated diffs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from functions.checkpoint import DynamoDBSaver
from tests.checkpoint.test_saver import _appender, _fresh

pytestmark = pytest.mark.integration


def _snapshot(saver: DynamoDBSaver, thread_id: str) -> dict[str, Any]:
    config: Any = {"configurable": {"thread_id": thread_id}}
    return {
        t.config["configurable"]["checkpoint_id"]: (
            t.checkpoint["channel_values"],
            t.checkpoint["versions_seen"],
            t.metadata.get("step"),
            t.metadata.get("run_id"),
        )
        for t in _fresh(saver).list(config)
    }


def test_deleting_one_run_of_a_loop_keeps_every_other_checkpoint_identical(
    saver: DynamoDBSaver,
) -> None:
    # GIVEN a loop run one superstep per invocation, three invocations per run id
    thread_id = f"t-loop-runs-{uuid.uuid4().hex[:6]}"
    inputs: Any = {"messages": []}
    for step in range(12):
        config: Any = {
            "configurable": {"thread_id": thread_id},
            "metadata": {"run_id": f"run-{step // 3}"},
        }
        for _chunk in _appender(_fresh(saver), steps=12, size=50).stream(
            inputs, config, interrupt_after="*"
        ):
            pass
        inputs = None
    before = _snapshot(saver, thread_id)
    doomed = {v[2] for v in before.values() if v[3] == "run-1"}
    assert len(doomed) >= 3

    # WHEN the middle run is deleted
    saver.delete_for_runs(["run-1"])

    # THEN its checkpoints are gone and every other one reads exactly as before
    after = _snapshot(saver, thread_id)
    assert {v[2] for v in after.values()} == {v[2] for v in before.values()} - doomed
    assert after == {cid: before[cid] for cid in after}
