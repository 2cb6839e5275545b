"""A LangGraph project run as it is: ``LAMBDAGRAPH_PROJECT`` names tests/sample_project, whose
code knows nothing of lambdagraph, and the unmodified langgraph-sdk drives it (docs/projects.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from infra.local.stack import wait_until_ok
from tests.e2e.conftest import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

SAMPLE = REPO / "tests" / "sample_project"


def _stack_env(project: Path, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "LAMBDAGRAPH_PORT": str(port),
        "LAMBDAGRAPH_MOTO_PORT": "0",
        "LAMBDAGRAPH_PROJECT": str(project),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("LAMBDAGRAPH_API_KEYS", None)
    env.pop("ECHO_PREFIX", None)
    return env


@pytest.fixture(scope="module")
def project_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncLangGraphClient]:
    """``python -m infra.local`` with the sample project, as ``make run`` starts it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("project-stack") / "stack.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local"],
            cwd=REPO,
            env=_stack_env(SAMPLE, port),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ok(url, timeout_s=60)
            except TimeoutError:
                pytest.fail(f"local stack did not start; its log:\n{log_path.read_text()}")
            # api_key="" keeps the SDK from sending a LangSmith key found in the environment.
            yield get_sync_client(url=url, api_key="")
        finally:
            process.terminate()
            process.wait(30)


def test_the_projects_graph_is_an_assistant_beside_the_built_in_ones(
    project_client: SyncLangGraphClient,
) -> None:
    # WHEN the client lists the assistants
    found = {a["graph_id"]: a for a in project_client.assistants.search(limit=100)}
    # THEN the langgraph.json's graph is one, and the built-in graphs are still there
    assert {"echo", "support", "research"} <= found.keys()
    assert found["echo"]["assistant_id"] == "echo"
    # AND its graph is the project's own (nodes echo and review)
    nodes = {n["id"] for n in project_client.assistants.get_graph("echo")["nodes"]}
    assert {"echo", "review"} <= nodes


def test_a_run_of_the_projects_graph_stops_at_its_interrupt_and_resumes(
    project_client: SyncLangGraphClient,
) -> None:
    # GIVEN a thread
    thread_id = project_client.threads.create()["thread_id"]
    # WHEN a run of the project's graph waits for its end
    values = project_client.runs.wait(
        thread_id, "echo", input={"messages": [{"role": "user", "content": "hello"}]}
    )
    # THEN the first node ran, with the project's .env applied and its sibling module imported
    assert isinstance(values, dict)
    assert values["messages"][-1]["content"] == "echo: hello"
    assert values["count"] == 1
    # AND the graph's interrupt() left the thread interrupted, checkpointed by the platform
    state = project_client.threads.get_state(thread_id)
    assert state["next"] == ["review"]
    assert state["interrupts"][0]["value"]["question"] == "Send this echo?"
    assert project_client.threads.get(thread_id)["status"] == "interrupted"
    # WHEN the human's answer resumes it
    final = project_client.runs.wait(thread_id, "echo", command={"resume": {"approved": True}})
    # THEN it finishes from the checkpoint, with the state it had
    assert isinstance(final, dict)
    assert final["approved"] is True
    assert final["count"] == 2
    assert project_client.threads.get_state(thread_id)["next"] == []
    assert project_client.threads.get(thread_id)["status"] == "idle"


@pytest.mark.parametrize(
    ("langgraph_json", "says"),
    [
        ('{"graphs": {"agent": "./agent.py"}}', "must be '<file>.py:<attribute>'"),
        ('{"graphs": {"agent": "./agent.py:missing"}}', "has no attribute 'missing'"),
        ('{"graphs": {"support": "./agent.py:graph"}}', "clashes with the built-in graph"),
        ('{"graphs": {', "not valid JSON"),
    ],
)
def test_a_wrong_project_stops_the_stack_at_start_naming_the_entry(
    tmp_path: Path, langgraph_json: str, says: str
) -> None:
    # GIVEN a project whose langgraph.json is wrong
    (tmp_path / "agent.py").write_text((SAMPLE / "agent.py").read_text())
    (tmp_path / "helpers.py").write_text((SAMPLE / "helpers.py").read_text())
    (tmp_path / "langgraph.json").write_text(langgraph_json)
    # WHEN the local stack starts with it
    done = subprocess.run(
        [sys.executable, "-m", "infra.local"],
        cwd=REPO,
        env=_stack_env(tmp_path, free_port()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # THEN it exits 1 at once, saying what is wrong where
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "could not start the local stack" in output
    assert says in output
    assert str(tmp_path / "langgraph.json") in output
