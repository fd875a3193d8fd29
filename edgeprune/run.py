"""The run directory: its paths, atomic writes, JSON files. Torch-free, so bench/ writes its timings
into a run without torch; what the files hold, checkpoints and models are edgeprune.rundir."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from edgeprune.errors import UserError, writing_into

RUN_FORMAT = 1  # bumped when the layout of a run directory changes incompatibly
PARTIAL_SUFFIX = ".partial"  # temporary files of atomic writes; a crash can leave one behind


def _write_in_halves(f, data, midway: Optional[Callable[[], None]]) -> None:
    """Write `data`; with `midway` (the crash tests' fault hook), call it once half is on disk."""
    if midway is None:
        f.write(data)
        return
    f.write(data[: len(data) // 2])
    f.flush()
    midway()
    f.write(data[len(data) // 2 :])


def atomic_write_bytes(path: Path, data: bytes, midway: Optional[Callable[[], None]] = None) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    except OSError as e:  # the folder refuses a new file: say which file was meant
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        # mkstemp makes the file 0600; give it what open() would (0666 less the umask), or a
        # bundle or probe set mounted into the runtime image, whose user is another, is unreadable
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            _write_in_halves(f, data, midway)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            # name the file the user asked for, not the temporary one (a full disk names none at all)
            raise OSError(e.errno, e.strerror, str(path)) from e
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
        raise UserError(f"{path} is not valid JSON ({e.msg}); {_json_fix(path)}.") from None


def _json_fix(path: Path) -> str:
    """How to get a damaged JSON file back without losing anything: a run's config.json is rebuilt
    from the copy its checkpoint holds; any other is written again by the stage that wrote it."""
    if path.name == "config.json" and (path.parent / "checkpoint.pt").exists():
        return (
            f"rebuild it from the checkpoint with edgeprune train --resume --out {path.parent} "
            "and the run's other flags"
        )
    return "delete it and re-run the stage"


def append_jsonl(path: Path, record: dict, midway: Optional[Callable[[], None]] = None) -> None:
    """Append one line; a crash during the write leaves a torn last line, which read_jsonl drops (and a
    full disk one that --resume rewrites from the checkpoint)."""
    with writing_into(path), open(path, "a") as f:
        _write_in_halves(f, json.dumps(record) + "\n", midway)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    """Replace a JSON-lines file atomically."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file. A torn last line (no newline, not valid JSON: an append cut
    short by a crash) is dropped with a warning on stderr; a bad line anywhere else is a UserError."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")  # the last item is "" when the file ends with a newline
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                sys.stderr.write(
                    f"warning: {path}: dropped a torn last line (a write cut short by a crash): {line[:40]!r}\n"
                )
                break
            raise UserError(
                f"{path}: line {i} is not valid JSON ({e.msg}), which no crash leaves behind; delete that line "
                "(a run's history.jsonl is rewritten from its checkpoint by edgeprune train --resume)."
            ) from None
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
    def tokenizer(self) -> Path:
        """A pretrained text model's own tokenizer (edgeprune.data.tokenizer), replacing vocab.json."""
        return self.root / "tokenizer.json"

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

    def partial_writes(self) -> list[Path]:
        """Temporary files of atomic writes that a crash cut short (the files they replace are intact)."""
        return sorted(self.root.glob(f".*{PARTIAL_SUFFIX}"))

    def bench_files(self) -> Iterable[Path]:
        return sorted(self.bench.glob("*.json")) if self.bench.exists() else []
