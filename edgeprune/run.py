"""The run directory: paths, atomic writes, loading artifacts. Torch-free."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgeprune.errors import UserError

RUN_FORMAT = 1  # bumped when the layout of a run directory changes incompatibly


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; run the stage that writes it first.") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}); delete it and re-run the stage.") from None


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Replace a JSON-lines file atomically."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (see DESIGN.md)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def vocab(self) -> Path:
        """The vocabulary model.pt reads (shrunk when vocabulary rows were pruned)."""
        return self.root / "vocab.json"

    @property
    def train_vocab(self) -> Path:
        """The vocabulary training encodes with, kept once vocab.json has been shrunk (for --resume)."""
        return self.root / "vocab.train.json"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def exists(self) -> bool:
        return self.config.exists()

    def bench_files(self) -> Iterable[Path]:
        return sorted(self.bench.glob("*.json")) if self.bench.exists() else []
