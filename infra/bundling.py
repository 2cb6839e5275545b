"""Build the one Lambda code asset without docker.

Every function shares one asset: the runtime dependencies of ``pyproject.toml`` installed by
pip for the Lambda platform (``manylinux2014_aarch64``, CPython 3.12, binary wheels only), plus
the ``functions`` and ``graphs`` packages. The dependency install is cached under ``.build/``
keyed by the dependency list and pip flags, so only the first build needs PyPI; later builds
(and ``make synth`` offline) reuse it.

``boto3``/``botocore`` stay in the bundle although the Lambda runtime has its own copy: the
runtime's copy lags behind (and changes under us), while the engine is tested against the
version pyproject.toml pins. They cost about 25 MB of the 120 MB budget (``make bench``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

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


def runtime_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The `[project].dependencies` of pyproject.toml: what the Lambda code needs at run time."""
    data = tomllib.loads(pyproject.read_text())
    return list(data["project"]["dependencies"])


def _deps_key(requirements: list[str]) -> str:
    spec = json.dumps({"req": requirements, "pip": PIP_PLATFORM_ARGS})
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def build_dependencies(requirements: list[str] | None = None) -> Path:
    """Install the runtime dependencies for Lambda into a cached directory and return it."""
    reqs = requirements if requirements is not None else runtime_requirements()
    target = BUILD_DIR / f"deps-{_deps_key(reqs)}"
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
        *PIP_PLATFORM_ARGS,
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


def assemble_asset(deps: Path | None, out: Path = ASSET_DIR) -> Path:
    """Lay out the asset directory: dependencies (hard links, cheap) plus the project's code.

    ``deps=None`` gives a code-only asset, which template tests use to stay offline and fast.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if deps is not None:
        for entry in deps.iterdir():
            if entry.name == ".complete":
                continue
            dest = out / entry.name
            if entry.is_dir():
                shutil.copytree(entry, dest, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(entry), str(dest))
    for package in SOURCE_PACKAGES:
        shutil.copytree(REPO_ROOT / package, out / package, ignore=_IGNORED)
    return out


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        # Another file system (or no hard links): a copy is correct, only slower.
        shutil.copy2(src, dst)
    return dst


def build_asset() -> Path:
    """The full deployment asset: what `make synth` and `make deploy` upload."""
    return assemble_asset(build_dependencies())


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
    parser.parse_args(argv)
    asset = build_asset()
    size, files = tree_size(asset)
    print(f"asset {asset.relative_to(REPO_ROOT)}: {size / 1e6:.1f} MB unzipped, {files} files")


if __name__ == "__main__":
    main()
