"""Time a directory of latency probes (edgeprune.latency.probes) into a latency table, with the
bench machinery: one worker process per probe, interleaved rounds, the per-call floor. Runtime
only (onnxruntime, numpy, psutil), so it runs on the device as well as on the host.

The table (format "edgeprune.latency-table", docs/bench.md) carries the probes' fingerprint,
widths and per-tensor MACs, the measured p50 of each probe at one batch size and thread count,
the machine, and the fit (edgeprune.latency.model) with its held-out error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeprune.bench.discover import Model
from edgeprune.bench.onnxfile import check_model
from edgeprune.bench.settings import Settings, make_settings
from edgeprune.errors import UserError
from edgeprune.latency.model import (
    PROBES_FORMAT,
    PROBES_MANIFEST,
    PROBES_VERSION,
    TABLE_FORMAT,
    TABLE_VERSION,
    LatencyModel,
)
from edgeprune.manifest import MANIFEST, changed_files

# Probes timed side by side: one worker process each (python + onnxruntime + the probe, some
# 40-60 MB), interleaved round by round. More are timed in successive sets of this many; drift
# between sets is not interleaved away (measured here under load: whole sets 20-30 % apart), so
# a device times 32 at most at once (`edgeprune bench --latency-probes`); a table train measures on
# the host times all of its probes as one set (edgeprune.latency.host).
PROBES_AT_ONCE = 32


def read_probes(probe_dir: Path) -> dict:
    """The manifest of a probe directory, checked; a UserError in one sentence otherwise."""
    probe_dir = Path(probe_dir)
    path = probe_dir / PROBES_MANIFEST
    make = "make them with `edgeprune probes RUN --out DIR` (or edgeprune.latency.probes.make_probes)"
    if not probe_dir.is_dir():
        raise UserError(f"{probe_dir} is not a directory; {make}.")
    if not path.is_file():
        raise UserError(f"{probe_dir} holds no latency probes (no {PROBES_MANIFEST}); {make}.")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({type(e).__name__}); copy the probes again or {make}.") from None
    probes = manifest.get("probes") if isinstance(manifest, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != PROBES_FORMAT or not isinstance(probes, list):
        raise UserError(f"{path} is not a latency-probes manifest; {make}.")
    if manifest.get("version") != PROBES_VERSION:
        raise UserError(
            f"{path} has probes version {manifest.get('version')}, this edgeprune reads {PROBES_VERSION}; {make}."
        )
    if not probes or not all(isinstance(p, dict) and p.get("file") and isinstance(p.get("macs"), dict) for p in probes):
        raise UserError(f"{path} lists no probes (each needs a file and its MACs); {make}.")
    changed = set(changed_files(probe_dir) or ())
    if PROBES_MANIFEST in changed:
        raise UserError(f"{path} no longer matches {MANIFEST} (changed or damaged since it was made); {make}.")
    return manifest


def table_runtime(settings: Settings) -> str:
    """The one runtime a latency table is measured on (--runtime; onnxruntime by default): probes are
    ONNX files, so a runtime that does not read ONNX gets a UserError naming the ones that do."""
    from edgeprune.bench.runtimes import DEFAULT, RUNTIMES

    chosen = settings.runtimes or (DEFAULT,)
    if len(chosen) != 1:
        raise UserError(f"a latency table is measured on one runtime; give one --runtime, not {','.join(chosen)}.")
    onnx_readers = [n for n, r in RUNTIMES.items() if r.reads(Path("probe.onnx"))]
    if chosen[0] not in onnx_readers:
        raise UserError(
            f"latency probes are ONNX files, which {chosen[0]} does not read; measure the table on "
            f"{' or '.join(onnx_readers)}."
        )
    return chosen[0]


def _models(probe_dir: Path, manifest: dict, runtime: str = "onnxruntime") -> list[Model]:
    changed = set(changed_files(probe_dir) or ())
    out = []
    for p in manifest["probes"]:
        path = probe_dir / p["file"]
        bad = check_model(path)
        problem = f"{p['file']} is not a valid ONNX model: {bad}" if bad else None
        if problem is None and p["file"] in changed:
            problem = f"{p['file']} does not match {MANIFEST} (changed or damaged since it was made)"
        name = str(p.get("id") or path.stem)
        out.append(Model(name=name, variant=name, path=path, problem=problem, runtime=runtime))
    return out


def _sample(probe: dict, row: dict, batch: int) -> dict:
    lat = row["latency"].get(str(batch)) or {}
    return {
        "id": probe.get("id"),
        "kind": probe.get("kind"),
        "held_out": bool(probe.get("held_out", False)),
        "widths": probe.get("widths") or {},
        "macs": probe["macs"],
        "params": probe.get("params"),
        "status": row["status"],
        "error": row["error"],
        "p50_ms": lat.get("p50_ms") if row["status"] == "ok" else None,
        "round_median_ms": lat.get("round_median_ms"),
        "round_min_ms": lat.get("round_min_ms"),
        "floor_p50_ms": lat.get("floor_p50_ms"),
        "runs": lat.get("runs"),
    }


def measure_probes(
    probe_dir: Path,
    threads: int | None = None,
    batch: int = 1,
    runs: int | None = 100,
    rounds: int = 5,
    *,
    warmup: int = 10,
    settings: Settings | None = None,
    command: list[str] | None = None,
    progress=lambda s: None,
    at_once: int = PROBES_AT_ONCE,
) -> dict:
    """Time every probe of `probe_dir` at `batch` with `threads` threads on the runtime of `settings` (default
    onnxruntime, threads: all usable cores), `at_once` probes interleaved at a time (a worker process
    each); the latency table, with its fit. `settings` (from make_settings) overrides the other options."""
    from edgeprune.bench.conditions import Conditions
    from edgeprune.bench.env import machine_info
    from edgeprune.bench.runner import measure

    probe_dir = Path(probe_dir)
    manifest = read_probes(probe_dir)
    if settings is None:
        settings = make_settings(threads=threads, batch=str(batch), warmup=warmup, runs=runs, rounds=rounds)
    if len(settings.batches) != 1:
        raise UserError(
            "a latency table is measured at one batch size (the one the model will run at); "
            f"give one --batch, not {','.join(map(str, settings.batches))}."
        )
    (batch,) = settings.batches
    runtime = table_runtime(settings)
    models = _models(probe_dir, manifest, runtime)
    rows: list[dict] = []
    with Conditions() as conditions:
        for start in range(0, len(models), at_once):
            part = models[start : start + at_once]
            where = f"probes {start + 1}-{start + len(part)} of {len(models)}"
            rows.extend(measure(part, settings, lambda s, where=where: progress(f"{where}: {s}")))
    machine = machine_info(settings.label)
    samples = [_sample(p, r, batch) for p, r in zip(manifest["probes"], rows)]
    table = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "fingerprint": manifest.get("fingerprint"),
        "arch": manifest.get("arch"),
        "inputs": manifest.get("inputs"),
        "groups": manifest.get("groups"),
        "threads": settings.threads,
        "batch": batch,
        "seq_len": settings.seq_len,
        "machine": machine,
        "onnxruntime": machine["onnxruntime"],
        "runtime": runtime,  # a budget from this table is a budget on this runtime
        "runtime_version": next((r.get("runtime_version") for r in rows if r.get("runtime_version")), None),
        "emulated": machine["emulated"],
        "settings": settings.as_dict(),
        "conditions": conditions.result,
        "worker_modules": sorted({m for r in rows for m in r.get("worker_modules") or ()}),
        "macs_factors": manifest.get("macs_factors") or {},
        "tensor_owner": manifest.get("tensor_owner") or {},
        "samples": samples,
        "command": command if command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]],
        "fit": None,
    }
    try:
        table["fit"] = LatencyModel.fit(table).report
    except UserError as e:  # too few probes measured: the table is kept, the reason recorded
        table["fit"] = {"error": str(e)}
    return table


def render(table: dict):
    """The probes' measured and predicted times, and the fit's summary, as rich renderables."""
    from rich.table import Table

    fit = table.get("fit") or {}
    predicted = {h["id"]: h["predicted_ms"] for h in fit.get("held_out") or ()}
    t = Table(
        title=f"latency probes of {table.get('arch')}: {table['threads']} threads, batch {table['batch']}"
        + (" [bold red]EMULATED[/]" if table.get("emulated") else "")
        + (" [bold yellow]BUSY MACHINE[/]" if (table.get("conditions") or {}).get("busy") else "")
    )
    for col in ("probe", "kind", "widths", "MMACs", "p50 ms", "floor ms", "held out: predicted ms"):
        t.add_column(col, justify="left" if col in ("probe", "kind", "widths") else "right")
    for s in table["samples"]:
        widths = " ".join(str(v) for v in s["widths"].values())
        p50 = f"{s['p50_ms']:.4f}" if s["p50_ms"] is not None else f"[red]{s['status']}: {s['error']}[/]"
        floor = f"{s['floor_p50_ms']:.4f}" if s.get("floor_p50_ms") is not None else "-"
        pred = f"{predicted[s['id']]:.4f}" if s["id"] in predicted else ""
        t.add_row(
            str(s["id"]), str(s.get("kind") or ""), widths, f"{sum(s['macs'].values()) / 1e6:.3f}", p50, floor, pred
        )
    return t


def fit_summary(fit: dict | None) -> str:
    """One line: what the fit kept and how far off it was on the held-out probes."""
    if not fit:
        return "fit: none"
    if fit.get("error"):
        return f"fit: not made: {fit['error']}"
    held = (
        f"held-out error mean {fit['held_out_mean_rel_error']:.1%}, max {fit['held_out_max_rel_error']:.1%} "
        f"({fit['n_held_out']} probes)"
        if fit.get("n_held_out")
        else "no held-out probes"
    )
    busy = " (the machine was busy: fitted to each probe's least disturbed round)" if fit["target"] != "p50_ms" else ""
    return (
        f"fit: {len(fit['features'])} {fit['level']} feature(s) + intercept {fit['intercept_ms']:.4f} ms "
        f"on {fit['n_fit']} probes{busy} (error mean {fit['fit_mean_rel_error']:.1%}); {held}"
    )


def run(probe_dir: Path, settings: Settings, json_path: Path | None, console=None) -> int:
    """`edgeprune bench --latency-probes DIR --json TABLE`: measure, print, write; 0 if every probe ran."""
    from rich.console import Console

    from edgeprune.run import atomic_write_json

    if json_path is None:
        raise UserError(
            "--latency-probes needs --json TABLE.json, the file to write the latency table to "
            "(e.g. --json latency-pi4.json)."
        )
    if Path(json_path).is_dir():
        raise UserError(
            f"--json {json_path} is a directory; give a file path, e.g. {Path(json_path) / 'latency.json'}."
        )
    read_probes(probe_dir)  # bad input fails here, before any process starts
    console = console or Console()
    status = Console(stderr=True)
    with status.status("measuring latency probes") as spinner:
        table = measure_probes(probe_dir, settings=settings, progress=lambda s: spinner.update(s))
    console.print(render(table))
    console.print(fit_summary(table["fit"]), highlight=False, soft_wrap=True)
    atomic_write_json(Path(json_path), table)
    status.print(f"wrote {json_path}", highlight=False)
    return 0 if all(s["status"] == "ok" for s in table["samples"]) else 1
