"""GIVEN a LangGraph project's langgraph.json THEN its graphs join the registry as they are,
with the platform's checkpointer attached, and every mistake is named (graphs/project.py)."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs import registry
from graphs.project import (
    ProjectConfigError,
    build_graph,
    find_project,
    load_attribute,
    read_project,
)

SAMPLE = Path(__file__).resolve().parents[1] / "sample_project"

# A two-node counter, as a LangGraph user writes it; the entry kinds differ only in the last lines.
COUNTER = """
    import operator
    from typing import Annotated, TypedDict

    from langgraph.graph import END, START, StateGraph


    class State(TypedDict):
        count: Annotated[int, operator.add]


    def one(state: State) -> dict:
        return {"count": 1}


    def two(state: State) -> dict:
        return {"count": 10}


    builder = StateGraph(State)
    builder.add_node("one", one)
    builder.add_node("two", two)
    builder.add_edge(START, "one")
    builder.add_edge("one", "two")
    builder.add_edge("two", END)
"""

KINDS = {
    "compiled graph": "graph = builder.compile()",
    "builder": "graph = builder",
    "factory with config": (
        "def graph(config):\n"
        "    assert config['configurable']['graph_id'] == 'counter'\n"
        "    return builder.compile()"
    ),
    "factory without arguments": "def graph():\n    return builder",
    "async factory": "async def graph(config):\n    return builder.compile()",
}


def _project(root: Path, graphs: dict[str, Any], code: str = "", **extra: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "agent.py").write_text(textwrap.dedent(COUNTER) + "\n" + code + "\n")
    config = root / "langgraph.json"
    config.write_text(json.dumps({"dependencies": ["."], "graphs": graphs, **extra}))
    return config


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """The registry, environment and ``sys.path`` as this test found them, whatever project
    the test registers (registering one sets its ``env`` and extends ``sys.path``)."""
    before = registry.current_project()
    environ, path = dict(os.environ), list(sys.path)
    yield
    registry.use_project(before)
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_entry_kind_runs_with_the_platforms_checkpointer(tmp_path: Path, kind: str) -> None:
    # GIVEN a project whose entry is a compiled graph, a builder or a (sync/async) factory
    config = _project(tmp_path, {"counter": "./agent.py:graph"}, KINDS[kind])
    entry = read_project(config).entry("counter")
    saver = InMemorySaver()
    # WHEN the platform builds it with its checkpointer
    graph = build_graph(entry, saver)
    # THEN it is compiled, named after its id, and checkpoints to that saver
    thread = {"configurable": {"thread_id": "t1"}}
    assert graph.invoke({"count": 0}, thread) == {"count": 11}
    assert graph.checkpointer is saver
    assert graph.name == "counter"
    assert graph.get_state(thread).values == {"count": 11}
    assert saver.get_tuple(thread) is not None


async def test_an_async_factory_is_built_from_inside_an_event_loop(tmp_path: Path) -> None:
    # GIVEN an async factory and a caller that already runs an event loop
    config = _project(tmp_path, {"counter": "./agent.py:graph"}, KINDS["async factory"])
    # WHEN the graph is built there
    graph = build_graph(read_project(config).entry("counter"), InMemorySaver())
    # THEN the factory ran on a loop of its own
    assert (await graph.ainvoke({"count": 0}, {"configurable": {"thread_id": "t"}})) == {
        "count": 11
    }


def test_the_users_compiled_graph_is_left_as_it_was(tmp_path: Path) -> None:
    # GIVEN a compiled graph without checkpointer in the project's module
    config = _project(tmp_path, {"counter": "./agent.py:graph"}, KINDS["compiled graph"])
    entry = read_project(config).entry("counter")
    graph = build_graph(entry, InMemorySaver())
    # THEN the checkpointer is set on a copy: the module's own object is unchanged
    assert load_attribute(entry).checkpointer is None
    assert graph.checkpointer is not None


def test_the_sample_project_registers_lazily_and_its_graph_runs(clean_registry: None) -> None:
    # GIVEN the sample project (its own langgraph.json, .env and sibling module)
    project = read_project(SAMPLE / "langgraph.json")
    # WHEN it is registered
    registry.use_project(project)
    # THEN its graph id is an assistant id beside the built-in ones, with nothing imported yet
    assert registry.graph_ids()[:2] == ["support", "research"]
    assert "echo" in registry.graph_ids()
    graph = registry.get_factory("echo")(InMemorySaver(), None)
    # AND it runs to its interrupt and resumes from the checkpoint
    thread = {"configurable": {"thread_id": "t"}}
    first = graph.invoke({"messages": [{"role": "user", "content": "hi"}]}, thread)
    assert first["messages"][-1].content == "echo: hi"
    assert first["__interrupt__"][0].value["question"] == "Send this echo?"
    final = graph.invoke(Command(resume={"approved": True}), thread)
    assert final["count"] == 2
    assert final["approved"] is True


def test_registering_another_project_replaces_the_first(
    tmp_path: Path, clean_registry: None
) -> None:
    # GIVEN one project registered
    registry.use_project(read_project(_project(tmp_path / "a", {"first": "./agent.py:builder"})))
    # WHEN another is
    registry.use_project(read_project(_project(tmp_path / "b", {"second": "./agent.py:builder"})))
    # THEN only the second one's graphs are there
    assert "first" not in registry.graph_ids()
    assert "second" in registry.graph_ids()
    registry.use_project(None)
    assert registry.graph_ids() == list(registry.BUILTIN_GRAPHS)


def test_a_clash_with_a_built_in_graph_names_both(tmp_path: Path, clean_registry: None) -> None:
    config = _project(tmp_path, {"support": "./agent.py:builder"})
    with pytest.raises(ProjectConfigError) as raised:
        registry.use_project(read_project(config))
    message = str(raised.value)
    assert "graph 'support' ('./agent.py:builder')" in message
    assert "built-in graph 'support' of graphs/registry.py" in message
    assert str(config) in message
    # AND the registry is left as it was
    assert registry.get_factory("support") is registry.BUILTIN_GRAPHS["support"]


def test_env_is_applied_but_variables_already_set_win(
    tmp_path: Path, clean_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LG_TEST_FROM_PROJECT", raising=False)
    monkeypatch.setenv("LG_TEST_ALREADY_SET", "operator")
    config = _project(
        tmp_path,
        {"counter": "./agent.py:builder"},
        env={"LG_TEST_FROM_PROJECT": "project", "LG_TEST_ALREADY_SET": "project"},
    )
    registry.use_project(read_project(config))
    assert os.environ["LG_TEST_FROM_PROJECT"] == "project"
    assert os.environ["LG_TEST_ALREADY_SET"] == "operator"
    monkeypatch.delenv("LG_TEST_FROM_PROJECT")


def test_ignored_keys_are_warned_about(
    tmp_path: Path, clean_registry: None, caplog: pytest.LogCaptureFixture
) -> None:
    config = _project(
        tmp_path,
        {"counter": "./agent.py:builder"},
        store={"index": {"dims": 3}},
        http={"cors": {}},
        python_version="3.12",
    )
    with caplog.at_level(logging.WARNING, logger="graphs.project"):
        registry.use_project(read_project(config))
    warned = caplog.text
    assert "'store' is ignored" in warned
    assert "'http' is ignored" in warned
    assert "python_version" not in warned  # a Docker build setting: nothing to warn about


def test_the_project_is_found_from_the_variable_or_at_the_root(tmp_path: Path) -> None:
    config = _project(tmp_path / "p", {"counter": "./agent.py:builder"})
    assert find_project(str(config)) == config.resolve()
    assert find_project(str(config.parent)) == config.resolve()
    assert find_project("", default_root=config.parent) == config.resolve()
    assert find_project(None, default_root=tmp_path) is None
    with pytest.raises(ProjectConfigError, match=r"LAMBDAGRAPH_PROJECT=.*no such file"):
        find_project(str(tmp_path / "missing"))


def test_settings_check_the_project_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from functions.settings import Settings

    bad = tmp_path / "langgraph.json"
    bad.write_text('{"graphs": {"agent": "agent.py"}}')
    monkeypatch.setenv("LAMBDAGRAPH_PROJECT", str(bad))
    with pytest.raises(ValidationError, match="graph 'agent'"):
        Settings()


# --- what is wrong, named -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{", "not valid JSON (line 1"),
        ("[]", "must hold a JSON object"),
        ("{}", "'graphs' must be a non-empty object"),
        ('{"graphs": {}}', "'graphs' must be a non-empty object"),
        ('{"graphs": {"agent": 3}}', "graph 'agent' must be a string"),
        (
            '{"graphs": {"agent": "./agent.py"}}',
            "graph 'agent' ('./agent.py') must be '<file>.py:<attribute>'",
        ),
        ('{"graphs": {"agent": ":graph"}}', "must be '<file>.py:<attribute>'"),
        ('{"graphs": {"agent": "./gone.py:graph"}}', "gone.py does not exist"),
        ('{"graphs": {"agent": "./agent.ts:graph"}}', "lambdagraph runs Python graphs"),
        ('{"graphs": {"agent": "my_package.agent:graph"}}', "lambdagraph runs Python graphs"),
        ('{"graphs": {"agent": "./agent.py:graph"}, "env": ".env.missing"}', "'env' file"),
        ('{"graphs": {"agent": "./agent.py:graph"}, "env": 3}', "'env' must be an object"),
        (
            '{"graphs": {"agent": "./agent.py:graph"}, "dependencies": "."}',
            "'dependencies' must be a list",
        ),
        (
            '{"graphs": {"agent": "./agent.py:graph"}, "dependencies": ["./libs"]}',
            "dependency './libs'",
        ),
        (
            '{"graphs": {"agent": "./agent.py:graph"}, "auth": {"path": "./auth.py:auth"}}',
            "'auth' is not supported",
        ),
    ],
)
def test_a_malformed_langgraph_json_is_named_when_read(
    tmp_path: Path, content: str, says: str
) -> None:
    (tmp_path / "agent.py").write_text("graph = None\n")
    config = tmp_path / "langgraph.json"
    config.write_text(content)
    with pytest.raises(ProjectConfigError) as raised:
        read_project(config)
    assert says in str(raised.value)
    assert str(config) in str(raised.value)


@pytest.mark.parametrize(
    ("attr", "code", "says"),
    [
        (
            "missing",
            "graph = builder.compile()",
            "has no attribute 'missing'; its graphs: builder, graph",
        ),
        ("graph", "graph = 42", "'graph' is a int, not a graph"),
        ("graph", "class graph:\n    pass", "'graph' is a type, not a graph"),
        ("graph", "def graph(config, other):\n    return builder", "must take one argument"),
        ("graph", "def graph(config):\n    return 'nope'", "returned a str, not a compiled graph"),
        ("graph", "import not_a_module_anyone_has", "importing"),
    ],
)
def test_a_wrong_graph_is_named_when_loaded(
    tmp_path: Path, attr: str, code: str, says: str
) -> None:
    config = _project(tmp_path, {"agent": f"./agent.py:{attr}"}, code)
    entry = read_project(config).entry("agent")
    with pytest.raises(ProjectConfigError) as raised:
        build_graph(entry, InMemorySaver())
    assert says in str(raised.value)
    assert f"{config}: graph 'agent' ('./agent.py:{attr}')" in str(raised.value)


def test_check_project_imports_every_graph_eagerly(tmp_path: Path, clean_registry: None) -> None:
    # GIVEN a registered project with one good and one wrong entry (nothing imported yet)
    config = _project(tmp_path, {"good": "./agent.py:builder", "bad": "./agent.py:nope"}, "x = 1")
    registry.use_project(read_project(config))
    # WHEN the local stack checks it at start-up THEN the wrong one is named
    with pytest.raises(ProjectConfigError, match="graph 'bad'"):
        registry.check_project()


def test_two_projects_with_the_same_file_names_do_not_share_modules(tmp_path: Path) -> None:
    a = read_project(_project(tmp_path / "a", {"g": "./agent.py:graph"}, "graph = builder"))
    b = read_project(
        _project(tmp_path / "b", {"g": "./agent.py:graph"}, "def graph():\n    return builder")
    )
    assert load_attribute(a.entry("g")) is not load_attribute(b.entry("g"))
    assert callable(load_attribute(b.entry("g")))
