"""Cold start: import time of every handler module against ``import langgraph.graph`` alone.

Goal: each handler imports in at most 1.5x the baseline, on the same machine in the same run.
Each import runs in a fresh interpreter (median of several runs), with the environment a
Lambda function gets (Powertools variables, resource names, a function name so Powertools'
Tracer behaves as on Lambda). When a handler misses the goal, ``python -X importtime`` shows
which modules it imports beyond the baseline and what they cost.

Bytecode: then each handler is imported from a bundle laid out as the Lambda asset is
(``infra.bundling``: the runtime dependencies, ``functions``, ``graphs``), by the Lambda
runtime's Python (CPython 3.12), with nothing else on the path and nothing written (``-B``,
as on the read-only ``/var/task``): once without ``.pyc`` files, as the bundle shipped
before, once with the unchecked-hash bytecode the build now compiles. The dependencies are
built for this machine's platform (same requirements, same pip flags but the platform):
the Lambda asset's arm64 extensions do not load on x86_64.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from functions.resources import (
    API_FUNCTION,
    APPROVAL_NOTIFIER_FUNCTION,
    HOUSEKEEPING_FUNCTION,
    METRICS_NAMESPACE,
    SERVICE_NAME,
    STEP_QUEUES,
    STEP_WORKER_FUNCTION,
    STREAM_FUNCTION,
    WEBHOOK_FUNCTION,
)

BASELINE = "langgraph.graph"
GOAL_RATIO = 1.5
REPEATS = int(os.environ.get("COLDSTART_REPEATS", "7"))
HANDLER_MODULES = [
    (spec.entry or spec.handler).rpartition(".")[0]
    for spec in (
        API_FUNCTION,
        STREAM_FUNCTION,
        STEP_WORKER_FUNCTION,
        HOUSEKEEPING_FUNCTION,
        APPROVAL_NOTIFIER_FUNCTION,
        WEBHOOK_FUNCTION,
    )
]

_TIMER = (
    "import time, importlib; t = time.perf_counter(); importlib.import_module({module!r}); "
    "print(time.perf_counter() - t)"
)


def lambda_environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LAMBDAGRAPH_", "POWERTOOLS_", "AWS_"))
    }
    env.update(
        {
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_LAMBDA_FUNCTION_NAME": "lambdagraph-coldstart-bench",
            "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "LAMBDAGRAPH_CHECKPOINT_TABLE": "bench-checkpoints",
            "LAMBDAGRAPH_RUNTIME_TABLE": "bench-runtime",
            "LAMBDAGRAPH_PAYLOAD_BUCKET": "bench-payloads",
            "LAMBDAGRAPH_API_KEYS_IN_TABLE": "true",
        }
    )
    for spec in STEP_QUEUES.values():
        env[spec.env_var] = f"https://sqs.us-east-1.amazonaws.com/000000000000/{spec.logical_id}"
    return env


def import_seconds(module: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _TIMER.format(module=module)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def median_import(module: str, env: dict[str, str]) -> float:
    # One untimed run first so every module starts from the same warm bytecode cache.
    import_seconds(module, env)
    return statistics.median(import_seconds(module, env) for _ in range(REPEATS))


def importtime(module: str, env: dict[str, str]) -> dict[str, int]:
    """Self time in microseconds per top-level package, from ``python -X importtime``."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    per_package: dict[str, int] = defaultdict(int)
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (
            part.strip() for part in line.removeprefix("import time:").split("|")
        )
        per_package[name.split(".")[0]] += int(self_us)
    return per_package


def explain(module: str, env: dict[str, str], baseline: dict[str, int]) -> None:
    extra = {
        package: us - baseline.get(package, 0)
        for package, us in importtime(module, env).items()
        if us - baseline.get(package, 0) > 0
    }
    print(f"  what {module} imports beyond {BASELINE} (self time, one run):")
    for package, us in sorted(extra.items(), key=lambda item: item[1], reverse=True)[:12]:
        print(f"    {package:<32} {us / 1000:7.1f} ms")


def _host_pip_args() -> tuple[str, ...]:
    from infra.bundling import LAMBDA_PYTHON

    machine = platform.machine()
    return (
        "--platform",
        f"manylinux2014_{machine}",
        "--platform",
        f"manylinux_2_28_{machine}",
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON,
        "--only-binary=:all:",
    )


def _bundle_import_seconds(python: str, tree: Path, module: str, env: dict[str, str]) -> float:
    out = subprocess.run(
        # -S: no site-packages (only the bundle), -B: write nothing (read-only /var/task).
        [python, "-S", "-B", "-c", _TIMER.format(module=module)],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def bytecode_figures(env: dict[str, str]) -> None:
    """Cold import of each handler from a Lambda-like bundle, without and with bytecode."""
    from infra.bundling import (
        LAMBDA_PYTHON,
        assemble_asset,
        build_dependencies,
        compile_bytecode,
        find_lambda_python,
    )

    python = find_lambda_python()
    if python is None:
        print(f"bytecode: no CPython {LAMBDA_PYTHON} on this machine, figures skipped")
        return
    deps = build_dependencies(pip_args=_host_pip_args())
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        plain = assemble_asset(deps, Path(scratch) / "plain")
        compiled = Path(scratch) / "compiled"
        shutil.copytree(plain, compiled)
        compile_bytecode(compiled, python)
        print(
            f"bytecode: handler import from a bundle ({platform.machine()}, CPython "
            f"{LAMBDA_PYTHON}, read-only), median of {REPEATS}:"
        )
        for module in HANDLER_MODULES:
            without = statistics.median(
                _bundle_import_seconds(python, plain, module, env) for _ in range(REPEATS)
            )
            _bundle_import_seconds(python, compiled, module, env)
            with_pyc = statistics.median(
                _bundle_import_seconds(python, compiled, module, env) for _ in range(REPEATS)
            )
            print(
                f"  {module:<34} no .pyc {without * 1000:6.0f} ms   .pyc {with_pyc * 1000:6.0f} ms"
                f"   saved {(without - with_pyc) * 1000:5.0f} ms ({without / with_pyc:.1f}x)"
            )


def main() -> None:
    env = lambda_environment()
    base = median_import(BASELINE, env)
    print(f"baseline: import {BASELINE}: {base * 1000:.0f} ms (median of {REPEATS})")
    baseline_profile: dict[str, int] | None = None
    worst = 0.0
    for module in HANDLER_MODULES:
        seconds = median_import(module, env)
        ratio = seconds / base
        worst = max(worst, ratio)
        verdict = "ok" if ratio <= GOAL_RATIO else "SLOW"
        print(f"{module:<36} {seconds * 1000:6.0f} ms  {ratio:4.2f}x  {verdict}")
        if ratio > GOAL_RATIO:
            baseline_profile = baseline_profile or importtime(BASELINE, env)
            explain(module, env, baseline_profile)
    verdict = "PASS" if worst <= GOAL_RATIO else "FAIL"
    print(f"{verdict}: slowest handler import {worst:.2f}x {BASELINE} (goal <= {GOAL_RATIO}x)")
    bytecode_figures(env)


if __name__ == "__main__":
    main()
