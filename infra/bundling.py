"""Build the one Lambda code asset without docker.

Every function shares one asset: the runtime dependencies of ``pyproject.toml`` installed by
pip for the Lambda platform (``manylinux2014_aarch64``, CPython 3.12, binary wheels only), plus
the ``functions`` and ``graphs`` packages. The dependency install is cached under ``.build/``
keyed by the dependency list and pip flags, so only the first build needs PyPI; later builds
(and ``make synth`` offline) reuse it.

``boto3``/``botocore`` stay in the bundle although the Lambda runtime has its own copy: the
runtime's copy lags behind (and changes under us), while the engine is tested against the
version pyproject.toml pins. They cost about 25 MB of the 120 MB budget (``make bench``).

A LangGraph project (``LAMBDAGRAPH_PROJECT`` or a ``langgraph.json`` at the checkout's
root, ``graphs.project``) travels in the asset too: its directory under ``project/``, and at
the asset's root a ``langgraph.json`` with the paths rewritten to point there, where the
registry finds it on Lambda (``/var/task``) without any setting. Its ``dependencies`` that
are pip requirements, and the ``[project].dependencies`` of local ones with a
``pyproject.toml``, are installed with the engine's (docs/projects.md).

Bytecode: ``/var/task`` is read-only, so a bundle without ``.pyc`` files makes every cold
start compile every module it imports. The asset is compiled with the interpreter matching
the Lambda runtime (CPython ``LAMBDA_PYTHON``: ``LAMBDAGRAPH_BUNDLE_PYTHON``, else
``python3.12`` on ``PATH``, else pyenv's newest 3.12), with unchecked-hash ``.pyc`` files
(the bundle is immutable: no timestamp to compare). Bytecode is specific to the minor
version, so another interpreter's would be ignored: when none is found the build says so
loudly and ships sources only (``--require-bytecode`` makes that an error).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from graphs.project import (
    CONFIG_NAME,
    PROJECT_ENV,
    Project,
    ProjectConfigError,
    find_project,
    read_project,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / ".build"
ASSET_DIR = BUILD_DIR / "asset"
# Packages of the project that go into the asset; `infra` and `bench` stay out (no CDK at run time).
SOURCE_PACKAGES = ("functions", "graphs")
# Also provided by the Lambda Python runtime; bundled anyway (see the module docstring).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
LAMBDA_PYTHON = "3.12"
PIP_PLATFORM_ARGS = (
    "--platform",
    "manylinux2014_aarch64",
    # Lambda's python3.12 runtime is Amazon Linux 2023 (glibc 2.34): newer wheels run too.
    "--platform",
    "manylinux_2_28_aarch64",
    "--implementation",
    "cp",
    "--python-version",
    LAMBDA_PYTHON,
    "--only-binary=:all:",
)
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")
# Where a LangGraph project's directory lands in the asset (and its local dependencies that
# live outside it).
PROJECT_DIR = "project"
PROJECT_DEPS_DIR = "project_deps"
# Never copied from a project's directory: environments, caches, VCS and build output.
_PROJECT_IGNORED = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".venv",
    "venv",
    ".git",
    "node_modules",
    ".build",
    "cdk.out",
    ".langgraph_api",
)
# An explicit interpreter for the bundle's bytecode (CPython LAMBDA_PYTHON).
BUNDLE_PYTHON_ENV = "LAMBDAGRAPH_BUNDLE_PYTHON"
# Marks a dependency directory compiled by a matching interpreter.
_BYTECODE_MARK = f".bytecode-cpython-{LAMBDA_PYTHON.replace('.', '')}"


class BytecodeInterpreterMissing(RuntimeError):
    """No CPython matching the Lambda runtime was found to compile the bundle with."""


def _is_lambda_python(executable: str) -> bool:
    try:
        out = subprocess.run(
            [
                executable,
                "-c",
                "import sys; print(sys.implementation.name, *sys.version_info[:2], sep='.')",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == f"cpython.{LAMBDA_PYTHON}"


def _pyenv_candidates() -> list[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = glob.glob(os.path.join(root, "versions", f"{LAMBDA_PYTHON}.*", "bin", "python3"))
    # Newest patch release first (3.12.10 after 3.12.9).
    return sorted(
        found,
        key=lambda p: [int(x) for x in Path(p).parents[1].name.split(".") if x.isdigit()],
        reverse=True,
    )


def find_lambda_python() -> str | None:
    """An interpreter of the Lambda runtime's Python (CPython ``LAMBDA_PYTHON``), or None."""
    explicit = os.environ.get(BUNDLE_PYTHON_ENV)
    if explicit:
        if not _is_lambda_python(explicit):
            raise BytecodeInterpreterMissing(
                f"{BUNDLE_PYTHON_ENV}={explicit} is not CPython {LAMBDA_PYTHON}"
            )
        return explicit
    candidates = [sys.executable, shutil.which(f"python{LAMBDA_PYTHON}"), *_pyenv_candidates()]
    for candidate in candidates:
        if candidate and _is_lambda_python(candidate):
            return candidate
    return None


