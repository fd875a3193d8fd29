"""MANIFEST.sha256: a bundle's file hashes in `sha256sum` format, written at export and checked
before a bundle is benchmarked (a copy to a device can be cut short or damaged). Torch-free."""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "MANIFEST.sha256"


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: Path) -> None:
    """Hash every other file of `root`, so `sha256sum -c MANIFEST.sha256` checks a copy."""
    lines = [f"{sha256_file(p)}  {p.name}" for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST]
    (root / MANIFEST).write_text("\n".join(lines) + "\n")


def changed_files(root: Path) -> list[str] | None:
    """Files listed in root's manifest whose content no longer matches (missing ones included);
    None when there is no manifest to check against."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    changed = []
    for line in path.read_text().splitlines():
        digest, sep, name = line.strip().partition("  ")
        if not sep:
            continue
        name = name.lstrip("*")  # sha256sum's binary-mode marker
        f = root / name
        if not f.is_file() or sha256_file(f) != digest:
            changed.append(name)
    return changed
