"""The comparison a person reads: one table (and figures) across runs, variants and machines,
built only from the JSON artifacts of each run directory. Torch-free.

One row per (run, variant, machine). Variants are the float ONNX model and every INT8 recipe in
export/parity.json; machines are the `machine` blocks of RUN/bench/*.json. Every value is also
given as a ratio to the baseline's float model, on the same machine for machine-bound figures.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.bench.metrics import majority_warning
from edgeprune.errors import UserError
from edgeprune.prune import budget as budgets
from edgeprune.run import RunDir, atomic_write_bytes, atomic_write_json, read_json, read_jsonl

REPORT_FORMAT = 1
FLOAT = "float"
DASH = "—"

# (key, header, number format, machine-bound): the one description every output format follows.
# Machine-bound figures are compared only with the baseline measured on the same machine; counts
# ("count": how many examples acc and macro-F1 were measured on) get no ratio.
COLUMNS = (
    ("params", "params", "int", False),
    ("file_kb", "KB", "kb", False),
    ("file_kb_gz", "KB gz", "kb", False),
    ("accuracy", "acc", "score", False),
    ("f1", "macro-F1", "score", False),
    ("eval_n", "n", "count", False),
    ("p50_ms", "p50 ms", "ms", True),
    ("p99_ms", "p99 ms", "ms", True),
    ("throughput_sps", "samples/s", "rate", True),
    ("rss_peak_mb", "peak RSS MB", "mb", True),
)

FIGURES = {
    "pareto": ("report-pareto.png", "Accuracy vs batch-1 latency (Pareto front highlighted)"),
    "widths": ("report-widths.png", "Width of each layer, baseline vs pruned"),
    "training": ("report-training.png", "Training curves: validation accuracy and live parameters"),
}


def _export_hint(root: Path) -> str:
    return f"`edgeprune export {root}`"


def _bench_hint(root: Path) -> str:
    return f"`edgeprune bench {root / 'bundle'}`"


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


# ---------------------------------------------------------------------------------------------
# rows


def machine_key(report: dict) -> tuple[str, bool]:
    """(display name, emulated) of the machine a bench report came from."""
    m = report.get("machine") or {}
    label = str(m.get("label") or (report.get("settings") or {}).get("label") or m.get("hostname") or "?")
    emulated = bool(m.get("emulated"))
    if emulated and "emulated" not in label:
        label += " (emulated)"
    return label, emulated


def _variants(run: Run) -> list[dict]:
    """The float model and each INT8 recipe: file size, accuracy, F1 and which bench name it has."""
    out = []
    if run.parity and isinstance(run.parity.get("variants"), list):
        kept = run.parity.get("int8_kept")
        by_name = {v.get("name"): v for v in run.parity["variants"] if isinstance(v, dict)}
        simp = by_name.get("simplified") or by_name.get("onnx")
        if simp:
            out.append({"variant": FLOAT, "bench_name": FLOAT, "in_bundle": True, "source": simp, "recipe": None})
        for v in run.parity["variants"]:
            if isinstance(v, dict) and v.get("recipe"):
                out.append(
                    {
                        "variant": f"int8-{v['name']}",
                        "bench_name": "int8" if v["name"] == kept else None,
                        "in_bundle": v["name"] == kept,
                        "source": v,
                        "recipe": v["name"],
                    }
                )
        out.sort(key=lambda v: (v["variant"] != FLOAT, not v["in_bundle"], v["variant"]))
    if not out:
        out.append({"variant": FLOAT, "bench_name": FLOAT, "in_bundle": False, "source": None, "recipe": None})
    return out


def _bench_by_variant(run: Run) -> dict[str, dict[str, tuple[dict, dict]]]:
    """bench name -> machine -> (result row, report); the newest file wins for each pair."""
    out: dict[str, dict[str, tuple[dict, dict]]] = {}
    for _, rep in run.bench:  # oldest first, so later files overwrite
        machine, _ = machine_key(rep)
        for res in rep["results"]:
            if isinstance(res, dict) and res.get("variant"):
                out.setdefault(str(res["variant"]), {})[machine] = (res, rep)
    return out


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _row(run: Run, variant: dict, machine: str | None, bench: tuple[dict, dict] | None) -> dict:
    src = variant["source"] or {}
    res, rep = bench if bench else ({}, {})
    metrics = run.metrics or {}
    lat = (res.get("latency") or {}).get("1") or {}
    mem = res.get("memory") or {}
    size = _num(src.get("size_bytes")) if variant["source"] else None
    size_gz = _num(src.get("size_gz_bytes")) if variant["source"] else None
    if size is None:
        size, size_gz = _num(res.get("file_bytes")), _num(res.get("file_bytes_gz"))
    # Accuracy as measured where the row's latency was measured, else by export, else by training.
    if _num(res.get("accuracy")) is not None:
        acc, f1, n, acc_source = res["accuracy"], _num(res.get("f1")), res.get("eval_n"), "bench"
    elif variant["source"] and _num(src.get("accuracy")) is not None:
        acc, f1, n, acc_source = src["accuracy"], _num(src.get("f1")), src.get("eval_n"), "export"
    elif variant["variant"] == FLOAT and _num(metrics.get("test_accuracy")) is not None:
        acc, f1, n, acc_source = metrics["test_accuracy"], _num(metrics.get("test_f1")), metrics.get("test_n"), "train"
    else:
        acc = f1 = n = acc_source = None
    conditions = rep.get("conditions") or {}
    return {
        "run": run.name,
        "run_dir": str(run.root),
        "role": "pruned" if run.pruned else "baseline",
        "budget": budget_of(run.config, run.pruned),
        "predicted_ms": _num(metrics.get("latency_ms_predicted")) if variant["variant"] == FLOAT else None,
        "variant": variant["variant"],
        "recipe": variant["recipe"],
        "in_bundle": variant["in_bundle"],
        "machine": machine,
        "emulated": bool((rep.get("machine") or {}).get("emulated")) if rep else None,
        "status": res.get("status") if bench else None,
        "error": res.get("error") if bench else None,
        "busy": conditions.get("busy") if bench else None,
        "params": _num(metrics.get("params")) if metrics else _num(res.get("params")),
        "file_kb": None if size is None else size / 1024,
        "file_kb_gz": None if size_gz is None else size_gz / 1024,
        "accuracy": acc,
        "f1": f1,
        "eval_n": n,
        "accuracy_source": acc_source,
        "p50_ms": _num(lat.get("p50_ms")),
        "p99_ms": _num(lat.get("p99_ms")),
        "throughput_sps": _num(lat.get("throughput_sps")),
        "floor_p50_ms": _num(lat.get("floor_p50_ms")),
        "rss_peak_mb": _num(mem.get("rss_peak_mb")),
        "by_batch": {
            int(b): {k: _num(v.get(k)) for k in ("p50_ms", "p99_ms", "throughput_sps")}
            for b, v in sorted((res.get("latency") or {}).items(), key=lambda kv: int(kv[0]))
            if str(b).isdigit() and int(b) > 1 and isinstance(v, dict)
        },
        "pareto": False,
    }


def _ratios(rows: list[dict], baseline: str) -> None:
    """Each row's values over the baseline float row's (same machine for machine-bound ones)."""
    refs = [r for r in rows if r["run"] == baseline and r["variant"] == FLOAT]
    any_ref = next((r for r in refs if r["machine"] is None), refs[0] if refs else None)
    by_machine = {r["machine"]: r for r in refs if r["machine"] is not None}
    for row in rows:
        row["ratios"] = {}
        row["reference"] = any(row is r for r in refs)
        for key, _, kind, bound in COLUMNS:
            ref = by_machine.get(row["machine"]) if bound else (by_machine.get(row["machine"]) or any_ref)
            v, r = row[key], ref[key] if ref else None
            row["ratios"][key] = v / r if _num(v) is not None and _num(r) and kind != "count" else None


def _pareto(rows: list[dict]) -> None:
    """Mark, per machine, the rows no other row beats on both accuracy and p50 latency."""
    machines = {r["machine"] for r in rows if r["machine"] is not None}
    for m in machines:
        pts = [r for r in rows if r["machine"] == m and r["p50_ms"] is not None and r["accuracy"] is not None]
        for r in pts:
            r["pareto"] = not any(
                o is not r
                and o["p50_ms"] <= r["p50_ms"]
                and o["accuracy"] >= r["accuracy"]
                and (o["p50_ms"] < r["p50_ms"] or o["accuracy"] > r["accuracy"])
                for o in pts
            )


def build_rows(runs: list[Run]) -> tuple[list[dict], list[str], dict]:
    """The table rows, the notes (what is missing and which command makes it), the machines."""
    rows: list[dict] = []
    notes: list[str] = []
    machines: dict[str, dict] = {}
    for run in runs:
        notes.extend(run.notes)
        m = run.metrics or {}
        warning = majority_warning(_num(m.get("test_accuracy")), _num(m.get("test_majority_share")), m.get("test_n"))
        if warning:
            notes.append(f"{run.name}: {warning}")
        budget = budgets.from_metrics(m)
        if budget is not None and not budget["met"]:
            notes.append(f"{run.name}: {budgets.status_line(budget)}.")
        kept, epochs = m.get("kept_epoch"), (run.config or {}).get("epochs")
        if isinstance(kept, int) and isinstance(epochs, int) and kept != epochs:
            notes.append(
                f"{run.name}: ships the model of epoch {kept} of {epochs} (--keep-best: {m.get('kept_by')}), "
                "not the last epoch's."
            )
        if run.parity is None:
            notes.append(
                f"{run.name}: not exported yet, so file sizes and INT8 variants are missing; "
                f"{_export_hint(run.root)} makes them."
            )
        bench = _bench_by_variant(run)
        for d in bench.values():
            for m, (_, rep) in d.items():
                machines.setdefault(m, rep.get("machine") or {})
        if not bench:
            notes.append(
                f"{run.name}: not benchmarked yet, so latency and memory are missing; "
                f"{_bench_hint(run.root)} measures them."
            )
        variants = _variants(run)
        known = {v["bench_name"] for v in variants}
        for name in bench:  # models benchmarked under a name export does not know: their own rows
            if name not in known:
                variants.append(
                    {"variant": name, "bench_name": name, "in_bundle": True, "source": None, "recipe": None}
                )
        for v in variants:
            per_machine = bench.get(v["bench_name"] or "", {})
            if not per_machine:
                rows.append(_row(run, v, None, None))
            # Real machines before emulated ones, then by name.
            for m in sorted(per_machine, key=lambda k: (bool(machines[k].get("emulated")), k)):
                rows.append(_row(run, v, m, per_machine[m]))
    for r in rows:
        if r["status"] == "failed":
            notes.append(f"{r['run']}/{r['variant']} on {r['machine']} failed: {r['error']}")
        if r["machine"] is not None and r["p50_ms"] is None and r["status"] == "ok":
            notes.append(
                f"{r['run']}/{r['variant']} on {r['machine']} was benchmarked without batch 1; "
                "re-run bench with --batch 1."
            )
    busy = sorted({r["machine"] for r in rows if r["busy"]})
    if busy:
        notes.append(
            f"other processes were busy on {', '.join(busy)} while measuring; latencies there are "
            "inflated and noisy (bench JSON, `conditions`)."
        )
    emulated = sorted(m for m, info in machines.items() if info.get("emulated"))
    if emulated:
        notes.append(f"{', '.join(emulated)}: emulated, so its timings are not device timings; its accuracy is.")
    return rows, notes, machines


# ---------------------------------------------------------------------------------------------
# formatting


def fmt(value, kind: str) -> str:
    if value is None:
        return DASH
    if kind in ("int", "count"):
        return f"{int(value):,}"
    if kind in ("kb", "mb"):
        return f"{value:,.1f}"
    if kind == "score":
        return f"{value:.4f}"
    if kind == "ms":
        return f"{value:.4f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    if kind == "rate":
        return f"{value:,.0f}"
    return str(value)


def test_acc(metrics: dict) -> str:
    """Training's test accuracy with the number of examples it was measured on."""
    acc, n = metrics.get("test_accuracy"), metrics.get("test_n")
    return fmt(acc, "score") + (f" (n={int(n):,})" if acc is not None and _num(n) is not None else "")


