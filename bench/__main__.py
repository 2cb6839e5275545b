"""Run every benchmark module in this package (or the ones named on the command line).

Each benchmark runs in a fresh interpreter: benchmarks start their own moto servers and set
environment variables, and the engine caches its boto3 clients per process, so running them
one after another in one process would point a later benchmark at an earlier one's (stopped)
emulator.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import subprocess
import sys

import bench


def _names() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--in-process":
        # Figures, not noise: moto's per-request access log and the handlers' EMF lines
        # (metrics go nowhere locally) would bury the tables.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
        run = getattr(importlib.import_module(f"bench.{argv[1]}"), "main", None)
        if run is not None:
            run()
        return 0
    failed = []
    for name in argv or _names():
        print(f"\n=== bench.{name} ===", flush=True)
        result = subprocess.run([sys.executable, "-m", "bench", "--in-process", name], check=False)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
