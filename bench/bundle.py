"""Size of the Lambda deployment bundle, unzipped (goal: under 120 MB; Lambda's cap is 250 MB).

Builds the asset exactly as ``make synth`` does (``infra.bundling``: pip for
``manylinux2014_aarch64``/CPython 3.12, cached under ``.build/``), then reports its unzipped
and zipped size, the largest packages, and whether every native extension is built for arm64.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from infra.bundling import RUNTIME_PROVIDED, build_asset, tree_size

GOAL_MB = 120.0
LAMBDA_LIMIT_MB = 250.0
# ELF e_machine of AArch64 (the arm64 Lambda architecture).
EM_AARCH64 = 183


def top_level_sizes(asset: Path) -> list[tuple[str, int]]:
    sizes: dict[str, int] = {}
    for entry in asset.iterdir():
        if entry.name.endswith((".dist-info", ".data")):
            continue
        size = tree_size(entry)[0] if entry.is_dir() else entry.stat().st_size
        name = entry.name.removesuffix(".py")
        sizes[name] = sizes.get(name, 0) + size
    return sorted(sizes.items(), key=lambda item: item[1], reverse=True)


def foreign_extensions(asset: Path) -> list[str]:
    """Native extensions not built for AArch64 (they would fail to import on Lambda)."""
    foreign = []
    for so in asset.rglob("*.so*"):
        header = so.read_bytes()[:20]
        if header[:4] != b"\x7fELF":
            continue
        if int.from_bytes(header[18:20], "little") != EM_AARCH64:
            foreign.append(str(so.relative_to(asset)))
    return foreign


def provided_size(asset: Path) -> int:
    """Bytes of the bundled packages that the Lambda runtime also provides."""
    return sum(tree_size(asset / name)[0] for name in RUNTIME_PROVIDED if (asset / name).is_dir())


def zipped_size(asset: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, _dirs, names in os.walk(asset):
            for name in names:
                path = Path(root, name)
                archive.write(path, path.relative_to(asset))
    return buffer.tell()


def main() -> None:
    asset = build_asset()
    size, files = tree_size(asset)
    unzipped_mb = size / 1e6
    print(f"bundle: {asset}")
    print(
        f"unzipped: {unzipped_mb:.1f} MB in {files} files (goal < {GOAL_MB:.0f} MB, Lambda cap {LAMBDA_LIMIT_MB:.0f} MB)"
    )
    print(f"zipped:   {zipped_size(asset) / 1e6:.1f} MB")
    print("largest packages:")
    for name, package_size in top_level_sizes(asset)[:10]:
        print(f"  {name:<28} {package_size / 1e6:7.1f} MB")
    provided = provided_size(asset)
    print(
        f"of which {', '.join(RUNTIME_PROVIDED)} (bundled for a pinned version although the "
        f"runtime has a copy): {provided / 1e6:.1f} MB"
    )
    foreign = foreign_extensions(asset)
    print(
        f"native extensions not for arm64: {len(foreign)}" + (f" {foreign[:5]}" if foreign else "")
    )
    verdict = "PASS" if unzipped_mb < GOAL_MB and not foreign else "FAIL"
    print(f"{verdict}: bundle {unzipped_mb:.1f} MB unzipped vs goal {GOAL_MB:.0f} MB")


if __name__ == "__main__":
    main()