def fmt_ratio(r) -> str:
    if r is None:
        return ""
    return f"{r:.2f}×" if r >= 0.095 else f"{r:.3f}×"


def cell(row: dict, key: str, kind: str) -> str:
    """The value and, unless the row is the reference itself, its ratio to the baseline."""
    text = fmt(row[key], kind)
    ratio = row["ratios"].get(key)
    return text if row["reference"] or ratio is None else f"{text} ({fmt_ratio(ratio)})"


def label_of(row: dict) -> str:
    flags = (" *" if row["pareto"] else "") + ("" if row["in_bundle"] or row["variant"] == FLOAT else " †")
    return row["variant"] + flags


def table_cells(row: dict) -> list[str]:
    return [row["run"], label_of(row), row["machine"] or DASH] + [cell(row, k, kind) for k, _, kind, _ in COLUMNS]


HEADERS = ["run", "variant", "machine"] + [h for _, h, _, _ in COLUMNS]

LEGEND = (
    "Ratios (under each value, or in parentheses) are to the baseline's float model (latency, throughput and "
    "memory: measured on the same machine). * = on the accuracy/latency Pareto front of its "
    "machine; † = an INT8 recipe export tried but did not put in the bundle (not benchmarked). "
    "n = test examples acc and macro-F1 were measured on. Latency and throughput at batch 1."
)


