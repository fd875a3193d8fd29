"""The report's figures (matplotlib, Agg): each draws from the report's plain data and returns
True when written, else the reason it could not be drawn (what is missing, which command makes it)."""

from __future__ import annotations

from pathlib import Path

MARKERS = {"float": "o"}  # INT8 recipes and anything else: the cycle below
OTHER_MARKERS = ("s", "D", "^", "v", "P", "X")

# key -> (file written beside report.md, title): the figures every output format lists, in this order.
FIGURES = {
    "pareto": ("report-pareto.png", "Accuracy vs batch-1 latency (Pareto front highlighted)"),
    "widths": ("report-widths.png", "Width of each layer, baseline vs pruned"),
    "training": ("report-training.png", "Training curves: validation accuracy and live parameters"),
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _colors(names: list[str]) -> dict[str, str]:
    cycle = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]
    return {n: cycle[i % len(cycle)] for i, n in enumerate(names)}


def _save(fig, path: Path) -> None:
    import io

    from edgeprune.run import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def pareto(result: dict, path: Path):
    """Accuracy vs batch-1 p50 latency, one panel per machine; the Pareto front joined and ringed."""
    rows = [r for r in result["rows"] if r["machine"] and r["p50_ms"] is not None and r["accuracy"] is not None]
    if not rows:
        return "no latency measured yet; `edgeprune bench RUN/bundle` measures it"
    plt = _pyplot()
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    colors = _colors([r["name"] for r in result["runs"]])
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    markers = {v: MARKERS.get(v, OTHER_MARKERS[i % len(OTHER_MARKERS)]) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(1, len(machines), figsize=(5.2 * len(machines), 4.2), squeeze=False)
    for ax, machine in zip(axes[0], machines):
        pts = [r for r in rows if r["machine"] == machine]
        front = sorted((r for r in pts if r["pareto"]), key=lambda r: r["p50_ms"])
        if front:
            # The front as a staircase: nothing below-right of it is worth shipping.
            xs, ys = [front[0]["p50_ms"]], [front[0]["accuracy"]]
            for r in front[1:]:
                xs += [r["p50_ms"], r["p50_ms"]]
                ys += [ys[-1], r["accuracy"]]
            ax.plot(xs, ys, color="#f0a030", lw=6, alpha=0.35, solid_capstyle="round", zorder=1, label="Pareto front")
        # Neighbouring points often nearly coincide (float vs INT8 of one run): stagger the labels.
        offsets = ((7, -12, "left"), (7, 6, "left"), (-7, -12, "right"), (-7, 6, "right"))
        for i, r in enumerate(sorted(pts, key=lambda r: (r["accuracy"], r["p50_ms"]))):
            ax.scatter(
                r["p50_ms"],
                r["accuracy"],
                s=70,
                marker=markers[r["variant"]],
                color=colors.get(r["run"]),
                edgecolors="black" if r["pareto"] else "none",
                linewidths=1.5,
                zorder=3,
            )
            dx, dy, ha = offsets[i % len(offsets)]
            ax.annotate(
                f"{r['run']}/{r['variant']}" + (f" [{r['budget']}]" if r.get("budget") else ""),
                (r["p50_ms"], r["accuracy"]),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=8,
                ha=ha,
            )
        ax.set_title(machine + (" — timings not device timings" if "emulated" in machine else ""), fontsize=10)
        ax.set_xlabel("p50 latency, batch 1 (ms)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.margins(x=0.25, y=0.15)
    handles = [
        plt.Line2D([], [], ls="", marker="o", color=c, label=n)
        for n, c in colors.items()
        if any(r["run"] == n for r in rows)
    ]
    handles += [plt.Line2D([], [], ls="", marker=m, color="gray", label=v) for v, m in markers.items()]
    handles += [plt.Line2D([], [], color="#f0a030", lw=6, alpha=0.35, label="Pareto front")]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle("Accuracy vs measured latency across runs and budgets (up and left is better)")
    _save(fig, path)
    plt.close(fig)
    return True


def widths(result: dict, path: Path):
    """Grouped bars: the width of each layer in every run, the baseline first."""
    runs = [r for r in result["runs"] if r["widths"]]
    if not runs:
        return "no layer widths yet; they come from training (metrics.json)"
    plt = _pyplot()
    # vocabulary rows (thousands) would flatten every other bar: they go into the legend instead
    layers = list(dict.fromkeys(layer for r in runs for layer in r["widths"] if layer != "vocab"))
    colors = _colors([r["name"] for r in result["runs"]])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(layers) * max(1, len(runs)) ** 0.5 + 2), 4.0))
    step = 0.8 / len(runs)
    for i, run in enumerate(runs):
        xs = [j - 0.4 + step * (i + 0.5) for j in range(len(layers))]
        hs = [run["widths"].get(layer, 0) for layer in layers]
        vocab = f"; vocabulary {run['widths']['vocab']:,} rows" if "vocab" in run["widths"] else ""
        label = f"{run['name']} ({run['role']}{vocab})"
        bars = ax.bar(xs, hs, width=step * 0.95, color=colors[run["name"]], label=label)
        ax.bar_label(bars, fontsize=8, padding=1)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylabel("width (units: channels, features, hidden units)")
    ax.set_title("Width of each layer")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return True


def training(runs_data: list, path: Path, names: list[str]):
    """Two panels over epochs: validation accuracy, and live parameters (log scale)."""
    runs = [r for r in runs_data if r.history]
    if not runs:
        return "no training history yet; `edgeprune train` writes history.jsonl"
    plt = _pyplot()
    colors = _colors(names)
    fig, (acc_ax, par_ax) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    for run in runs:
        ep = [h.get("epoch") for h in run.history]
        acc = [h.get("val_accuracy") for h in run.history]
        params = [h.get("params_alive") for h in run.history]
        c = colors.get(run.name)
        acc_ax.plot(ep, acc, marker="o", color=c, label=run.name)
        par_ax.plot(ep, params, marker="o", color=c, label=run.name)
        # Epochs in which units were removed: where the structure changed.
        cut = [h.get("epoch") for h in run.history if h.get("phase") == "prune"]
        if cut:
            par_ax.scatter(
                cut,
                [h.get("params_alive") for h in run.history if h.get("phase") == "prune"],
                s=110,
                facecolors="none",
                edgecolors=c,
                zorder=3,
            )
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.set_title("Validation accuracy")
    par_ax.set_xlabel("epoch")
    par_ax.set_ylabel("live parameters")
    par_ax.set_yscale("log")
    par_ax.set_title("Live parameters (ringed: pruning epochs)")
    from matplotlib.ticker import MaxNLocator

    for ax in (acc_ax, par_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True


def draw_all(result: dict, runs: list, paths: dict[str, Path]) -> dict:
    """{figure key: True or the reason it was not drawn}."""
    return {
        "pareto": pareto(result, paths["pareto"]),
        "widths": widths(result, paths["widths"]),
        "training": training(runs, paths["training"], [r.name for r in runs]),
    }