def compile_bytecode(tree: Path, python: str) -> None:
    """Write ``__pycache__/*.cpython-3XX.pyc`` next to every module of ``tree``.

    Unchecked-hash: the interpreter uses them without comparing the source's timestamp,
    which a zip round trip would not preserve. Files that do not compile (test fixtures
    some packages ship) are left as they are, as CPython itself would.
    """
    subprocess.run(
        [
            python,
            "-m",
            "compileall",
            "-q",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(tree),
        ],
        check=False,
    )


def runtime_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The `[project].dependencies` of pyproject.toml: what the Lambda code needs at run time."""
    data = tomllib.loads(pyproject.read_text())
    return list(data["project"]["dependencies"])


def _deps_key(requirements: list[str], pip_args: tuple[str, ...] = PIP_PLATFORM_ARGS) -> str:
    spec = json.dumps({"req": requirements, "pip": pip_args})
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def build_dependencies(
    requirements: list[str] | None = None, *, pip_args: tuple[str, ...] = PIP_PLATFORM_ARGS
) -> Path:
    """Install the runtime dependencies for Lambda into a cached directory and return it.

    ``pip_args``: another platform (``bench.coldstart`` builds the same dependencies for the
    machine it runs on, to time imports there).
    """
    reqs = requirements if requirements is not None else runtime_requirements()
    target = BUILD_DIR / f"deps-{_deps_key(reqs, pip_args)}"
    if (target / ".complete").exists():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *pip_args,
        "--target",
        str(partial),
        *reqs,
    ]
    subprocess.run(cmd, check=True)
    # Console scripts are useless in Lambda and carry this machine's interpreter path.
    shutil.rmtree(partial / "bin", ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (target / ".complete").write_text(" ".join(reqs) + "\n")
    return target


def compile_dependencies(deps: Path, python: str) -> None:
    """Compile a cached dependency directory once (the asset hard-links its files)."""
    if (deps / _BYTECODE_MARK).exists():
        return
    compile_bytecode(deps, python)
    (deps / _BYTECODE_MARK).write_text(python + "\n")


def assemble_asset(
    deps: Path | None,
    out: Path = ASSET_DIR,
    *,
    bytecode_python: str | None = None,
    project: Project | None = None,
) -> Path:
    """Lay out the asset directory: dependencies (hard links, cheap) plus the project's code.

    ``deps=None`` gives a code-only asset, which template tests use to stay offline and fast.
    ``bytecode_python``: compile the project's code with it (the dependencies are compiled
    in their cache, ``compile_dependencies``). ``project``: a LangGraph project to carry
    (``bundle_project``).
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if deps is not None:
        for entry in deps.iterdir():
            if entry.name in (".complete", _BYTECODE_MARK):
                continue
            dest = out / entry.name
            if entry.is_dir():
                shutil.copytree(entry, dest, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(entry), str(dest))
    for package in SOURCE_PACKAGES:
        shutil.copytree(REPO_ROOT / package, out / package, ignore=_IGNORED)
        if bytecode_python is not None:
            compile_bytecode(out / package, bytecode_python)
    for script in start_scripts():
        # Lambda runs it (Lambda Web Adapter's bootstrap execs it): executable whatever mode
        # the checkout gave it; CDK's zip keeps the mode.
        (out / script).chmod(0o755)
    if project is not None:
        bundle_project(project, out)
        for copied in (PROJECT_DIR, PROJECT_DEPS_DIR):
            if bytecode_python is not None and (out / copied).is_dir():
                compile_bytecode(out / copied, bytecode_python)
    return out