BATCH_HEADERS = ["run", "variant", "machine", "batch", "p50 ms", "p99 ms", "samples/s", "x baseline"]
BATCH_LEGEND = "x baseline: throughput over the baseline float model's, same machine and batch."


def batch_table(result: dict) -> list[list[str]]:
    """Rows measured at batch sizes above 1 (bench --batch 1,64): latency, throughput, and the
    throughput over the baseline float's on the same machine and batch."""
    ref = {
        (r["machine"], b): v["throughput_sps"]
        for r in result["rows"]
        if r.get("reference")
        for b, v in r.get("by_batch", {}).items()
    }
    out = []
    for r in result["rows"]:
        for b, v in r.get("by_batch", {}).items():
            base = ref.get((r["machine"], b))
            ratio = v["throughput_sps"] / base if _num(v["throughput_sps"]) is not None and _num(base) else None
            out.append(
                [r["run"], label_of(r), r["machine"] or DASH, str(b), fmt(v["p50_ms"], "ms"), fmt(v["p99_ms"], "ms")]
                + [fmt(v["throughput_sps"], "rate"), DASH if r.get("reference") or ratio is None else fmt_ratio(ratio)]
            )
    return out


def render(result: dict):
    """The rich table of a report (what `edgeprune report` prints)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"edgeprune report: {', '.join(r['name'] for r in result['runs'])}", box=box.SIMPLE_HEAD)
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i < 3 else "right", no_wrap=True)
    for row in result["rows"]:
        # The ratio goes on a second line so the columns stay narrow enough for a terminal.
        cells = [Text(c) for c in (row["run"], label_of(row), row["machine"] or DASH)]
        for key, _, kind, _ in COLUMNS:
            ratio = row["ratios"].get(key)
            text = Text(fmt(row[key], kind))
            if not row["reference"] and ratio is not None:
                text.append("\n" + fmt_ratio(ratio), style="dim")
            cells.append(text)
        table.add_row(*cells, style="bold" if row["reference"] else None)
    parts = [table, Text(LEGEND, style="dim")]
    batches = batch_table(result)
    if batches:
        bt = Table(title="larger batches", box=box.SIMPLE_HEAD)
        for i, h in enumerate(BATCH_HEADERS):
            bt.add_column(h, justify="left" if i < 3 else "right", no_wrap=True)
        for cells in batches:
            bt.add_row(*cells)
        parts.append(bt)
    parts += [Text(f"note: {n}") for n in result["notes"]]
    return Group(*parts)


def _markdown(result: dict) -> str:
    lines = [
        "# edgeprune report",
        "",
        f"Generated {result['generated']} from "
        + ", ".join(f"`{r['path']}` ({r['role']})" for r in result["runs"])
        + ".",
        "",
    ]
    lines += [
        "## Runs",
        "",
        "| run | role | dataset | model | epochs | limit | pruning | test acc (n) | test macro-F1 | params | train s |",
        "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        m = r["metrics"] or {}
        lines.append(
            f"| {r['name']} | {r['role']} | {r['dataset']} | {r['model']} | {r['epochs']} | "
            f"{r['limit'] if r['limit'] is not None else 'all'} | {r['pruning']} | "
            f"{test_acc(m)} | {fmt(m.get('test_f1'), 'score')} | {fmt(m.get('params'), 'int')} | "
            f"{fmt(m.get('train_seconds'), 'rate')} |"
        )
    for r in result["runs"]:
        lb = r.get("latency_budget")
        if lb:
            measured = lb.get("measured_p50_ms")
            lines.append(
                f"\n{r['name']}: latency budget {lb['target_ms']:g} ms at {lb['threads'] or 'all'} thread(s), "
                f"batch {lb['batch']}: predicted {lb['predicted_ms']:.4f} ms, "
                + (f"measured {measured:.4f} ms at export" if measured is not None else lb.get("note", ""))
                + (f" — {lb['warning']}" if lb.get("warning") else "")
            )
    for r in result["runs"]:
        if r.get("guard"):
            lines += ["", f"{_guard_caption(r)}:", "", "| " + " | ".join(GUARD_HEAD) + " |", "|---|---|---:|---:|---:|"]
            lines += ["| " + " | ".join(row) + " |" for row in r["guard"]]
    lines += [
        "",
        "## Comparison",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * len(COLUMNS)) + "|",
    ]
    for row in result["rows"]:
        cells = [c.replace("|", "\\|").replace("*", "\\*") for c in table_cells(row)]
        if row["reference"]:
            cells = [f"**{c}**" if c != DASH else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", LEGEND, ""]
    batches = batch_table(result)
    if batches:
        lines += [
            "## Larger batches",
            "",
            "| " + " | ".join(BATCH_HEADERS) + " |",
            "|" + "|".join(["---"] * 3 + ["---:"] * (len(BATCH_HEADERS) - 3)) + "|",
        ]
        lines += [
            "| " + " | ".join(c.replace("|", "\\|").replace("*", "\\*") for c in cells) + " |" for cells in batches
        ]
        lines += ["", BATCH_LEGEND, ""]
    if result["machines"]:
        lines += [
            "## Machines",
            "",
            "| machine | CPU | cores | ISA | onnxruntime | emulated |",
            "|---|---|---:|---|---|---|",
        ]
        for name, m in result["machines"].items():
            lines.append(
                f"| {name} | {m.get('cpu_model') or DASH} | {m.get('cores_usable') or DASH} | "
                f"{' '.join(m.get('isa') or []) or DASH} | {m.get('onnxruntime') or DASH} | "
                f"{'yes: ' + str(m.get('emulation_reason')) if m.get('emulated') else 'no'} |"
            )
        lines.append("")
    if result["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines += ["## Figures", ""]
    for key, (file, title) in FIGURES.items():
        if result["figures"].get(key):
            lines += [f"![{title}]({file})", ""]
        else:
            lines += [f"- {title}: {DASH} ({result['figure_notes'].get(key, 'not drawn')})", ""]
    lines += ["What each column and figure means: docs/report.md."]
    return "\n".join(lines) + "\n"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
  max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f5f5f5}td.l,th.l{text-align:left}tr.ref{font-weight:600;background:#fafaf0}
.ratio{color:#777;font-size:12px}.pareto{color:#b5651d}.note{color:#555}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f4f4f4;padding:0 3px}
"""


