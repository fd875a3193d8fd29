"""Values as text, shared by every output format, and the two text outputs: the terminal's rich
table (`render`) and report.md (`to_markdown`)."""

from __future__ import annotations

from edgeprune.report.plots import FIGURES
from edgeprune.report.rows import COLUMNS, FLOAT, num

DASH = "—"


def fmt(value, kind: str) -> str:
    """One value as the report writes it; `kind` is a COLUMNS number format, None is a dash."""
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
    return fmt(acc, "score") + (f" (n={int(n):,})" if acc is not None and num(n) is not None else "")


def fmt_ratio(r) -> str:
    """A ratio to the baseline as "0.25×" (three decimals below 0.095); empty for None."""
    if r is None:
        return ""
    return f"{r:.2f}×" if r >= 0.095 else f"{r:.3f}×"


def cell(row: dict, key: str, kind: str) -> str:
    """The value and, unless the row is the reference itself, its ratio to the baseline."""
    text = fmt(row[key], kind)
    ratio = row["ratios"].get(key)
    return text if row["reference"] or ratio is None else f"{text} ({fmt_ratio(ratio)})"


def label_of(row: dict) -> str:
    """The variant with its marks: * on the Pareto front, † an INT8 recipe left out of the bundle."""
    flags = (" *" if row["pareto"] else "") + ("" if row["in_bundle"] or row["variant"] == FLOAT else " †")
    return row["variant"] + flags


def table_cells(row: dict) -> list[str]:
    """A comparison row as text cells in HEADERS order, ratios in parentheses."""
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
            ratio = v["throughput_sps"] / base if num(v["throughput_sps"]) is not None and num(base) else None
            out.append(
                [r["run"], label_of(r), r["machine"] or DASH, str(b), fmt(v["p50_ms"], "ms"), fmt(v["p99_ms"], "ms")]
                + [fmt(v["throughput_sps"], "rate"), DASH if r.get("reference") or ratio is None else fmt_ratio(ratio)]
            )
    return out


GUARD_HEAD = ("at", "step", "validation", "before the step", "est. drop (points)", "live params")


def guard_caption(r: dict) -> str:
    """The line above a run's accuracy-guard table: its max drop, metric and validation size."""
    g = (r["metrics"] or {}).get("guard") or {}
    return (
        f"{r['name']}: accuracy guard, max drop {g.get('max_drop', 0):g} points of validation "
        f"{g.get('metric', 'accuracy')} (n={g.get('n')})"
        + (" (the default)" if g.get("by_default") else "")
        + (
            f", each step judged after {g['recovery_steps']} step(s) of training "
            f"({g.get('discarded_steps', 0)} discarded by rollbacks)"
            if g.get("recovery_steps")
            else ""
        )
    )


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


def to_markdown(result: dict) -> str:
    """report.md: the runs, the comparison, larger batches, machines, notes and figures."""
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
            head = ["| " + " | ".join(GUARD_HEAD) + " |", "|---|---|" + "---:|" * (len(GUARD_HEAD) - 2)]
            lines += ["", f"{guard_caption(r)}:", "", *head]
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