def start_scripts() -> list[str]:
    """Handlers that are scripts in the asset, not ``module.attribute`` (``FunctionSpec.entry``)."""
    from functions import resources

    return [
        value.handler
        for value in vars(resources).values()
        if isinstance(value, resources.FunctionSpec) and value.entry
    ]


def configured_project() -> Project | None:
    """The LangGraph project the registry would load here (``graphs.project``), if any."""
    path = find_project(os.environ.get(PROJECT_ENV))
    return read_project(path) if path is not None else None


def check_project_graphs(project: Project) -> None:
    """Import every graph ``project`` names and check it is a graph, a builder or a factory
    (ProjectConfigError naming the entry otherwise), with the project's ``env`` applied, as
    ``make run`` does at start-up. Needs the project's dependencies installed here."""
    from graphs.project import apply_environment, load_attribute

    apply_environment(project)
    for entry in project.graphs:
        load_attribute(entry)


def project_requirements(project: Project | None) -> list[str]:
    """What the project needs from PyPI: its pip ``dependencies``, plus the
    ``[project].dependencies`` of its local ones that have a ``pyproject.toml`` (a local
    dependency is shipped as source, not built: the build takes binary wheels only)."""
    if project is None:
        return []
    requirements = list(project.pip_dependencies)
    for path in project.path_dependencies:
        pyproject = path / "pyproject.toml"
        if pyproject.is_file():
            data = tomllib.loads(pyproject.read_text())
            requirements += data.get("project", {}).get("dependencies", [])
    return list(dict.fromkeys(requirements))


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def bundle_project(project: Project, out: Path) -> Path:
    """Copy ``project`` into the asset ``out`` and write ``out/langgraph.json`` pointing at
    the copy; returns that file.

    A project that is this checkout itself (a ``langgraph.json`` at its root) brings only what
    its entries name and its top-level modules: the engine's packages are in the asset
    already, and the rest of the checkout (tests, infra, docs) has no place on Lambda.
    """
    root = project.root
    dest = out / PROJECT_DIR
    in_checkout = root == REPO_ROOT

    def location(path: Path) -> str:
        # The asset-relative place of a file or directory of the project.
        rel = path.relative_to(root)
        if in_checkout and rel.parts and rel.parts[0] in SOURCE_PACKAGES:
            return f"./{rel.as_posix()}"
        return f"./{PROJECT_DIR}/{rel.as_posix()}" if rel.parts else f"./{PROJECT_DIR}"

    if not in_checkout:
        shutil.copytree(root, dest, ignore=_PROJECT_IGNORED)
    else:
        named = [e.path for e in project.graphs] + [
            p for p in project.path_dependencies if _inside(p, root)
        ]
        if isinstance(project.env, Path):
            named.append(project.env)
        tops = {root / p.relative_to(root).parts[0] for p in named if p != root}
        tops |= set(root.glob("*.py"))
        dest.mkdir(parents=True, exist_ok=True)
        for top in sorted(tops):
            if top.name in SOURCE_PACKAGES:
                continue
            if top.is_dir():
                shutil.copytree(top, dest / top.name, ignore=_PROJECT_IGNORED)
            else:
                shutil.copy2(top, dest / top.name)

    dependencies: list[str] = []
    for index, path in enumerate(project.path_dependencies):
        if _inside(path, root):
            dependencies.append(location(path))
            continue
        outside = out / PROJECT_DEPS_DIR / f"{index}-{path.name}"
        shutil.copytree(path, outside, ignore=_PROJECT_IGNORED)
        dependencies.append(f"./{PROJECT_DEPS_DIR}/{outside.name}")
    dependencies += project.pip_dependencies

    graphs: dict[str, Any] = {}
    for entry in project.graphs:
        spec = f"{location(entry.path)}:{entry.attr}"
        graphs[entry.graph_id] = (
            spec if entry.description is None else {"path": spec, "description": entry.description}
        )
    config: dict[str, Any] = {"dependencies": dependencies, "graphs": graphs}
    if isinstance(project.env, Path):
        if not _inside(project.env, root):
            (out / PROJECT_DEPS_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copy2(project.env, out / PROJECT_DEPS_DIR / project.env.name)
            config["env"] = f"./{PROJECT_DEPS_DIR}/{project.env.name}"
        else:
            config["env"] = location(project.env)
    elif project.env is not None:
        config["env"] = project.env
    written = out / CONFIG_NAME
    written.write_text(json.dumps(config, indent=2) + "\n")
    return written


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        # Another file system (or no hard links): a copy is correct, only slower.
        shutil.copy2(src, dst)
    return dst


# The provider SDK each model provider needs (the ``models`` extra of pyproject.toml).
PROVIDER_PACKAGES = {"openai": "langchain-openai", "bedrock": "langchain-aws"}


def model_requirements(
    providers: set[str], pyproject: Path = REPO_ROOT / "pyproject.toml"
) -> list[str]:
    """The ``models`` extra's requirements for the providers a deployment names."""
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["models"]
    wanted = {PROVIDER_PACKAGES[p] for p in providers if p in PROVIDER_PACKAGES}
    return [req for req in extra if _dist_name(req) in wanted]


def _dist_name(requirement: str) -> str:
    """``"langchain_AWS>=0.2"`` -> ``"langchain-aws"`` (PEP 503 normalized)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement)[0]).lower()


def build_asset(*, require_bytecode: bool = False, providers: set[str] | None = None) -> Path:
    """The full deployment asset: what `make synth` and `make deploy` upload.

    A LangGraph project's graphs are imported here first (``check_project_graphs``): on
    Lambda a wrong entry would only show when its first run fails, after every attempt.
    ``providers``: the model providers the deployment names; their SDKs are bundled.
    """
    project = configured_project()
    if project is not None:
        check_project_graphs(project)
    deps = build_dependencies(
        runtime_requirements()
        + model_requirements(providers or set())
        + project_requirements(project)
    )
    python = find_lambda_python()
    if python is None:
        message = (
            f"no CPython {LAMBDA_PYTHON} found (the Lambda runtime's Python) to compile the "
            f"bundle's bytecode: set {BUNDLE_PYTHON_ENV}, put python{LAMBDA_PYTHON} on PATH "
            f"or `pyenv install {LAMBDA_PYTHON}`. Without it every cold start compiles each "
            "module it imports (/var/task is read-only): see `make bench` (bench.coldstart)."
        )
        if require_bytecode:
            raise BytecodeInterpreterMissing(message)
        print(f"WARNING: {message}", file=sys.stderr)
    else:
        compile_dependencies(deps, python)
    return assemble_asset(deps, bytecode_python=python, project=project)


def tree_size(path: Path) -> tuple[int, int]:
    """(bytes, files) of a directory, unzipped, as Lambda's 250 MB limit counts it."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(root, name)).st_size
            files += 1
    return total, files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the Lambda code asset into .build/asset")
    parser.add_argument(
        "--require-bytecode",
        action="store_true",
        help=f"fail when no CPython {LAMBDA_PYTHON} is found to compile the bundle with",
    )
    args = parser.parse_args(argv)
    try:
        asset = build_asset(require_bytecode=args.require_bytecode)
    except (BytecodeInterpreterMissing, ProjectConfigError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    size, files = tree_size(asset)
    pycs = sum(1 for _ in asset.rglob(f"*.cpython-{LAMBDA_PYTHON.replace('.', '')}.pyc"))
    print(
        f"asset {asset.relative_to(REPO_ROOT)}: {size / 1e6:.1f} MB unzipped, {files} files, "
        f"{pycs} compiled for CPython {LAMBDA_PYTHON}"
    )


if __name__ == "__main__":
    main()