def _html_cell(row: dict, key: str, kind: str) -> str:
    text = html.escape(fmt(row[key], kind))
    ratio = row["ratios"].get(key)
    if row["reference"] or ratio is None:
        return text
    return f"{text} <span class=ratio>({html.escape(fmt_ratio(ratio))})</span>"


def _html_runs(result: dict) -> str:
    e = html.escape
    head = (
        "run",
        "role",
        "dataset",
        "model",
        "epochs",
        "limit",
        "pruning",
        "test acc (n)",
        "test macro-F1",
        "params",
        "train s",
    )
    out = [
        "<h2>Runs</h2><table><tr>"
        + "".join(f"<th class={'l' if i < 4 or i == 6 else 'r'}>{h}</th>" for i, h in enumerate(head))
        + "</tr>"
    ]
    for r in result["runs"]:
        m = r["metrics"] or {}
        cells = [
            r["name"],
            r["role"],
            r["dataset"],
            r["model"],
            r["epochs"],
            r["limit"] if r["limit"] is not None else "all",
            r["pruning"],
            test_acc(m),
            fmt(m.get("test_f1"), "score"),
            fmt(m.get("params"), "int"),
            fmt(m.get("train_seconds"), "rate"),
        ]
        out.append(
            "<tr>"
            + "".join(f"<td{' class=l' if i < 4 or i == 6 else ''}>{e(str(c))}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    return "".join(out) + "</table>"


def _html(result: dict, out_dir: Path) -> str:
    e = html.escape
    p = [
        (
            f"<!doctype html><html><head><meta charset=utf-8><title>edgeprune report</title><style>{CSS}</style>"
            "</head><body><h1>edgeprune report</h1>"
        ),
        f"<p>Generated {e(result['generated'])} from "
        + ", ".join(f"<code>{e(r['path'])}</code> ({e(r['role'])})" for r in result["runs"])
        + ".</p>",
        _html_runs(result),
        *(
            f"<p>{e(_guard_caption(r))}</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in GUARD_HEAD)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in r["guard"])
            + "</table>"
            for r in result["runs"]
            if r.get("guard")
        ),
        "<h2>Comparison</h2><table><tr>"
        + "".join(f"<th class={'l' if i < 3 else 'r'}>{e(h)}</th>" for i, h in enumerate(HEADERS))
        + "</tr>",
    ]
    for row in result["rows"]:
        variant = (
            e(row["variant"])
            + (" <span class=pareto>*</span>" if row["pareto"] else "")
            + ("" if row["in_bundle"] or row["variant"] == FLOAT else " †")
        )
        cells = [e(row["run"]), variant, e(row["machine"] or DASH)] + [
            _html_cell(row, k, kind) for k, _, kind, _ in COLUMNS
        ]
        p.append(
            f"<tr{' class=ref' if row['reference'] else ''}>"
            + "".join(f"<td{' class=l' if i < 3 else ''}>{c}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    p.append(f"</table><p class=note>{e(LEGEND)}</p>")
    batches = batch_table(result)
    if batches:
        p.append(
            "<h2>Larger batches</h2><table><tr>"
            + "".join(f"<th class={'l' if i < 3 else 'r'}>{e(h)}</th>" for i, h in enumerate(BATCH_HEADERS))
            + "</tr>"
        )
        for cells in batches:
            p.append(
                "<tr>" + "".join(f"<td{' class=l' if i < 3 else ''}>{e(c)}</td>" for i, c in enumerate(cells)) + "</tr>"
            )
        p.append(f"</table><p class=note>{e(BATCH_LEGEND)}</p>")
    if result["machines"]:
        p.append(
            "<h2>Machines</h2><table><tr><th class=l>machine</th><th class=l>CPU</th><th>cores</th>"
            "<th class=l>ISA</th><th class=l>onnxruntime</th><th class=l>emulated</th></tr>"
        )
        for name, m in result["machines"].items():
            p.append(
                f"<tr><td class=l>{e(name)}</td><td class=l>{e(str(m.get('cpu_model') or DASH))}</td>"
                f"<td>{e(str(m.get('cores_usable') or DASH))}</td>"
                f"<td class=l>{e(' '.join(m.get('isa') or []) or DASH)}</td>"
                f"<td class=l>{e(str(m.get('onnxruntime') or DASH))}</td>"
                f"<td class=l>{'yes' if m.get('emulated') else 'no'}</td></tr>"
            )
        p.append("</table>")
    if result["notes"]:
        p.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in result["notes"]) + "</ul>")
    p.append("<h2>Figures</h2>")
    for key, (file, title) in FIGURES.items():
        if result["figures"].get(key):
            data = base64.b64encode((out_dir / file).read_bytes()).decode()
            p.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
        else:
            p.append(f"<p class=note>{e(title)}: {DASH} ({e(result['figure_notes'].get(key, 'not drawn'))})</p>")
    p.append("</body></html>\n")
    return "\n".join(p)


# ---------------------------------------------------------------------------------------------
# the stage


def budget_of(config: dict, pruned: bool) -> str:
    """The run's budget in a few words: what the front compares across runs."""
    if not pruned:
        return "dense"
    if config.get("target_latency_ms") is not None:
        return f"<= {config['target_latency_ms']:g} ms"
    if config.get("target_macs") is not None:
        return f"MACs x{config['target_macs']:g}"
    if config.get("target_params") is not None:
        return f"params x{config['target_params']:g}"
    return f"threshold {config.get('threshold', 0.01):g}"


def _run_summary(run: Run) -> dict:
    c = run.config
    pruning = "off" if not run.pruned else budget_of(c, True) + (f" (preset {c['preset']})" if c.get("preset") else "")
    budget = budgets.from_metrics(run.metrics or {})
    if budget is not None and not budget["met"]:  # the notes say why
        pruning += f", not met: {budgets.frac(budget['reached'])} reached"
    lb = (run.bundle_meta or {}).get("latency_budget")
    m = run.metrics or {}
    if m.get("guard") and m.get("pruning_ended_by"):  # with the accuracy guard, what ended pruning
        pruning += f", ended by the {m['pruning_ended_by']}"
    return {
        "name": run.name,
        "path": str(run.root),
        "role": "pruned" if run.pruned else "baseline",
        "dataset": c.get("dataset"),
        "model": c.get("model"),
        "epochs": c.get("epochs"),
        "limit": c.get("limit"),
        "pruning": pruning,
        "budget": budget_of(c, run.pruned),
        "latency_budget": lb,
        "metrics": run.metrics,
        "widths": run.widths,
        "exported": run.parity is not None,
        "bench_files": [str(f) for f, _ in run.bench],
        "guard": guard_rows(run),
    }


def guard_rows(run: Run) -> list[list[str]]:
    """The accuracy guard's record from history.jsonl, one row per reference, kept, rolled-back
    and stopping step: where, what, the validation figure, the drop in points, live parameters."""
    rows = []
    for record in run.history:
        for e in record.get("guard") or ():
            rows.append(
                [
                    str(e.get("at")),
                    str(e.get("action")),
                    fmt(e.get("value"), "score"),
                    "-" if e.get("action") == "reference" else f"{e.get('drop', 0):+.2f}",
                    fmt(e.get("params_alive"), "int"),
                ]
            )
    return rows


GUARD_HEAD = ("at", "step", "validation", "drop (points)", "live params")


def _guard_caption(r: dict) -> str:
    g = (r["metrics"] or {}).get("guard") or {}
    return (
        f"{r['name']}: accuracy guard, max drop {g.get('max_drop', 0):g} points of validation "
        f"{g.get('metric', 'accuracy')} (n={g.get('n')})" + (" (the default)" if g.get("by_default") else "")
    )


def build_report(paths: list[Path]) -> tuple[dict, list[Run]]:
    """The report as plain data (what report.json holds), and the runs it was made from."""
    runs = load_runs(paths)
    rows, notes, machines = build_rows(runs)
    _ratios(rows, runs[0].name)
    _pareto(rows)
    result = {
        "format": REPORT_FORMAT,
        "generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "baseline": runs[0].name,
        "baseline_is_unpruned": not runs[0].pruned,
        "runs": [_run_summary(r) for r in runs],
        "columns": [{"key": k, "header": h, "machine_bound": b} for k, h, _, b in COLUMNS],
        "rows": rows,
        "machines": machines,
        "notes": notes,
        "figures": {},
        "figure_notes": {},
    }
    if runs[0].pruned:
        notes.insert(0, f"no run was trained with --no-prune, so {runs[0].name} (the first) is the reference.")
    return result, runs


def write_report(paths: list[Path], out: Path | None = None) -> dict:
    """Write report.md, report.html, report.json and the figures into `out` (default: the first run)."""
    from edgeprune import report_plots

    result, runs = build_report(paths)
    out_dir = Path(out) if out is not None else Path(paths[0])
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a directory.")
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = report_plots.draw_all(result, runs, {k: out_dir / f for k, (f, _) in FIGURES.items()})
    for key, (file, _) in FIGURES.items():
        result["figures"][key] = file if drawn.get(key) is True else None
        if drawn.get(key) is not True:
            result["figure_notes"][key] = drawn.get(key) or "not drawn"
            (out_dir / file).unlink(missing_ok=True)  # never leave a figure from an older report
    result["out_dir"] = str(out_dir)
    atomic_write_bytes(out_dir / "report.md", _markdown(result).encode())
    atomic_write_bytes(out_dir / "report.html", _html(result, out_dir).encode())
    atomic_write_json(out_dir / "report.json", result)
    for name in ["report.md", "report.html", "report.json"] + [f for f in result["figures"].values() if f]:
        (out_dir / name).chmod(0o644)  # atomic writes are private; a report is meant to be shared
    return result
