"""Any model, pruned while it trains, against a dense baseline with the same recipe and Torch-Pruning.

One script, one machine, one command:
1. edgeprune trains the dense baseline (`--no-prune` with the pruned run's recipe: cosine
   fine-tuning rate and self-distillation) and the pruned model (`--preset compact` with a MACs
   budget) side by side, one thread each, so both see the same machine (with --teacher-distill A
   the pruned run distils from the finished baseline, `--teacher`, so the baseline trains first);
2. Torch-Pruning prunes the same model on the same schedule toward the pruned run's final MACs,
   with Taylor and with L1 group importance (benchmarks/torch_pruning_compare.py), side by side;
3. the baseline and the pruned run are exported (ONNX, float), Torch-Pruning's models too, and
   all four are timed in one interleaved onnxruntime bench: batch 1, one thread.

Targets (the any-model issue): at least 2x fewer MACs; at most 0.3 points of test accuracy lost
against the same-recipe baseline; accuracy at least Torch-Pruning's at MACs within 3%; pruned
training wall time at most the baseline's.

    python benchmarks/any_model.py --model resnet20 --dataset fashion-mnist --epochs 10 --target-macs 0.5
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from common import record
from prune_vs_baseline import train_pair

from edgeprune.bench import bench, make_settings
from edgeprune.export import export_run

RECIPE = "--finetune-lr cosine --distill 0.5"
HERE = Path(__file__).resolve().parent


def default_targets(result: dict, importances: list[str]) -> dict:
    """The any-model issue's targets (see the module docstring)."""
    return {
        "macs_2x_fewer": result["macs_reduction"] >= 2,
        "accuracy_drop<=0.3pt": result["accuracy_drop_points"] <= 0.3,
        f"accuracy>=torch_pruning_{'_and_'.join(importances)}": all(
            result["pruned"]["test_accuracy"] >= t["test_accuracy"] for t in result["torch_pruning"].values()
        ),
        "torch_pruning_macs_within_3pct": all(
            abs(t["macs_ratio_over_edgeprune"] - 1) <= 0.03 for t in result["torch_pruning"].values()
        ),
        "pruned_wall_time<=baseline": result["wall_time_ratio_pruned_over_baseline"] <= 1,
    }


def budget_flags(args) -> tuple[str, ...]:
    """The pruned run's budget: a predicted latency when given, else a MACs fraction."""
    if args.target_latency_ms is not None:
        return ("--target-latency-ms", str(args.target_latency_ms))
    return ("--target-macs", str(args.target_macs))


