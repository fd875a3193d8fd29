"""The comparison's rows: one per (run, variant, machine), each value also as a ratio to the
baseline's float model (on the same machine for machine-bound figures), and the Pareto front.

Variants are the float ONNX model and every INT8 recipe in export/parity.json; machines are the
`machine` blocks of RUN/bench/*.json.
"""

from __future__ import annotations

from pathlib import Path

from edgeprune.bench.metrics import majority_warning
from edgeprune.prune import budget as budgets
from edgeprune.prune.schedule import PruneSchedule
from edgeprune.report.load import Run

FLOAT = "float"

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


def _export_hint(root: Path) -> str:
    return f"`edgeprune export {root}`"


def _bench_hint(root: Path) -> str:
    return f"`edgeprune bench {root / 'bundle'}`"


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


def num(v):
    """`v` when it is a number (bools are not), else None: JSON from older or foreign runs may hold anything."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _row(run: Run, variant: dict, machine: str | None, bench: tuple[dict, dict] | None) -> dict:
    src = variant["source"] or {}
    res, rep = bench if bench else ({}, {})
    metrics = run.metrics or {}
    lat = (res.get("latency") or {}).get("1") or {}
    mem = res.get("memory") or {}
    size = num(src.get("size_bytes")) if variant["source"] else None
    size_gz = num(src.get("size_gz_bytes")) if variant["source"] else None
    if size is None:
        size, size_gz = num(res.get("file_bytes")), num(res.get("file_bytes_gz"))
    # Accuracy as measured where the row's latency was measured, else by export, else by training.
    if num(res.get("accuracy")) is not None:
        acc, f1, n, acc_source = res["accuracy"], num(res.get("f1")), res.get("eval_n"), "bench"
    elif variant["source"] and num(src.get("accuracy")) is not None:
        acc, f1, n, acc_source = src["accuracy"], num(src.get("f1")), src.get("eval_n"), "export"
    elif variant["variant"] == FLOAT and num(metrics.get("test_accuracy")) is not None:
        acc, f1, n, acc_source = metrics["test_accuracy"], num(metrics.get("test_f1")), metrics.get("test_n"), "train"
    else:
        acc = f1 = n = acc_source = None
    conditions = rep.get("conditions") or {}
    return {
        "run": run.name,
        "run_dir": str(run.root),
        "role": "pruned" if run.pruned else "baseline",
        "budget": budget_of(run.config, run.pruned),
        "predicted_ms": num(metrics.get("latency_ms_predicted")) if variant["variant"] == FLOAT else None,
        "variant": variant["variant"],
        "recipe": variant["recipe"],
        "in_bundle": variant["in_bundle"],
        "machine": machine,
        "emulated": bool((rep.get("machine") or {}).get("emulated")) if rep else None,
        "status": res.get("status") if bench else None,
        "error": res.get("error") if bench else None,
        "busy": conditions.get("busy") if bench else None,
        "params": num(metrics.get("params")) if metrics else num(res.get("params")),
        "file_kb": None if size is None else size / 1024,
        "file_kb_gz": None if size_gz is None else size_gz / 1024,
        "accuracy": acc,
        "f1": f1,
        "eval_n": n,
        "accuracy_source": acc_source,
        "p50_ms": num(lat.get("p50_ms")),
        "p99_ms": num(lat.get("p99_ms")),
        "throughput_sps": num(lat.get("throughput_sps")),
        "floor_p50_ms": num(lat.get("floor_p50_ms")),
        "rss_peak_mb": num(mem.get("rss_peak_mb")),
        "by_batch": {
            int(b): {k: num(v.get(k)) for k in ("p50_ms", "p99_ms", "throughput_sps")}
            for b, v in sorted((res.get("latency") or {}).items(), key=lambda kv: int(kv[0]))
            if str(b).isdigit() and int(b) > 1 and isinstance(v, dict)
        },
        "pareto": False,
    }


def add_ratios(rows: list[dict], baseline: str) -> None:
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
            row["ratios"][key] = v / r if num(v) is not None and num(r) and kind != "count" else None


def mark_pareto(rows: list[dict]) -> None:
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
        warning = majority_warning(num(m.get("test_accuracy")), num(m.get("test_majority_share")), m.get("test_n"))
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


def budget_of(config: dict, pruned: bool) -> str:
    """The run's budget in a few words: what the front compares across runs."""
    # The report's one reading of a run's budget: the precedence (latency, else MACs, else
    # parameters) is prune.budget.Budget's; without a budget, the threshold.
    if not pruned:
        return "dense"
    budget = budgets.Budget.from_config(config)
    if budget is not None:
        return budget.short()
    return f"threshold {config.get('threshold', PruneSchedule.threshold):g}"
