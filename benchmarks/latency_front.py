"""Accuracy against measured latency for budgets in parameters, in MACs and in milliseconds.

The study's CNN (or --model) on real Fashion-MNIST, one onnxruntime thread, batch 1, this machine:
1. one latency table of the model is measured here (32 probes, `edgeprune probes` + `edgeprune
   bench --latency-probes`), shared by every latency-budget run (`--latency-table`);
2. edgeprune trains, two at a time (one thread each): the dense baseline with the pruned runs'
   recipe, parameter budgets, MACs budgets and latency budgets (multiples of onnxruntime's own
   per-call floor on this machine, measured in step 1's table as the smallest probe's floor);
   with --match-latency also one latency budget per parameter and MACs run, set to the table's
   prediction for that run's finished model, so each pair is compared at the same predicted ms;
3. Torch-Pruning (Taylor) prunes the same model on the same schedule to each parameter budget's
   (or, with --tp-match macs, each MACs budget's) final size (benchmarks/torch_pruning_compare.py),
   exported with edgeprune's exporter; it trains in the same queue, two at a time;
4. every model is exported (float) and all are timed in one interleaved onnxruntime bench.

Targets (the latency-budget issue): the latency-budget runs dominate the others on the
accuracy/p50 front; one of them is within 2.5x of onnxruntime's floor with at most 0.5 points
lost against the same-recipe baseline. Every run uses --round-to 16 by default (on AVX-512 CPUs
channel counts off multiples of 16 run slower than their MACs say; see docs/bench.md).

    python benchmarks/latency_front.py --epochs 50

Any other model edgeprune trains, with latency budgets as fractions of the dense model's measured
latency (its `full` probe) and Torch-Pruning matched to the MACs budgets, for example the
any-model issue's ResNet-20:

    python benchmarks/latency_front.py --model resnet20 --epochs 10 --round-to 8 --params 0.5 \
        --macs 0.5 --floors --fractions 0.8 0.65 --tp-match macs
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import record
from prune_vs_baseline import train

from edgeprune.bench import bench, make_settings
from edgeprune.bench.discover import discover
from edgeprune.bench.runner import run_dir_files
from edgeprune.export import export_run
from edgeprune.latency.model import LatencyModel
from edgeprune.report import write_report
from edgeprune.run import atomic_write_json

HERE = Path(__file__).resolve().parent
RECIPE = ["--finetune-lr", "cosine", "--distill", "0.5"]


WAIT = "wait"  # what a job's start() returns while what it needs is still training


def run_all(jobs: list[tuple[Path, object]], at_once: int = 2):
    """Start every (out, start) job, `at_once` at a time, the first ready one first; `start()`
    returns a Popen, None when the job finished in an earlier call (its results are reused), or
    WAIT while a run it depends on is still training."""
    pending, running = list(jobs), []
    while pending or running:
        for job in list(pending):
            if len(running) >= at_once:
                break
            p = job[1]()
            if p is WAIT:
                continue
            pending.remove(job)
            if p is not None:
                running.append((job[0], p))
        if pending and not running:
            sys.exit(f"{pending[0][0]} waits for a run that is not in the queue")
        for out, p in list(running):
            if p.poll() is not None:
                running.remove((out, p))
                if p.returncode != 0:
                    for _, other in running:  # a re-run resumes them; two at once in one directory would not do
                        other.terminate()
                        other.wait()
                    sys.exit(f"{out} failed; see its log beside it ({out.parent})")
        time.sleep(2)


def edgeprune_job(out: Path, flags: list[str], dataset: str, epochs: int, limit: int | None):
    def start():
        out.parent.mkdir(parents=True, exist_ok=True)
        return train(out, dataset, epochs, flags, limit)

    return out, start


def torch_pruning_job(match: Path, onnx: Path, result: Path):
    """Torch-Pruning on `match`'s schedule toward its final size (parameters, or MACs for a MACs
    budget), started once `match` has finished."""

    def start():
        if result.exists() and onnx.exists():
            return None
        if not (match / "metrics.json").exists():
            return WAIT  # aim at the match's final size, not at its budget while it trains
        onnx.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HERE / "torch_pruning_compare.py"), "--match", str(match), "--onnx", str(onnx)]
        cmd += ["--name", result.stem]
        return subprocess.Popen(cmd, stdout=open(onnx.with_suffix(".log"), "w"), stderr=subprocess.STDOUT)

    return onnx, start


def predicted_ms(lm: LatencyModel, run: Path) -> float:
    """The table's prediction for a finished run's model (its compacted tensor shapes)."""
    sd = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    return lm.predict_shapes({k: tuple(v.shape) for k, v in sd.items()})


def matched_latency_job(out: Path, match: Path, table: Path, lm: LatencyModel, min_ms: float, flags, data):
    """A latency budget equal to the table's prediction for `match`'s finished model: at the same
    predicted ms, which allocation of the channels is the more accurate? Skipped when `match` sits
    at the smallest model (`min_ms` predicted), where every budget gives the same widths."""

    def start():
        if (out / "config.json").exists():
            budget = json.loads((out / "config.json").read_text())["config"]["target_latency_ms"]
        elif not (match / "metrics.json").exists():
            return WAIT
        else:
            # rounded up: rounded down, the match's own widths would exceed the budget by under
            # 1e-6 ms and the twin would prune one notch more than its match (seen on seed 1)
            budget = math.ceil(predicted_ms(lm, match) * 1e6) / 1e6
            if budget <= 1.01 * min_ms:
                print(f"{match.name} has every layer at its minimum width: no latency budget can differ from it")
                return None
        budget_flags = ["--target-latency-ms", str(budget), "--latency-table", str(table), *flags]
        return edgeprune_job(out, budget_flags, *data)[1]()

    return out, start


def label_offsets(points: list[dict], step: float = 9.0) -> list[float]:
    """Vertical label offsets (in points) that stack the labels of runs whose labels would overlap
    (under 20% of the p50 span apart, a label's width, and 3% of the accuracy span) instead of
    printing them over each other."""
    xs, ys = [p["p50_ms"] for p in points], [p["accuracy"] for p in points]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    offsets: list[float] = []
    for i in range(len(points)):
        near = [offsets[j] for j in range(i) if abs(xs[j] - xs[i]) < 0.2 * sx and abs(ys[j] - ys[i]) < 0.03 * sy]
        dy = 3.0
        while dy in near:
            dy -= step
        offsets.append(dy)
    return offsets


def draw_front(points: list[dict], path: Path, title: str) -> None:
    """Accuracy against measured p50, one marker per budget kind, the front (nothing both faster
    and more accurate) joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {
        "baseline": ("black", "s"),
        "params": ("tab:blue", "o"),
        "macs": ("tab:orange", "D"),
        "latency": ("tab:green", "*"),
        "torch-pruning": ("tab:red", "x"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for kind, (color, marker) in style.items():
        pts = [p for p in points if p["kind"] == kind]
        if pts:
            ax.scatter([p["p50_ms"] for p in pts], [100 * p["accuracy"] for p in pts], c=color, marker=marker,
                       s=90 if marker == "*" else 45, label=kind, zorder=3)  # fmt: skip
    for p, dy in zip(points, label_offsets(points)):
        ax.annotate(p["name"], (p["p50_ms"], 100 * p["accuracy"]), fontsize=7, xytext=(4, dy),
                    textcoords="offset points")  # fmt: skip
    front = sorted((p for p in points if not p["dominated_by"]), key=lambda p: p["p50_ms"])
    ax.step([p["p50_ms"] for p in front], [100 * p["accuracy"] for p in front], where="post", color="0.7", zorder=1,
            label="front")  # fmt: skip
    ax.set_xlabel("measured p50, batch 1, one onnxruntime thread (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title + " (up and left is better)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--params", type=float, nargs="*", default=[0.1, 0.05])
    ap.add_argument("--macs", type=float, nargs="*", default=[0.2, 0.1])
    ap.add_argument(
        "--floors", type=float, nargs="*", default=[2.5, 3.5, 4.5, 6.0], help="latency budgets, x the floor"
    )
    ap.add_argument(
        "--fractions", type=float, nargs="*", default=[], help="latency budgets, x the dense model's measured p50"
    )
    ap.add_argument(
        "--match-latency",
        action="store_true",
        help="also a latency budget at the table's predicted ms of each finished parameter and MACs run",
    )
    ap.add_argument("--model", help="any model `edgeprune train --model` takes (default: the dataset's own)")
    ap.add_argument("--round-to", type=int, default=16, help="every run's --round-to (and the probes')")
    ap.add_argument(
        "--tp-match", choices=["params", "macs"], default="params", help="the budgets Torch-Pruning is matched to"
    )
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-latency"))
    ap.add_argument("--seed", type=int, default=0, help="every run's --seed (Torch-Pruning follows its match's)")
    ap.add_argument("--bench-runs", type=int, default=300)
    ap.add_argument("--name", help="results file name (default latency_front_[<model>_]<dataset>_<epochs>ep)")
    args = ap.parse_args()
    tag = f"{args.model.replace(':', '-').replace('/', '-')}_" if args.model else ""
    tag += f"r{args.round_to}_" if args.round_to != 16 else ""  # runs of another rounding are other runs
    tag += f"s{args.seed}_" if args.seed else ""
    name = args.name or f"latency_front_{tag}{args.dataset}_{args.epochs}ep"
    root = args.runs_dir / name
    common = [
        "--round-to",
        str(args.round_to),
        "--seed",
        str(args.seed),
        *(["--model", args.model] if args.model else []),
    ]
    base = root / "baseline"

    # 1. the latency table, from the baseline's configuration (it needs no weights)
    table = root / "latency.json"
    if not table.exists():
        seed_run = root / "table-seed"
        root.mkdir(parents=True, exist_ok=True)
        p = train(seed_run, args.dataset, 1, ["--no-prune", *common], 64)  # config.json for `edgeprune probes`
        if p is not None and p.wait() != 0:
            sys.exit("could not start the run the probes are made from")
        ep = [sys.executable, "-m", "edgeprune"]
        probes = [*ep, "probes", str(seed_run), "--round-to", str(args.round_to), "--out", str(root / "probes")]
        subprocess.run(probes, check=True)
        subprocess.run(
            [*ep, "bench", "--latency-probes", str(root / "probes"), "--threads", "1", "--json", str(table)],
            check=True,
        )
    tab = json.loads(table.read_text())
    floor = min(s["floor_p50_ms"] for s in tab["samples"] if s.get("floor_p50_ms"))
    # the model with every layer at its minimum width: no channel budget can go below it
    smallest = min((s for s in tab["samples"] if s.get("p50_ms")), key=lambda s: s["params"])
    dense = max((s for s in tab["samples"] if s.get("p50_ms")), key=lambda s: s["params"])
    wanted = {f"{f:g}x": f * floor for f in args.floors}
    wanted |= {f"{f:g}xdense": f * dense["p50_ms"] for f in args.fractions}
    reachable = {k: round(t, 5) for k, t in wanted.items() if t > 1.05 * smallest["p50_ms"]}
    unreachable = {k: round(t, 5) for k, t in wanted.items() if k not in reachable}
    if unreachable:
        print(
            f"latency budgets {sorted(unreachable.values())} ms are under the smallest probe's "
            f"{smallest['p50_ms']:.4f} ms (every layer at its minimum width): not trained"
        )

    # 2. edgeprune runs and Torch-Pruning at the matched budgets' final sizes, two at a time
    runs = [(base, ["--no-prune", *RECIPE, *common])]
    runs += [(root / f"macs-{r:g}", ["--target-macs", str(r), *common]) for r in args.macs]
    runs += [(root / f"params-{r:g}", ["--target-params", str(r), *common]) for r in args.params]
    runs += [
        (root / f"latency-{k}", ["--target-latency-ms", str(t), "--latency-table", str(table), *common])
        for k, t in reachable.items()
    ]
    lm = LatencyModel.fit(tab, name=str(table))
    min_ms = lm.predict(smallest["macs"])
    twins = [out for out, _ in runs if out.name.startswith(("params-", "macs-"))] if args.match_latency else []
    data = (args.dataset, args.epochs, args.limit)
    matched = args.macs if args.tp_match == "macs" else args.params
    tp_runs = [
        (
            root / f"{args.tp_match}-{r:g}",
            root / "torch-pruning" / f"tp-{args.tp_match}-{r:g}.onnx",
            HERE / "results" / f"{name}_tp_{args.tp_match}-{r:g}.json",
        )
        for r in matched
    ]
    run_all(
        [edgeprune_job(out, flags, *data) for out, flags in runs]
        + [matched_latency_job(root / f"latency-at-{m.name}", m, table, lm, min_ms, common, data) for m in twins]
        + [torch_pruning_job(*t) for t in tp_runs]
    )
    twins = [t for m in twins if ((t := root / f"latency-at-{m.name}") / "config.json").exists()]
    matched_targets = {
        t.name: json.loads((t / "config.json").read_text())["config"]["target_latency_ms"] for t in twins
    }
    runs = [out for out, _ in runs] + twins

    # 4. export, then one interleaved bench of everything
    for run in runs:
        if not (run / "bundle" / "meta.json").exists():
            export_run(run, quantize="none")
    models = [*(r / "bundle" for r in runs), *(onnx for _, onnx, _ in tp_runs)]
    report = bench(models, make_settings(threads=1, runs=args.bench_runs, rounds=7, batch="1"))
    # each run's share of the bench, then `edgeprune report` over every run: its accuracy/latency
    # front figure is this benchmark's picture
    for path, obj in run_dir_files(discover(models), report).items():
        atomic_write_json(path, obj)
    write_report(runs, root / "report")
    rows = {r["name"]: r for r in report["results"]}
    points = []
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        row = rows[f"{run.name}/float"]
        lat = row["latency"]["1"]
        points.append(
            {
                "name": run.name,
                "kind": run.name.split("-")[0],
                "accuracy": m["test_accuracy"],
                "macro_f1": m["test_f1"],
                "test_n": m["test_n"],
                "params": m["params"],
                "macs": m.get("macs") or m.get("baseline_macs"),
                "p50_ms": lat["p50_ms"],
                "floor_p50_ms": lat["floor_p50_ms"],
                "predicted_ms": m.get("latency_ms_predicted"),
                "table_predicted_ms": predicted_ms(lm, run),  # every run's, from the shared table
                "target_latency_ms": m.get("target_latency_ms"),
                "train_seconds": m["train_seconds"],
            }
        )
    for _, onnx, out in tp_runs:
        t = json.loads(out.read_text())["torch_pruning"]
        lat = rows[onnx.stem]["latency"]["1"]
        points.append(
            {
                "name": onnx.stem,
                "kind": "torch-pruning",
                "accuracy": t["test_accuracy"],
                "macro_f1": t["test_f1"],
                "params": t["params"],
                "macs": t.get("macs"),
                "p50_ms": lat["p50_ms"],
                "floor_p50_ms": lat["floor_p50_ms"],
                "train_seconds": t["train_seconds"],
            }
        )
    figure = HERE / "results" / f"{name}_front.png"
    base_acc = next(p["accuracy"] for p in points if p["name"] == "baseline")
    floor_here = min(p["floor_p50_ms"] for p in points)
    for p in points:
        p["drop_points"] = 100 * (base_acc - p["accuracy"])
        p["x_floor"] = p["p50_ms"] / floor_here
        p["dominated_by"] = [
            o["name"]
            for o in points
            if o is not p and o["p50_ms"] <= p["p50_ms"] and o["accuracy"] >= p["accuracy"] and o["name"] != p["name"]
            and (o["p50_ms"] < p["p50_ms"] or o["accuracy"] > p["accuracy"])
        ]  # fmt: skip
    lat_runs = [p for p in points if p["kind"] == "latency"]
    others = [p for p in points if p["kind"] in ("params", "macs", "torch-pruning")]
    result = {
        "model": json.loads((base / "config.json").read_text())["config"]["model"],
        "dataset": args.dataset,
        "epochs": args.epochs,
        "round_to": args.round_to,
        "seed": args.seed,
        "limit": args.limit,
        "latency_table": str(table),
        "latency_table_fit": tab.get("fit"),
        "floor_ms_in_table": floor,
        "floor_ms_in_bench": floor_here,
        "latency_targets_ms": reachable,
        "unreachable_targets_ms": unreachable,
        "matched_latency_targets_ms": matched_targets,
        "smallest_probe": {k: smallest.get(k) for k in ("id", "widths", "params", "p50_ms", "floor_p50_ms")},
        "dense_probe": {k: dense.get(k) for k in ("id", "params", "p50_ms", "floor_p50_ms")},
        # no channel budget goes under the smallest probe, nor a fitted model under its intercept
        "smallest_probe_x_floor": smallest["p50_ms"] / smallest["floor_p50_ms"],
        "intercept_x_floor": ((tab.get("fit") or {}).get("intercept_ms") or 0) / floor,
        "points": points,
        "figure": figure.name,
        "targets": {
            # every other budget's point is dominated (no slower and no less accurate, better in
            # one) by some latency-budget run (a matched twin counts), and no latency-budget run is
            # dominated by another kind
            "latency_runs_dominate_others": all(any(o["name"] in p["dominated_by"] for o in lat_runs) for p in others)
            and not any(o["name"] in lp["dominated_by"] for lp in lat_runs for o in others),
            "a_latency_run_within_2.5x_floor_and_0.5pt": any(
                p["x_floor"] <= 2.5 and p["drop_points"] <= 0.5 for p in lat_runs
            ),
        },
        "notes": [
            "accuracy: the run's test split in torch (test_n); Torch-Pruning's likewise",
            "p50 and floor: onnxruntime float, batch 1, one thread, all models interleaved in one bench",
            f"every run --round-to {args.round_to}; the latency runs share one table measured here before training",
            f"Torch-Pruning is matched to the {args.tp_match} budgets' final sizes",
            "latency-at-X: a latency budget at the table's predicted ms of run X's final model; these "
            "twins count among the latency-budget runs",
        ],
    }
    draw_front(points, figure, f"{result['model']} on {args.dataset}, {args.epochs} epochs")
    print(json.dumps(result["targets"], indent=2))
    for p in sorted(points, key=lambda p: p["p50_ms"]):
        print(f"{p['name']:24s} acc {p['accuracy']:.4f} ({p['drop_points']:+.2f})  p50 {p['p50_ms']:.4f} ms "
              f"({p['x_floor']:.1f}x floor)  params {p['params']:,}")  # fmt: skip
    print("wrote", record(name, result))


if __name__ == "__main__":
    main()
