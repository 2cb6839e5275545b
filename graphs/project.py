"""A LangGraph project's ``langgraph.json``: its graphs join the registry, unchanged.

The file is the LangGraph CLI's (``langgraph dev`` / ``langgraph build``)::

    {"dependencies": ["."], "graphs": {"agent": "./my_agent/agent.py:graph"}, "env": ".env"}

Each graph names a Python file (relative to the ``langgraph.json``'s directory) and an
attribute in it: a compiled graph, a builder (``StateGraph``), or a factory taking a
``RunnableConfig`` (or nothing), sync or async, that returns either. As the official server
does, the platform attaches the checkpointer: a compiled graph gets it on a copy, a builder is
compiled with it. The project's code never imports lambdagraph.

Reading the file (:func:`read_project`) checks its shape and that the files exist, cheaply
and at start-up; importing a graph's module waits until that graph is first needed
(:func:`graph_factory`), so a cold start pays only for the graphs it runs. Errors are
:class:`ProjectConfigError` naming the file, the entry and what is wrong (docs/projects.md).

No AWS here and nothing of ``functions``: this module is imported by the registry, the
Lambda bundler (``infra.bundling``) and the local stack alike.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ENV = "LAMBDAGRAPH_PROJECT"
CONFIG_NAME = "langgraph.json"
# The checkout's root (and /var/task in the Lambda bundle, where infra.bundling writes the
# project's langgraph.json): where a langgraph.json is looked for when PROJECT_ENV is unset.
DEFAULT_ROOT = Path(__file__).resolve().parent.parent

# Keys of the CLI's format that shape a Docker image (lambdagraph builds no image): ignored.
BUILD_KEYS = frozenset(
    {
        "python_version",
        "node_version",
        "pip_config_file",
        "pip_installer",
        "keep_pkg_tools",
        "dockerfile_lines",
        "base_image",
        "image_distro",
        "api_version",
        "$schema",
    }
)
# Keys that configure the official server's own parts, which lambdagraph replaces by its own
# (docs/projects.md): ignored with a warning, so nobody believes they took effect.
IGNORED_KEYS = frozenset({"store", "http", "checkpointer", "ui", "ui_config", "webhooks"})
# Keys that must not be dropped silently: ``auth`` is a custom authentication handler, and
# serving the project without it would open what its author meant to protect.
REFUSED_KEYS = frozenset({"auth", "encryption"})
KNOWN_KEYS = frozenset({"graphs", "env", "dependencies"}) | BUILD_KEYS | IGNORED_KEYS

GraphFactory = Callable[[Any, Any], Any]


class ProjectConfigError(ValueError):
    """A langgraph.json (or a graph it names) cannot be used; the message says what to fix.

    A ValueError, as the local stack's other configuration errors: ``make run`` prints it and
    exits 1 instead of serving a registry with a hole in it.
    """


@dataclass(frozen=True)
class GraphEntry:
    """One ``graphs`` entry: ``graph_id`` -> ``path:attr``."""

    graph_id: str
    spec: str
    path: Path
    attr: str
    config_path: Path
    description: str | None = None

    @property
    def label(self) -> str:
        return f"graph {self.graph_id!r} ({self.spec!r})"

    @property
    def where(self) -> str:
        """The langgraph.json and the entry, for errors found when the graph is loaded."""
        return f"{self.config_path}: {self.label}"


@dataclass(frozen=True)
class Project:
    """A parsed langgraph.json; paths resolved against its directory."""

    config_path: Path
    graphs: tuple[GraphEntry, ...]
    # The ``env`` key: a mapping, or a .env file (resolved path); None when absent.
    env: dict[str, str] | Path | None = None
    # ``dependencies``: pip requirement strings, and local paths (resolved).
    pip_dependencies: tuple[str, ...] = ()
    path_dependencies: tuple[Path, ...] = ()
    ignored_keys: tuple[str, ...] = field(default=())

    @property
    def root(self) -> Path:
        return self.config_path.parent

    def entry(self, graph_id: str) -> GraphEntry:
        for entry in self.graphs:
            if entry.graph_id == graph_id:
                return entry
        raise KeyError(graph_id)


def find_project(explicit: str | None, default_root: Path = DEFAULT_ROOT) -> Path | None:
    """The langgraph.json to use: ``explicit`` (a file or its directory), else one at
    ``default_root``, else None (built-in graphs only)."""
    if explicit and explicit.strip():
        path = Path(explicit.strip()).expanduser()
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise ProjectConfigError(
                f"{PROJECT_ENV}={explicit}: no such file {path}; point it at a "
                f"{CONFIG_NAME} or the directory holding one, or unset it."
            )
        return path.resolve()
    default = default_root / CONFIG_NAME
    return default.resolve() if default.is_file() else None


def read_project(config_path: Path) -> Project:
    """Parse and check ``config_path`` without importing any graph (cheap: JSON and stat)."""
    try:
        raw = json.loads(config_path.read_text())
    except OSError as exc:
        raise ProjectConfigError(f"{config_path}: cannot be read ({exc}).") from exc
    except json.JSONDecodeError as exc:
        raise ProjectConfigError(
            f"{config_path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc
    if not isinstance(raw, dict):
        raise ProjectConfigError(f"{config_path}: must hold a JSON object with a 'graphs' key.")
    refused = sorted(REFUSED_KEYS & raw.keys())
    if refused:
        raise ProjectConfigError(
            f"{config_path}: {', '.join(map(repr, refused))} is not supported by lambdagraph "
            "and will not be ignored (the API would be served without it). Remove it and use "
            "lambdagraph's API keys (LAMBDAGRAPH_API_KEYS locally, docs/projects.md)."
        )
    graphs = _read_graphs(config_path, raw.get("graphs"))
    env = _read_env(config_path, raw.get("env"))
    pip_deps, path_deps = _read_dependencies(config_path, raw.get("dependencies", []))
    ignored = sorted(k for k in raw if k in IGNORED_KEYS or k not in KNOWN_KEYS)
    return Project(
        config_path=config_path,
        graphs=graphs,
        env=env,
        pip_dependencies=pip_deps,
        path_dependencies=path_deps,
        ignored_keys=tuple(ignored),
    )


def _read_graphs(config_path: Path, graphs: Any) -> tuple[GraphEntry, ...]:
    if not isinstance(graphs, dict) or not graphs:
        raise ProjectConfigError(
            f"{config_path}: 'graphs' must be a non-empty object of graph id -> "
            '"./path/to/file.py:attribute".'
        )
    entries = []
    for graph_id, value in graphs.items():
        description = None
        if isinstance(value, dict):
            description = value.get("description")
            value = value.get("path")
        if not graph_id.strip() or not isinstance(value, str):
            raise ProjectConfigError(
                f"{config_path}: graph {graph_id!r} must be a string "
                '"./path/to/file.py:attribute" (or an object with such a "path").'
            )
        file_part, sep, attr = value.rpartition(":")
        label = f"graph {graph_id!r} ({value!r})"
        if not sep or not file_part or not attr.isidentifier():
            raise ProjectConfigError(
                f"{config_path}: {label} must be '<file>.py:<attribute>', e.g. "
                "'./agent.py:graph' (the attribute after the last ':')."
            )
        path = (config_path.parent / file_part).resolve()
        if path.suffix != ".py":
            raise ProjectConfigError(
                f"{config_path}: {label}: lambdagraph runs Python graphs, named by their "
                "file ('./agent.py:graph'); not JavaScript graphs or module names."
            )
        if not path.is_file():
            raise ProjectConfigError(
                f"{config_path}: {label}: file {path} does not exist (paths are relative "
                f"to the directory of {CONFIG_NAME})."
            )
        entries.append(GraphEntry(graph_id, value, path, attr, config_path, description))
    return tuple(entries)


def _read_env(config_path: Path, env: Any) -> dict[str, str] | Path | None:
    if env is None:
        return None
    if isinstance(env, dict):
        if not all(isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()):
            raise ProjectConfigError(f"{config_path}: 'env' must map names to string values.")
        return {k: str(v) for k, v in env.items()}
    if isinstance(env, str):
        path = (config_path.parent / env).resolve()
        if not path.is_file():
            raise ProjectConfigError(f"{config_path}: 'env' file {path} does not exist.")
        return path
    raise ProjectConfigError(f"{config_path}: 'env' must be an object or a path to a .env file.")


def _is_path(dependency: str) -> bool:
    return dependency.startswith((".", "/", "~"))


def _read_dependencies(config_path: Path, deps: Any) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    if not isinstance(deps, list) or not all(isinstance(d, str) and d.strip() for d in deps):
        raise ProjectConfigError(
            f"{config_path}: 'dependencies' must be a list of pip requirements or local "
            'paths, e.g. [".", "langchain-openai"].'
        )
    pip = tuple(d.strip() for d in deps if not _is_path(d.strip()))
    paths = []
    for dep in (d.strip() for d in deps if _is_path(d.strip())):
        path = (config_path.parent / Path(dep).expanduser()).resolve()
        if not path.is_dir():
            raise ProjectConfigError(
                f"{config_path}: dependency {dep!r}: directory {path} does not exist."
            )
        paths.append(path)
    return pip, tuple(paths)


def project_environment(project: Project) -> dict[str, str]:
    """The variables the project's ``env`` sets (a mapping, or read from its .env file)."""
    if project.env is None:
        return {}
    if isinstance(project.env, dict):
        return dict(project.env)
    from dotenv import dotenv_values  # pydantic-settings' own dependency

    return {k: v for k, v in dotenv_values(project.env).items() if v is not None}