def main(argv: list[str] | None = None, payload: dict | None = None, targets=default_targets) -> dict:
    """Run the comparison (argv: this script's flags) and record it; `payload` joins the record and
    `targets(result, importances)` judges it. Returns the record's payload."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--target-macs", type=float, default=0.5)
    ap.add_argument(
        "--target-latency-ms",
        type=float,
        help="prune to this predicted onnxruntime latency (batch 1, one thread) instead of --target-macs; "
        "Torch-Pruning then matches the run's final MACs",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-args", default="", help="more `edgeprune train` flags for every run")
    ap.add_argument(
        "--pruned-args",
        default="",
        help="more `edgeprune train` flags for the pruned run only, e.g. '--prune-every 20' (a finished baseline "
        "of the same recipe is reused)",
    )
    ap.add_argument(
        "--baseline-args",
        default=RECIPE,
        help=f"`edgeprune train` flags of the dense baseline's recipe (default {RECIPE!r}, the compact preset's)",
    )
    ap.add_argument(
        "--teacher-distill",
        type=float,
        help="the pruned run (and Torch-Pruning's fine-tuning) distils from the dense baseline with this weight "
        "(edgeprune train --teacher); the baseline trains first",
    )
    ap.add_argument("--tp-args", default="", help="more torch_pruning_compare.py flags, e.g. '--grad-batches 2'")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-any"))
    ap.add_argument("--bench-runs", type=int, default=200)
    ap.add_argument("--name", help="results file name (default any_model_<model>_<dataset>_<epochs>ep)")
    ap.add_argument(
        "--importances", nargs="+", choices=["taylor", "l1"], default=["taylor", "l1"], help="Torch-Pruning runs"
    )
    args = ap.parse_args(argv)
    model_tag = args.model.replace(":", "-").replace("/", "-")
    name = args.name or (
        f"any_model_{model_tag}_{Path(args.dataset).name}_{args.epochs}ep"
        + (f"_{args.target_latency_ms:g}ms" if args.target_latency_ms is not None else "")
        + (f"_kd{args.teacher_distill:g}" if args.teacher_distill is not None else "")
    )  # finished runs are reused by name: a name per recipe
    extra = ("--model", args.model, *shlex.split(args.train_args))
    base_dir, pruned_dir = train_pair(
        args.runs_dir / name,
        args.dataset,
        args.epochs,
        "compact",
        args.limit,
        args.seed,
        extra,
        baseline_extra=tuple(shlex.split(args.baseline_args)),
        pruned_extra=budget_flags(args)
        + tuple(shlex.split(args.pruned_args))
        + (("--distill", str(args.teacher_distill)) if args.teacher_distill is not None else ()),
        teacher=args.teacher_distill is not None,
    )
    tp_dir = args.runs_dir / name / "torch-pruning"
    procs = {}
    for importance in args.importances:
        out = tp_dir / f"{importance}.json"
        done = HERE / "results" / f"{name}_torch_pruning_{importance}.json"
        if out.exists() or (done.exists() and (tp_dir / f"torch-pruning-{importance}.onnx").exists()):
            if not out.exists():
                out.write_text(done.read_text())
            continue
        cmd = [
            sys.executable,
            str(HERE / "torch_pruning_compare.py"),
            "--match",
            str(pruned_dir),
            "--importance",
            importance,
            "--onnx",
            str(tp_dir / f"torch-pruning-{importance}.onnx"),
            "--name",
            f"{name}_torch_pruning_{importance}",
            *shlex.split(args.tp_args),
        ]
        tp_dir.mkdir(parents=True, exist_ok=True)
        log = open(tp_dir / f"{importance}.log", "w")
        procs[importance] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), out)
    for importance, (p, out) in procs.items():
        if p.wait() != 0:
            sys.exit(f"Torch-Pruning ({importance}) failed; see {tp_dir / (importance + '.log')}")
        out.write_text((HERE / "results" / f"{name}_torch_pruning_{importance}.json").read_text())
    tp = {imp: json.loads((tp_dir / f"{imp}.json").read_text()) for imp in args.importances}

    for run in (base_dir, pruned_dir):
        if not (run / "bundle" / "meta.json").exists():
            export_run(run, quantize="none")
    report = bench(
        [base_dir / "bundle", pruned_dir / "bundle", *(tp_dir / f"torch-pruning-{i}.onnx" for i in args.importances)],
        make_settings(threads=1, runs=args.bench_runs, rounds=7, batch="1"),
    )
    rows = {r["name"]: r for r in report["results"]}

    def p50(key):
        r = rows.get(key)
        return r["latency"]["1"]["p50_ms"] if r and r["status"] == "ok" else None

    mb, mp = (json.loads((d / "metrics.json").read_text()) for d in (base_dir, pruned_dir))
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "epochs": args.epochs,
        "limit": args.limit,
        "seed": args.seed,
        "target_macs": None if args.target_latency_ms is not None else args.target_macs,
        "target_latency_ms": args.target_latency_ms,
        "train_args": args.train_args,
        "baseline_args": args.baseline_args,
        "pruned_args": args.pruned_args,
        "tp_args": args.tp_args,
        "teacher_distill": args.teacher_distill,  # the pruned run's --distill weight from the baseline (--teacher)
        "baseline": {
            **{k: mb[k] for k in ("test_accuracy", "test_f1", "test_n", "params", "train_seconds")},
            "macs": mp["baseline_macs"],  # the dense model's, counted by the pruned run
            "p50_ms_batch1_threads1": p50(f"{base_dir.name}/float"),
        },
        "pruned": {
            **{k: mp[k] for k in ("test_accuracy", "test_f1", "test_n", "params", "train_seconds", "macs", "widths")},
            "baseline_macs": mp["baseline_macs"],
            "p50_ms_batch1_threads1": p50(f"{pruned_dir.name}/float"),
        },
        "torch_pruning": {
            imp: {
                **{k: t["torch_pruning"][k] for k in ("test_accuracy", "test_f1", "params", "macs", "train_seconds")},
                "p50_ms_batch1_threads1": p50(f"torch-pruning-{imp}"),
                "macs_ratio_over_edgeprune": t["torch_pruning"]["macs"] / mp["macs"],
            }
            for imp, t in tp.items()
        },
        "bench_rows": sorted(rows),
        "runs": {"baseline": str(base_dir), "pruned": str(pruned_dir), "torch_pruning": str(tp_dir)},
    }
    # what a run said about itself: a missed budget, the weights it started from, changed defaults
    for key, m in (("baseline", mb), ("pruned", mp)):
        result[key].update({k: m[k] for k in ("budget_met", "weights_init", "warnings", "notes") if k in m})
    p50_base = result["baseline"]["p50_ms_batch1_threads1"]
    for r in (result["pruned"], *result["torch_pruning"].values()):
        faster = p50_base and r["p50_ms_batch1_threads1"] and p50_base / r["p50_ms_batch1_threads1"]
        r["p50_speedup_over_baseline"] = faster or None
    drop = 100 * (mb["test_accuracy"] - mp["test_accuracy"])
    result["macs_reduction"] = mp["baseline_macs"] / mp["macs"]
    result["accuracy_drop_points"] = drop
    result["wall_time_ratio_pruned_over_baseline"] = mp["train_seconds"] / mb["train_seconds"]
    result.update(payload or {})
    result["targets"] = targets(result, args.importances)
    result["notes"] = [
        "test accuracy in torch on the whole test split (test_n); p50 with onnxruntime, float, batch 1, one "
        "thread, the four models interleaved in one bench",
        "bench rows baseline/float and pruned/float are edgeprune's; torch-pruning-* are Torch-Pruning's",
    ]
    print(json.dumps({k: result[k] for k in ("macs_reduction", "accuracy_drop_points", "targets")}, indent=2))
    print("wrote", record(name, result))
    return result


if __name__ == "__main__":
    main()
