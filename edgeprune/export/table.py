"""The rich table `edgeprune export` prints: what was written, how big, how exact, how accurate."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text


def _kb(n) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"


def render(summary: dict) -> Group:
    table = Table(title=f"edgeprune export: {summary['run']}", box=box.SIMPLE_HEAD)
    for col, justify in (
        ("variant", "left"),
        ("file", "left"),
        ("KB raw/gz", "right"),
        ("nodes", "right"),
        ("max|diff|", "right"),
        ("acc", "right"),
        ("macro-F1", "right"),
        ("p50 ms", "right"),
    ):
        table.add_column(col, justify=justify, min_width=23 if col == "file" else None, no_wrap=True)
    kept = summary.get("int8_kept")
    for r in summary["variants"]:
        chosen = (r["name"] == "simplified" and summary["chosen"] == "float") or (
            r["name"] == kept and summary["chosen"] == "int8"
        )
        lat = r.get("latency_p50_ms")
        table.add_row(
            r["name"] + (" *" if chosen else ""),
            r["file"],
            f"{_kb(r['size_bytes'])}/{_kb(r['size_gz_bytes'])}",
            "-" if r["nodes"] is None else str(r["nodes"]),
            f"{r['max_abs_diff']:.0e}",
            f"{r['accuracy']:.4f}",
            f"{r['f1']:.4f}",
            "-" if lat is None else f"{lat:.3f}",
        )
    simp = summary["simplifier"]
    lines = [
        f"simplifier: {simp['used']} ({simp['nodes_before']} -> {simp['nodes_after']} nodes)"
        + (f"; fell back: {simp['fallback_reason']}" if simp.get("fallback_reason") else "")
    ]
    lines.append(f"default: {summary['chosen']}" + (f" (int8 = {kept})" if kept else "") + f": {summary['reason']}")
    whole = (summary.get("options") or {}).get("eval_limit") is None
    lines.append(
        f"accuracy and macro-F1 on {summary['eval_n']:,} test examples"
        + (" (the whole test split)" if whole else " (--eval-limit)")
        + "; * = the bundle's default"
    )
    for r in summary.get("runtimes") or []:
        if r["status"] == "ok":
            lines.append(
                f"{r['runtime']} {r['variant']}: ok, {r['file']} (max|diff| vs onnxruntime {r['max_abs_diff']:.0e}, "
                f"top-1 agreement {r['top1_agreement']:.1%}, acc {r['accuracy']:.4f})"
            )
        else:
            lines.append(f"{r['runtime']} {r['variant']}: {r['status']}: {r['reason']}")
    choice = summary.get("runtime")
    if choice and summary.get("runtimes"):
        lines.append(f"ships on {choice['name']} ({choice['model']}, {choice['file']}): {choice['chosen_by']}")
    lb = summary.get("latency_budget")
    if lb:
        measured = lb.get("measured_p50_ms")
        where = f"measured {measured:.4f} ms here" if measured is not None else lb.get("note", "not measured here")
        lines.append(
            f"latency budget {lb['target_ms']:g} ms on {lb.get('runtime') or 'onnxruntime'} "
            f"({lb['threads'] or 'all'} thread(s), batch {lb['batch']}): "
            f"predicted {lb['predicted_ms']:.4f} ms, {where}"
        )
        if lb.get("warning"):
            lines.append(f"warning: {lb['warning']}")
    lines.append(
        f"wrote {summary['export_dir']}/ and {summary['bundle_dir']}/"
        + (f" and {summary['tar']}" if summary.get("tar") else "")
    )
    return Group(table, *(Text(line) for line in lines))
