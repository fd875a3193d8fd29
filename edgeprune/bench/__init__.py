"""Runtime-only benchmark: onnxruntime (and OpenVINO, ncnn when installed), numpy, psutil. Never
imports torch or onnx.

`bench(paths, settings)` measures every model and returns the report dict; the CLI adds the
table and the files. See docs/bench.md for the method and the JSON schema.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgeprune.bench.settings import Settings, make_settings, parse_batches

__all__ = ["Settings", "bench", "make_settings", "parse_batches", "run"]


def _measure(models, settings: Settings, command: list[str] | None, progress) -> dict:
    from edgeprune.bench.choose import choose
    from edgeprune.bench.conditions import Conditions
    from edgeprune.bench.env import machine_info
    from edgeprune.bench.runner import measure, report

    with Conditions() as conditions:
        rows = measure(models, settings, progress)
    command = command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]]
    out = report(rows, settings, machine_info(settings.label), command, conditions.result)
    out["ship"] = choose(rows, settings.batches[0], settings.max_acc_drop)
    return out


def bench(paths: list[Path], settings: Settings, command: list[str] | None = None, progress=lambda s: None) -> dict:
    """Discover and measure every model under `paths`: the report dict (format 1)."""
    from edgeprune.bench.discover import discover

    return _measure(discover(paths, settings.runtimes), settings, command, progress)


def run(paths: list[Path], settings: Settings, json_path: Path | None = None, console=None) -> int:
    """The `edgeprune bench` command: measure, print the table, write JSON; 0 if every row succeeded or
    was skipped (a runtime not installed: the row says which extra to install)."""
    from rich.console import Console

    from edgeprune.bench.discover import discover
    from edgeprune.bench.runner import run_dir_files
    from edgeprune.bench.table import render
    from edgeprune.errors import UserError
    from edgeprune.run import atomic_write_json

    models = discover(paths, settings.runtimes)  # bad input fails here, before any process starts
    if json_path is not None and Path(json_path).is_dir():
        raise UserError(f"--json {json_path} is a directory; give a file path, e.g. {Path(json_path) / 'bench.json'}.")
    console = console or Console()
    status = Console(stderr=True)
    with status.status("benchmarking") as spinner:
        report = _measure(models, settings, None, lambda s: spinner.update(s))
    console.print(render(report))
    written = []
    if json_path is not None:
        atomic_write_json(Path(json_path), report)
        written.append(Path(json_path))
    for path, obj in run_dir_files(models, report).items():
        atomic_write_json(path, obj)
        written.append(path)
    for path in written:
        status.print(f"wrote {path}", highlight=False)
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["results"]) else 1
