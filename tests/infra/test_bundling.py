"""GIVEN the asset builder THEN the Lambda asset carries the engine, the graphs and the runtime
dependencies of pyproject.toml, and never the CDK app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from functions.resources import API_FUNCTION, HOUSEKEEPING_FUNCTION, STEP_WORKER_FUNCTION
from infra.bundling import (
    PIP_PLATFORM_ARGS,
    REPO_ROOT,
    SOURCE_PACKAGES,
    assemble_asset,
    runtime_requirements,
)

pytestmark = [pytest.mark.infra]

FUNCTION_SPECS = (API_FUNCTION, STEP_WORKER_FUNCTION, HOUSEKEEPING_FUNCTION)


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
    handlers = [spec.handler.rpartition(".")[0] for spec in FUNCTION_SPECS]

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
