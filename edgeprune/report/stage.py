"""The report stage: the report as plain data (what report.json holds) from run directories, and
report.md, report.html, report.json and the figures written into one directory."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from edgeprune.errors import UserError
from edgeprune.prune import budget as budgets
from edgeprune.report.html import to_html
from edgeprune.report.load import Run, load_runs
from edgeprune.report.plots import FIGURES, draw_all
from edgeprune.report.rows import COLUMNS, add_ratios, budget_of, build_rows, mark_pareto
from edgeprune.report.text import fmt, to_markdown
from edgeprune.run import atomic_write_bytes, atomic_write_json

REPORT_FORMAT = 1


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


NO_ESTIMATE = ("reference", "passed")  # guard records with no drop estimate of their own


def guard_rows(run: Run) -> list[list[str]]:
    """The accuracy guard's record from history.jsonl, one row per reference, kept, rolled-back
    and stopping step and per pruning point passed (with why): where, what, the validation figure,
    the model's just before the step, the estimated drop under the dense model in points (the kept
    steps' costs added up with this one's; the drop under the reference for records that have no
    estimate), live parameters."""
    rows = []
    for record in run.history:
        for e in record.get("guard") or ():
            rows.append(
                [
                    str(e.get("at")),
                    str(e.get("action")) + (f": {e['why']}" if e.get("why") else ""),
                    fmt(e.get("value"), "score"),
                    fmt(e.get("before"), "score"),
                    "-" if e.get("action") in NO_ESTIMATE else f"{e.get('estimate', e.get('drop', 0)):+.2f}",
                    fmt(e.get("params_alive"), "int"),
                ]
            )
    return rows


def build_report(paths: list[Path]) -> tuple[dict, list[Run]]:
    """The report as plain data (what report.json holds), and the runs it was made from."""
    runs = load_runs(paths)
    rows, notes, machines = build_rows(runs)
    add_ratios(rows, runs[0].name)
    mark_pareto(rows)
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
    result, runs = build_report(paths)
    out_dir = Path(out) if out is not None else Path(paths[0])
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a directory.")
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = draw_all(result, runs, {k: out_dir / f for k, (f, _) in FIGURES.items()})
    for key, (file, _) in FIGURES.items():
        result["figures"][key] = file if drawn.get(key) is True else None
        if drawn.get(key) is not True:
            result["figure_notes"][key] = drawn.get(key) or "not drawn"
            (out_dir / file).unlink(missing_ok=True)  # never leave a figure from an older report
    result["out_dir"] = str(out_dir)
    atomic_write_bytes(out_dir / "report.md", to_markdown(result).encode())
    atomic_write_bytes(out_dir / "report.html", to_html(result, out_dir).encode())
    atomic_write_json(out_dir / "report.json", result)
    for name in ["report.md", "report.html", "report.json"] + [f for f in result["figures"].values() if f]:
        (out_dir / name).chmod(0o644)  # atomic writes are private; a report is meant to be shared
    return result