def warn_ignored_keys(project: Project) -> None:
    for key in project.ignored_keys:
        log.warning(
            "%s: key %r is ignored by lambdagraph (%s; see docs/projects.md)",
            project.config_path,
            key,
            "lambdagraph provides its own" if key in IGNORED_KEYS else "unknown key",
        )


def apply_environment(project: Project) -> None:
    """Set the project's ``env`` in this process; variables already set win (as with
    ``langgraph dev`` and a shell that exports them), so an operator can override any."""
    for name, value in project_environment(project).items():
        os.environ.setdefault(name, value)
    # Local path dependencies are importable as they are in the official image.
    for path in (*project.path_dependencies, project.root):
        if str(path) not in sys.path:
            sys.path.append(str(path))


# --- loading a graph (lazily) --------------------------------------------------------------

_MODULES: dict[Path, ModuleType] = {}
_IMPORT_LOCK = threading.Lock()


def _module_name(path: Path) -> str:
    # Unique per file: two projects' ``agent.py`` must not share a module.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"lambdagraph_project_{path.stem}_{digest}"


def _import_file(entry: GraphEntry) -> ModuleType:
    with _IMPORT_LOCK:
        if entry.path in _MODULES:
            return _MODULES[entry.path]
        # The file's own directory first, so its sibling imports (``from utils import x``)
        # resolve as they do under ``langgraph dev``.
        directory = str(entry.path.parent)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = _module_name(entry.path)
        spec = importlib.util.spec_from_file_location(name, entry.path)
        if spec is None or spec.loader is None:
            raise ProjectConfigError(f"{entry.where}: {entry.path} is not a Python module.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ImportError as exc:
            sys.modules.pop(name, None)
            raise ProjectConfigError(
                f"{entry.where}: importing {entry.path} failed: {exc}. List what it needs in "
                "the langgraph.json's 'dependencies' (and install it locally)."
            ) from exc
        except Exception:
            sys.modules.pop(name, None)
            raise
        _MODULES[entry.path] = module
        return module


def load_attribute(entry: GraphEntry) -> Any:
    """The attribute ``entry`` names, checked to be a graph, a builder or a factory."""
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    module = _import_file(entry)
    if not hasattr(module, entry.attr):
        graphs = [n for n, v in vars(module).items() if isinstance(v, Pregel | StateGraph)]
        raise ProjectConfigError(
            f"{entry.where}: {entry.path} has no attribute {entry.attr!r}; "
            + (f"its graphs: {', '.join(graphs)}." if graphs else "it defines no graph.")
        )
    value = getattr(module, entry.attr)
    if isinstance(value, Pregel | StateGraph):
        return value
    if callable(value) and not isinstance(value, type):
        _check_factory_signature(entry, value)
        return value
    raise ProjectConfigError(
        f"{entry.where}: {entry.attr!r} is a {type(value).__name__}, not a graph: name a "
        "compiled graph, a StateGraph, or a function taking a RunnableConfig that returns one."
    )


def _check_factory_signature(entry: GraphEntry, factory: Callable[..., Any]) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    required = [
        p
        for p in params.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) > 1:
        raise ProjectConfigError(
            f"{entry.where}: factory {entry.attr!r} must take one argument (a RunnableConfig) "
            f"or none, not {len(required)}."
        )


def factory_config(graph_id: str) -> dict[str, Any]:
    """The RunnableConfig a factory is called with (once per execution environment)."""
    return {"configurable": {"graph_id": graph_id, "assistant_id": graph_id}}


def _takes_config(factory: Callable[..., Any]) -> bool:
    try:
        return bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return True


def _await(awaitable: Awaitable[Any]) -> Any:
    import asyncio  # only async factories need it

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # Called from inside an event loop (an async handler): run it on a loop of its own.
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = asyncio.run(wait())
        except BaseException as exc:
            result["error"] = exc

    worker = threading.Thread(target=run, name="graph-factory")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def build_graph(entry: GraphEntry, checkpointer: Any) -> Any:
    """``entry``'s graph, compiled, with ``checkpointer`` attached (as langgraph-api does)."""
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    value = load_attribute(entry)
    if not isinstance(value, Pregel | StateGraph):
        made = value(factory_config(entry.graph_id)) if _takes_config(value) else value()
        if inspect.isawaitable(made):
            made = _await(made)
        value = made
    if isinstance(value, StateGraph):
        return value.compile(checkpointer=checkpointer, name=entry.graph_id)
    if isinstance(value, Pregel):
        update: dict[str, Any] = {"checkpointer": checkpointer}
        if value.name == "LangGraph":  # the default name: show the graph id instead
            update["name"] = entry.graph_id
        return value.copy(update=update)
    raise ProjectConfigError(
        f"{entry.where}: factory {entry.attr!r} returned a {type(value).__name__}, not a "
        "compiled graph or a StateGraph (context-manager factories are not supported)."
    )


def graph_factory(entry: GraphEntry) -> GraphFactory:
    """A registry factory ``(checkpointer, model) -> compiled graph`` for ``entry``.

    The chat model lambdagraph offers its own graphs is not passed: a project's graph picks
    its model itself, as it does under the official server.
    """

    def factory(checkpointer: Any, model: Any = None) -> Any:
        return build_graph(entry, checkpointer)

    factory.__name__ = f"project_graph_{entry.graph_id}"
    return factory
