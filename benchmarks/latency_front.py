"""Accuracy against measured latency for budgets in parameters, in MACs and in milliseconds.

The study's CNN on real Fashion-MNIST, one onnxruntime thread, batch 1, this machine:
1. one latency table of the CNN is measured here (32 probes, `edgeprune probes` + `edgeprune
   bench --latency-probes`), shared by every latency-budget run (`--latency-table`);
2. edgeprune trains, two at a time (one thread each): the dense baseline with the pruned runs'
   recipe, parameter budgets, MACs budgets and latency budgets (multiples of onnxruntime's own
   per-call floor on this machine, measured in step 1's table as the smallest probe's floor);
3. Torch-Pruning (Taylor) prunes the same CNN on the same schedule to each parameter budget's
   final size (benchmarks/torch_pruning_compare.py), exported with edgeprune's exporter;
4. every model is exported (float) and all are timed in one interleaved onnxruntime bench.

Targets (the latency-budget issue): the latency-budget runs dominate the others on the
accuracy/p50 front; one of them is within 2.5x of onnxruntime's floor with at most 0.5 points
lost against the same-recipe baseline. Every run uses --round-to 16 (on AVX-512 CPUs channel
counts off multiples of 16 run slower than their MACs say; see docs/bench.md).

    python benchmarks/latency_front.py --epochs 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import record
from prune_vs_baseline import train

from edgeprune.bench import bench, make_settings
from edgeprune.export import export_run

HERE = Path(__file__).resolve().parent
RECIPE = ["--finetune-lr", "cosine", "--distill", "0.5"]


def run_all(jobs: list[tuple[Path, list[str]]], dataset: str, epochs: int, limit: int | None, at_once: int = 2):
    """Train every (out, flags) job, `at_once` at a time; finished runs are skipped."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < at_once:
            out, flags = pending.pop(0)
            out.parent.mkdir(parents=True, exist_ok=True)
            p = train(out, dataset, epochs, flags, limit)
            if p is not None:
                running.append((out, p))
        for out, p in list(running):
            if p.poll() is not None:
                running.remove((out, p))
                if p.returncode != 0:
                    sys.exit(f"training {out} failed; see {out.parent / (out.name + '.log')}")
        time.sleep(2)


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
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-latency"))
    ap.add_argument("--bench-runs", type=int, default=300)
    ap.add_argument("--name", help="results file name (default latency_front_<dataset>_<epochs>ep)")
    args = ap.parse_args()
    name = args.name or f"latency_front_{args.dataset}_{args.epochs}ep"
    root = args.runs_dir / name
    common = ["--round-to", "16", "--seed", "0"]
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
        subprocess.run([*ep, "probes", str(seed_run), "--round-to", "16", "--out", str(root / "probes")], check=True)
        subprocess.run(
            [*ep, "bench", "--latency-probes", str(root / "probes"), "--threads", "1", "--json", str(table)],
            check=True,
        )
    tab = json.loads(table.read_text())
    floor = min(s["floor_p50_ms"] for s in tab["samples"] if s.get("floor_p50_ms"))
    # the model with every layer at its minimum width: no channel budget can go below it
    smallest = min((s for s in tab["samples"] if s.get("p50_ms")), key=lambda s: s["params"])
    reachable = {f: round(f * floor, 5) for f in args.floors if f * floor > 1.05 * smallest["p50_ms"]}
    unreachable = {f: round(f * floor, 5) for f in args.floors if f not in reachable}
    if unreachable:
        print(
            f"latency budgets {sorted(unreachable.values())} ms are under the smallest probe's "
            f"{smallest['p50_ms']:.4f} ms (every layer at its minimum width): not trained"
        )
    args.floors, latency_targets = list(reachable), list(reachable.values())

    # 2. edgeprune runs, two at a time
    jobs = [(base, ["--no-prune", *RECIPE, *common])]
    jobs += [(root / f"params-{r:g}", ["--target-params", str(r), *common]) for r in args.params]
    jobs += [(root / f"macs-{r:g}", ["--target-macs", str(r), *common]) for r in args.macs]
    jobs += [
        (root / f"latency-{f:g}x", ["--target-latency-ms", str(t), "--latency-table", str(table), *common])
        for f, t in zip(args.floors, latency_targets)
    ]
    run_all(jobs, args.dataset, args.epochs, args.limit)

    # 3. Torch-Pruning at each parameter budget's final size, two at a time
    tp_runs = []
    procs = []
    for r in args.params:
        match = root / f"params-{r:g}"
        onnx = root / "torch-pruning" / f"tp-params-{r:g}.onnx"
        out = HERE / "results" / f"{name}_tp_params-{r:g}.json"
        tp_runs.append((r, onnx, out))
        if out.exists() and onnx.exists():
            continue
        onnx.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HERE / "torch_pruning_compare.py"), "--match", str(match), "--onnx", str(onnx)]
        cmd += ["--name", out.stem]
        procs.append(subprocess.Popen(cmd, stdout=open(onnx.with_suffix(".log"), "w"), stderr=subprocess.STDOUT))
    for p in procs:
        if p.wait() != 0:
            sys.exit("Torch-Pruning failed; see the logs in " + str(root / "torch-pruning"))

    # 4. export, then one interleaved bench of everything
    runs = [out for out, _ in jobs]
    for run in runs:
        if not (run / "bundle" / "meta.json").exists():
            export_run(run, quantize="none")
    report = bench(
        [*(r / "bundle" for r in runs), *(onnx for _, onnx, _ in tp_runs)],
        make_settings(threads=1, runs=args.bench_runs, rounds=7, batch="1"),
    )
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
        "dataset": args.dataset,
        "epochs": args.epochs,
        "limit": args.limit,
        "latency_table": str(table),
        "latency_table_fit": tab.get("fit"),
        "floor_ms_in_table": floor,
        "floor_ms_in_bench": floor_here,
        "latency_targets_ms": latency_targets,
        "unreachable_targets_ms": {f"{f:g}x": t for f, t in unreachable.items()},
        "smallest_probe": {k: smallest.get(k) for k in ("id", "widths", "params", "p50_ms", "floor_p50_ms")},
        "points": points,
        "targets": {
            # every other budget's point is beaten on both axes by some latency-budget run, and no
            # latency-budget run is beaten by another kind
            "latency_runs_dominate_others": all(any(o["name"] in p["dominated_by"] for o in lat_runs) for p in others)
            and not any(o["name"] in lp["dominated_by"] for lp in lat_runs for o in others),
            "a_latency_run_within_2.5x_floor_and_0.5pt": any(
                p["x_floor"] <= 2.5 and p["drop_points"] <= 0.5 for p in lat_runs
            ),
        },
        "notes": [
            "accuracy: the run's test split in torch (test_n); Torch-Pruning's likewise",
            "p50 and floor: onnxruntime float, batch 1, one thread, all models interleaved in one bench",
            "every run --round-to 16; the latency runs share one table measured here before training",
        ],
    }
    print(json.dumps(result["targets"], indent=2))
    for p in sorted(points, key=lambda p: p["p50_ms"]):
        print(f"{p['name']:24s} acc {p['accuracy']:.4f} ({p['drop_points']:+.2f})  p50 {p['p50_ms']:.4f} ms "
              f"({p['x_floor']:.1f}x floor)  params {p['params']:,}")  # fmt: skip
    print("wrote", record(name, result))


if __name__ == "__main__":
    main()
