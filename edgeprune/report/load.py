"""Reading run directories: one `Run` per directory, from its JSON artifacts only. A missing or
corrupt artifact becomes a note (what is missing, which command makes it), not the end of the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.errors import UserError
from edgeprune.run import RunDir, read_json, read_jsonl


@dataclass
class Run:
    """What one run directory holds, read once."""

    name: str
    root: Path
    config: dict  # the resolved training configuration (config.json's "config")
    metrics: dict | None
    history: list[dict]
    parity: dict | None
    bundle_meta: dict | None
    bench: list[tuple[Path, dict]] = field(default_factory=list)  # (file, report), oldest first
    notes: list[str] = field(default_factory=list)

    @property
    def pruned(self) -> bool:
        return bool(self.config.get("prune", True))

    @property
    def widths(self) -> dict:
        if self.metrics and isinstance(self.metrics.get("widths"), dict):
            return self.metrics["widths"]
        if self.history:
            return self.history[-1].get("widths") or {}
        return {}


def _read_optional(path: Path, notes: list[str]) -> dict | None:
    """A JSON file that may be missing; a corrupt one becomes a note, not the end of the report."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path} is unreadable ({type(e).__name__}); it was ignored, re-run the stage that writes it.")
        return None
    if not isinstance(obj, dict):
        notes.append(f"{path} is not a JSON object; it was ignored.")
        return None
    return obj


def load_run(path: Path, name: str | None = None) -> Run:
    """Read one run directory; a UserError when `path` is not one."""
    run = RunDir(Path(path))
    if not run.root.is_dir() or not run.config.is_file():
        raise UserError(
            f"{run.root} is not a run directory (no config.json); pass directories "
            "written by edgeprune train or edgeprune experiment."
        )
    saved = read_json(run.config)
    config = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"{run.config} holds no training configuration; re-create the run with edgeprune train.")
    notes: list[str] = []
    metrics = _read_optional(run.metrics, notes)
    if metrics is None:
        notes.append(
            f"{run.root.name}: training has not finished (no metrics.json); "
            f"`edgeprune train --resume --out {run.root}` completes it."
        )
    try:
        history = read_jsonl(run.history)
    except json.JSONDecodeError:
        history = []
        notes.append(f"{run.history} is corrupt; the training curves leave this run out.")
    parity = _read_optional(run.export / "parity.json", notes)
    bundle_meta = _read_optional(run.bundle / "meta.json", notes)
    bench = []
    for f in sorted(run.bench_files(), key=lambda p: (p.stat().st_mtime, p.name)):
        rep = _read_optional(f, notes)
        if rep is not None and isinstance(rep.get("results"), list):
            bench.append((f, rep))
    return Run(
        name=name or run.root.name,
        root=run.root,
        config=config,
        metrics=metrics,
        history=history,
        parity=parity,
        bundle_meta=bundle_meta,
        bench=bench,
        notes=notes,
    )


def load_runs(paths: list[Path]) -> list[Run]:
    """Every run, the baseline first; names made unique when two directories share one."""
    if not paths:
        raise UserError("give at least one run directory to report on.")
    roots = [Path(p) for p in paths]
    names = [r.name for r in roots]
    if len(set(names)) < len(names):
        names = [f"{r.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in roots]
    seen: dict[str, int] = {}
    runs = []
    for root, name in zip(roots, names):
        seen[name] = seen.get(name, 0) + 1
        runs.append(load_run(root, name if seen[name] == 1 else f"{name}#{seen[name]}"))
    base = next((i for i, r in enumerate(runs) if not r.pruned), 0)
    return [runs[base]] + runs[:base] + runs[base + 1 :]
