"""GIVEN the asset builder THEN the Lambda asset carries the engine, the graphs and the runtime
dependencies of pyproject.toml, and never the CDK app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from functions.resources import (
    API_FUNCTION,
    HOUSEKEEPING_FUNCTION,
    STEP_WORKER_FUNCTION,
    STREAM_FUNCTION,
)
from infra.bundling import (
    PIP_PLATFORM_ARGS,
    REPO_ROOT,
    SOURCE_PACKAGES,
    assemble_asset,
    runtime_requirements,
)

pytestmark = [pytest.mark.infra]

FUNCTION_SPECS = (API_FUNCTION, STREAM_FUNCTION, STEP_WORKER_FUNCTION, HOUSEKEEPING_FUNCTION)


def test_runtime_requirements_are_pyprojects_dependencies_without_dev_tools() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = runtime_requirements()
    assert requirements == project["dependencies"]
    for dev_only in ("aws-cdk-lib", "cdk-nag", "moto", "pytest"):
        assert not any(r.startswith(dev_only) for r in requirements), dev_only


def test_dependencies_are_built_for_lambda_arm64_without_docker() -> None:
    args = " ".join(PIP_PLATFORM_ARGS)
    assert "--platform manylinux2014_aarch64" in args
    assert "--only-binary=:all:" in args
    assert "--python-version 3.12" in args


def test_asset_holds_the_engine_and_graphs_but_not_the_cdk_app(tmp_path: Path) -> None:
    # GIVEN prebuilt dependencies (a stand-in package)
    deps = tmp_path / "deps"
    (deps / "somelib").mkdir(parents=True)
    (deps / "somelib" / "__init__.py").write_text("")
    (deps / ".complete").write_text("")
    # WHEN the asset is assembled
    asset = assemble_asset(deps, out=tmp_path / "asset")
    # THEN it has the dependencies, the project's Lambda packages and nothing else of ours
    assert (asset / "somelib" / "__init__.py").exists()
    for package in SOURCE_PACKAGES:
        assert (asset / package / "__init__.py").exists(), package
    assert (asset / "functions" / "handlers" / "step_worker.py").exists()
    assert not (asset / "infra").exists()
    assert not (asset / ".complete").exists()
    assert not list(asset.rglob("__pycache__"))


def _runtime_closure(requirements: list[str]) -> set[str]:
    """Distributions the runtime requirements pull in (as installed here), names normalized."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    closure: set[str] = set()
    pending = [(Requirement(r), frozenset(Requirement(r).extras)) for r in requirements]
    while pending:
        requirement, _ = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in closure:
            continue
        closure.add(name)
        try:
            lines = requires(requirement.name) or []
        except PackageNotFoundError:
            continue
        for line in lines:
            dependency = Requirement(line)
            envs = [{"extra": extra} for extra in ("", *requirement.extras)]
            if dependency.marker is None or any(dependency.marker.evaluate(env) for env in envs):
                pending.append((dependency, frozenset(dependency.extras)))
    return closure


def test_handlers_import_only_what_the_bundle_carries() -> None:
    # GIVEN the distributions the bundle gets from pyproject's runtime dependencies
    from packaging.utils import canonicalize_name

    closure = _runtime_closure(runtime_requirements())
    # WHEN every handler module is imported in a fresh interpreter, as Lambda would
    handlers = [(spec.entry or spec.handler).rpartition(".")[0] for spec in FUNCTION_SPECS]

    def loaded_after(imports: list[str]) -> set[str]:
        script = (
            "import importlib, sys, json\n"
            f"for m in {imports!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAGRAPH_")}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
        )
        return set(json.loads(out.stdout))

    # (what a bare interpreter loads, e.g. from this venv's .pth files, is not the handlers')
    imported = loaded_after(handlers) - loaded_after([])
    # THEN each third-party module it loads belongs to a distribution in the bundle
    owners = packages_distributions()
    ours = {"functions", "graphs"}
    missing = {
        f"{module} ({', '.join(owners[module])})"
        for module in imported - set(sys.stdlib_module_names) - ours
        if module in owners
        and not any(canonicalize_name(dist) in closure for dist in owners[module])
    }
    assert not missing, f"handlers import modules the Lambda bundle lacks: {sorted(missing)}"


