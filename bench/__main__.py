"""Run every benchmark module in this package (or the ones named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv: list[str]) -> int:
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "main", None)
        if run is None:
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
