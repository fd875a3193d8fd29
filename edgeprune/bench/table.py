"""The on-screen summary of a benchmark report (rich): a model table and a latency table.

Two narrow tables rather than one wide one, so they stay readable in an 80-column ssh session
on a device.
"""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from edgeprune.bench.runtimes import label


def _num(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if v < 0.1 else f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _rate(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e4 else f"{v:.0f}"


def _kib(row: dict) -> str:
    if row["file_bytes"] is None:
        return "-"
    return f"{row['file_bytes'] / 1024:,.0f} ({_num(row['file_bytes_gz'] and row['file_bytes_gz'] / 1024, '{:,.0f}')})"


def machine_line(machine: dict, settings: dict, conditions: dict | None = None) -> Text:
    runs = f"{settings['runs']} runs" if settings["runs"] else f"{settings['seconds']} s per batch"
    text = Text(
        f"{machine['cpu_model'] or machine['machine']} ({machine['machine']}; "
        f"{' '.join(machine['isa']) or 'no SIMD flags read'}), onnxruntime "
        f"{machine['onnxruntime']}, {settings['threads']} threads "
        f"({settings['threads_source']}); {settings['rounds']} rounds x {runs}, "
        f"warm-up {settings['warmup']}; label {settings['label']}"
    )
    if conditions and conditions.get("busy"):
        text.append(
            f"\nBUSY MACHINE: other processes used {conditions['background_cpu_cores']:.2f} "
            f"cores (+{conditions['steal_cpu_cores']:.2f} stolen by the hypervisor) on "
            "average while measuring; latencies are inflated and noisy",
            style="bold yellow",
        )
    if machine["emulated"]:
        text.append(f"\nEMULATED ({machine['emulation_reason']}): not device timings", style="bold yellow")
    return text


def models_table(report: dict) -> Table:
    counts = sorted({r["eval_n"] for r in report["results"] if r.get("eval_n")})
    caption = (
        f"acc and macro-F1 on the bundle's eval.npz: {' / '.join(f'{n:,}' for n in counts)} examples"
        if counts
        else None
    )
    table = Table(title="models", box=box.SIMPLE_HEAD, caption=caption, caption_justify="left")
    # The runtime column only when there is more than onnxruntime: the default table keeps its 80 columns.
    several = any((r.get("runtime") or "onnxruntime") != "onnxruntime" for r in report["results"])
    cols = ("model", "runtime", "status", "acc", "macro-F1", "RSS MiB\nbefore/load/peak", "KiB\n(gz)", "params")
    for col in cols if several else tuple(c for c in cols if c != "runtime"):
        if col in ("model", "status"):
            # status keeps a width: at 80 columns with a runtime column it was squeezed to nothing, hiding a failure
            table.add_column(col, overflow="fold", min_width=12 if col == "model" else 10)
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for row in report["results"]:
        mem = row["memory"]
        rss = f"{mem['rss_before_mb']:.0f}/{mem['rss_after_load_mb']:.0f}/{mem['rss_peak_mb']:.0f}" if mem else "-"
        if row["status"] == "ok":
            status = Text("ok", style="green")
        elif row["status"] == "skipped":
            status = Text(f"SKIPPED: {row['error']}", style="bold yellow")
        else:
            status = Text(f"FAILED: {row['error']}", style="bold red")
        table.add_row(
            row["name"],
            *((label(row.get("runtime") or "onnxruntime", row.get("precision")),) if several else ()),
            status,
            _num(row["accuracy"], "{:.4f}"),
            _num(row["f1"], "{:.4f}"),
            rss,
            _kib(row),
            _num(row["params"], "{:,}"),
        )
    return table


def latency_table(report: dict) -> Table:
    table = Table(
        title="latency (ms)",
        box=box.SIMPLE_HEAD,
        caption=machine_line(report["machine"], report["settings"], report.get("conditions")),
        caption_justify="left",
    )
    # "rnd med"/"rnd min": median and minimum of the per-round medians; "floor": the p50 of an
    # Identity model with the same inputs (docs/bench.md).
    # p90 stays in the JSON; without it the table fits 80 columns.
    for col in ("model", "batch", "p50", "p99", "rnd med", "rnd min", "floor", "samp/s"):
        if col == "model":
            table.add_column(col, overflow="fold", min_width=8)
        else:
            table.add_column(col, justify="right", no_wrap=True)
    keys = ("p50_ms", "p99_ms", "round_median_ms", "round_min_ms", "floor_p50_ms")
    for row in report["results"]:
        name = row["name"] + (" *" if row.get("ship") else "")
        for j, (batch, lat) in enumerate(row["latency"].items()):
            table.add_row(name if j == 0 else "", batch, *(_ms(lat[k]) for k in keys), _rate(lat["throughput_sps"]))
    return table


def ship_lines(report: dict) -> list[Text]:
    """One line per model: the variant to ship (* in the latency table) and why."""
    lines = []
    for c in report.get("ship") or []:
        if c.get("name") is None:
            lines.append(Text(f"ship {c['group']}: nothing ({c['reason']})", style="yellow"))
            continue
        speedup = c.get("speedup_vs_onnxruntime_float")
        vs = f", {speedup:.2f}x onnxruntime float" if speedup is not None else ""
        lines.append(
            Text(
                f"* ship {c['name']} ({label(c['runtime'], c.get('precision'))}, {c['variant']}): "
                f"p50 {_ms(c['p50_ms'])} ms{vs}; {c['reason']}"
            )
        )
    return lines


def render(report: dict) -> Group:
    return Group(models_table(report), latency_table(report), *ship_lines(report))