def test_the_bundle_is_compiled_for_the_lambda_runtimes_python(tmp_path: Path) -> None:
    from infra.bundling import LAMBDA_PYTHON, compile_bytecode, find_lambda_python
    from infra.constructs.function import RUNTIME

    # GIVEN the interpreter the build compiles with (CPython of the Lambda runtime)
    assert RUNTIME.name == f"python{LAMBDA_PYTHON}"
    python = find_lambda_python()
    if python is None:
        pytest.skip(f"no CPython {LAMBDA_PYTHON} on this machine (the build warns the same)")
    # WHEN a package is compiled as the asset is
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    compile_bytecode(package, python)
    # THEN it has unchecked-hash bytecode for exactly that Python
    tag = f"cpython-{LAMBDA_PYTHON.replace('.', '')}"
    pyc = package / "__pycache__" / f"__init__.{tag}.pyc"
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b01, "hash-based, unchecked (bit 0 set, bit 1 clear)"
    # AND that Python runs it without looking at the source (a zip round trip changes
    # timestamps; /var/task is read-only): an edit after compiling is not seen
    (package / "__init__.py").write_text("VALUE = 2\n")
    out = subprocess.run(
        [python, "-B", "-c", "import pkg; print(pkg.VALUE)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"


# --- a LangGraph project in the asset (infra.bundling.bundle_project, docs/projects.md) ----

SAMPLE_PROJECT = REPO_ROOT / "tests" / "sample_project"


def test_the_asset_carries_a_langgraph_project_where_the_registry_finds_it(
    tmp_path: Path,
) -> None:
    from graphs.project import find_project, read_project

    # GIVEN the sample project, with a local dependency outside its directory and caches
    project_dir = tmp_path / "my_project"
    shutil.copytree(SAMPLE_PROJECT, project_dir)
    (project_dir / "__pycache__").mkdir()
    (project_dir / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"")
    (project_dir / ".venv" / "lib").mkdir(parents=True)
    shared = tmp_path / "shared_lib"
    (shared / "shared").mkdir(parents=True)
    (shared / "shared" / "__init__.py").write_text("")
    config = json.loads((project_dir / "langgraph.json").read_text())
    config["dependencies"] = [".", "../shared_lib", "langchain-openai>=0.3"]
    (project_dir / "langgraph.json").write_text(json.dumps(config))
    project = read_project(project_dir / "langgraph.json")
    # WHEN the asset is assembled with it
    asset = assemble_asset(None, out=tmp_path / "asset", project=project)
    # THEN the project's files are under project/, without caches or environments
    assert (asset / "project" / "agent.py").is_file()
    assert (asset / "project" / "helpers.py").is_file()
    assert (asset / "project" / ".env").is_file()
    assert not (asset / "project" / "__pycache__").exists()
    assert not (asset / "project" / ".venv").exists()
    # AND a langgraph.json at the asset's root (Lambda's /var/task), found with no setting,
    # names the copies: the registry reads it as it reads the original
    assert find_project(None, default_root=asset) == (asset / "langgraph.json").resolve()
    bundled = read_project(asset / "langgraph.json")
    assert bundled.entry("echo").path == (asset / "project" / "agent.py").resolve()
    assert bundled.env == (asset / "project" / ".env").resolve()
    assert bundled.pip_dependencies == ("langchain-openai>=0.3",)
    assert (asset / "project").resolve() in bundled.path_dependencies
    outside = [p for p in bundled.path_dependencies if p.parent.name == "project_deps"]
    assert len(outside) == 1
    assert (outside[0] / "shared" / "__init__.py").is_file()
    # AND the engine is there as always
    assert (asset / "functions" / "__init__.py").is_file()


def test_a_projects_pip_dependencies_are_installed_with_the_engines(tmp_path: Path) -> None:
    from graphs.project import read_project
    from infra.bundling import project_requirements

    # GIVEN a project depending on a pip package and on itself (".") with a pyproject.toml
    (tmp_path / "agent.py").write_text("graph = None\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "agent"\nversion = "0"\ndependencies = ["httpx>=0.27", "tavily-python"]\n'
    )
    (tmp_path / "langgraph.json").write_text(
        json.dumps(
            {
                "dependencies": [".", "langchain-openai", "httpx>=0.27"],
                "graphs": {"a": "./agent.py:graph"},
            }
        )
    )
    # WHEN its requirements are listed
    requirements = project_requirements(read_project(tmp_path / "langgraph.json"))
    # THEN they are the pip ones and its pyproject's, each once; no project, none
    assert requirements == ["langchain-openai", "httpx>=0.27", "tavily-python"]
    assert project_requirements(None) == []


def test_a_project_at_the_checkouts_root_brings_only_what_it_names(tmp_path: Path) -> None:
    from graphs.project import Project, read_project
    from infra.bundling import bundle_project

    # GIVEN a langgraph.json at the checkout's root naming a graph in graphs/ and one beside it
    sample = read_project(SAMPLE_PROJECT / "langgraph.json")
    entries = (
        replace(sample.entry("echo"), config_path=REPO_ROOT / "langgraph.json"),
        replace(
            sample.entry("echo"),
            graph_id="builtin_file",
            path=REPO_ROOT / "graphs" / "support" / "graph.py",
            config_path=REPO_ROOT / "langgraph.json",
        ),
    )
    project = Project(config_path=REPO_ROOT / "langgraph.json", graphs=entries)
    out = tmp_path / "asset"
    out.mkdir()
    # WHEN it is bundled
    written = json.loads(bundle_project(project, out).read_text())
    # THEN only the named top-level directory is copied (no tests/, infra/, docs/)
    copied = {p.name for p in (out / "project").iterdir()}
    assert copied == {"tests"} | {p.name for p in REPO_ROOT.glob("*.py")}
    assert not (out / "project" / "infra").exists()
    # AND a file of the engine's packages is named where the asset has it already
    assert written["graphs"]["builtin_file"] == "./graphs/support/graph.py:graph"
    assert written["graphs"]["echo"] == "./project/tests/sample_project/agent.py:graph"


def test_the_build_imports_every_project_graph_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphs.project import ProjectConfigError, read_project
    from infra.bundling import check_project_graphs

    # GIVEN the sample project, and a copy whose entry names what its file lacks
    monkeypatch.setattr(sys, "path", list(sys.path))
    # (set, so that what the project's .env sets is undone after the test)
    monkeypatch.setenv("ECHO_PREFIX", "echo:")
    check_project_graphs(read_project(SAMPLE_PROJECT / "langgraph.json"))
    broken = tmp_path / "broken"
    shutil.copytree(SAMPLE_PROJECT, broken)
    (broken / "langgraph.json").write_text(json.dumps({"graphs": {"echo": "./agent.py:grap"}}))
    # WHEN the asset is built with it THEN the build stops naming the entry
    with pytest.raises(ProjectConfigError, match=r"graph 'echo' \('./agent.py:grap'\)"):
        check_project_graphs(read_project(broken / "langgraph.json"))


def test_the_bundle_carries_the_sdks_of_the_model_providers_named() -> None:
    from infra.bundling import model_requirements

    # the `models` extra of pyproject.toml, only for the providers a deployment names
    assert [r.split(">")[0] for r in model_requirements({"openai"})] == ["langchain-openai"]
    assert [r.split(">")[0] for r in model_requirements({"bedrock"})] == ["langchain-aws"]
    assert model_requirements({"fake"}) == []
