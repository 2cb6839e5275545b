"""GIVEN a graph of a LangGraph project (graphs/project.py) on the run path on moto, as the
Lambda functions run it (no local stack to import it at start-up)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from graphs import registry
from graphs.project import read_project
from tests.integration.conftest import Stack

pytestmark = [pytest.mark.integration]


@pytest.fixture
def broken_project(tmp_path: Path) -> Iterator[Path]:
    """A registered project whose entry names an attribute its file lacks."""
    (tmp_path / "agent.py").write_text("x = 1\n")
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {"broken": "./agent.py:graph"}}))
    before = registry.current_project()
    registry.use_project(read_project(config))
    yield config
    registry.use_project(before)


def test_a_run_of_a_wrong_project_graph_ends_error_naming_the_entry(
    stack: Stack, broken_project: Path
) -> None:
    # GIVEN a thread and a run of the broken graph (the file was checked, not imported)
    thread_id = stack.create_thread()
    run = stack.start_run(thread_id, assistant_id="broken", input={})
    # WHEN the step worker takes it
    stack.pump()
    # THEN the run ends error, and its error says which entry is wrong and how
    got = stack.api("GET", f"/threads/{thread_id}/runs/{run['run_id']}").body
    assert got["status"] == "error"
    assert f"{broken_project}: graph 'broken' ('./agent.py:graph')" in got["error"]
    assert "has no attribute 'graph'" in got["error"]
    # AND at the first attempt: retrying cannot mend the project
    record = stack.store.get_run(thread_id, run["run_id"])
    assert record is not None
    assert record.claims == 1
