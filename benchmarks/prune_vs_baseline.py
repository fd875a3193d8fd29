"""Baseline vs pruned training on one dataset: live parameters, accuracy, wall time, and PyTorch CPU
latency before and after compaction.

The two runs train at the same time, one thread each, so both see the same machine (a shared
machine drifts; run one after the other and the later one may win or lose by chance). Runs resume
if interrupted: re-run the same command.

    python benchmarks/prune_vs_baseline.py --dataset fashion-mnist --epochs 50
    python benchmarks/prune_vs_baseline.py --dataset fashion-mnist --epochs 50 --seeds 0 1 2   # mean over seeds
    python benchmarks/prune_vs_baseline.py --dataset fashion-mnist --epochs 50 --seeds 0 1 2 \
        --baseline-args "--finetune-lr cosine --distill 0.5" --runs-dir runs/bench-recipe \
        --name prune_vs_recipe_baseline_fashion-mnist_50ep_3seeds   # baselines with the pruned recipe
    python benchmarks/prune_vs_baseline.py --dataset sst2 --epochs 25 --synthetic-text data/synthetic \
        --train-args "--max-len 32"      # the BiLSTM on the learnable synthetic sentiment set
    python benchmarks/prune_vs_baseline.py --dataset sst2 --epochs 25 --synthetic-text data/negation --negation \
        --train-args "--max-len 48" --seeds 0 1 2 --name prune_vs_baseline_sst2-negation_25ep_3seeds
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from common import record, torch_latency

from edgeprune.models import build_model


def train(out: Path, dataset: str, epochs: int, extra: list[str], limit: int | None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "edgeprune",
        "train",
        "--dataset",
        dataset,
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        "--threads",
        "1",
        *extra,
    ]
    if limit:
        cmd += ["--limit", str(limit)]
    if (out / "config.json").exists():
        if (out / "metrics.json").exists():
            return None
        cmd.append("--resume")
    log = open(out.parent / f"{out.name}.log", "a")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def load(run: Path):
    saved = torch.load(run / "model.pt", weights_only=True)
    model = build_model(saved["arch"]).eval()
    model.load_state_dict(saved["state_dict"])
    return model, saved


def train_pair(
    runs_dir: Path,
    dataset: str,
    epochs: int,
    preset: str,
    limit: int | None,
    seed: int = 0,
    extra: tuple[str, ...] = (),
    baseline_extra: tuple[str, ...] = (),
    pruned_extra: tuple[str, ...] = (),
    teacher: bool = False,
) -> tuple[Path, Path]:
    """Baseline and pruned runs of one seed, trained side by side (skipped when already finished)
    in RUNS_DIR/<dataset>-<epochs>ep[-seed<n>]/{baseline,pruned}. With `teacher` the pruned run
    distils from the baseline (`--teacher`), so the baseline trains first."""
    root = runs_dir / f"{Path(dataset).name}-{epochs}ep{'' if seed == 0 else f'-seed{seed}'}"
    root.mkdir(parents=True, exist_ok=True)
    base_dir, pruned_dir = root / "baseline", root / "pruned"
    extra = (*extra, "--seed", str(seed))

    def wait(p):
        if p is not None and p.wait() != 0:
            sys.exit(f"training failed; see the logs in {root}")

    base = train(base_dir, dataset, epochs, ["--no-prune", *baseline_extra, *extra], limit)
    if teacher:
        wait(base)
        pruned_extra = (*pruned_extra, "--teacher", str(base_dir))
    pruned = train(pruned_dir, dataset, epochs, ["--preset", preset, *pruned_extra, *extra], limit)
    for p in (base, pruned):
        wait(p)
    return base_dir, pruned_dir


def pair_result(seed: int, base_dir: Path, pruned_dir: Path) -> dict:
    mb, mp = (json.loads((d / "metrics.json").read_text()) for d in (base_dir, pruned_dir))
    return {
        "seed": seed,
        "baseline_test_accuracy": mb["test_accuracy"],
        "pruned_test_accuracy": mp["test_accuracy"],
        "accuracy_drop_points": 100 * (mb["test_accuracy"] - mp["test_accuracy"]),
        "compression_live": mb["params"] / mp["params"],
        "pruned_widths": mp["widths"],
        "wall_time_ratio_pruned_over_baseline": mp["train_seconds"] / mb["train_seconds"],
        "runs": {"baseline": str(base_dir), "pruned": str(pruned_dir)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--preset", default="compact")
    ap.add_argument("--limit", type=int)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="train one baseline/pruned pair per seed (init, order, validation split); targets use the mean",
    )
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    ap.add_argument("--name", help="results file name (default prune_vs_baseline_<dataset>_<epochs>ep)")
    ap.add_argument("--train-args", default="", help="more `edgeprune train` flags for both runs")
    ap.add_argument(
        "--baseline-args",
        default="",
        help="`edgeprune train` flags for the baseline only, e.g. the pruned run's recipe: "
        "'--finetune-lr cosine --distill 0.5'",
    )
    ap.add_argument("--pruned-args", default="", help="`edgeprune train` flags for the pruned run only")
    ap.add_argument(
        "--synthetic-text",
        type=Path,
        help="write the learnable synthetic sentiment set (5000 train, 872 test like SST-2's validation) "
        "into DIR/<dataset>/ if absent and train on it",
    )
    ap.add_argument(
        "--negation",
        action="store_true",
        help="with --synthetic-text: the harder variant (negated cues, net sign, 5%% label noise; ceiling ~95%%)",
    )
    args = ap.parse_args()
    extra = shlex.split(args.train_args)
    if args.synthetic_text:
        from edgeprune.data.synthetic import write_sentiment

        if not (args.synthetic_text / args.dataset).exists():
            splits = ("train", "validation") if args.dataset == "sst2" else ("train", "test")
            write_sentiment(
                args.synthetic_text / args.dataset, splits=splits, n_train=5000, n_test=872, negation=args.negation
            )
        extra += ["--data-dir", str(args.synthetic_text)]
    pairs = [
        train_pair(
            args.runs_dir,
            args.dataset,
            args.epochs,
            args.preset,
            args.limit,
            seed,
            tuple(extra),
            tuple(shlex.split(args.baseline_args)),
            tuple(shlex.split(args.pruned_args)),
        )
        for seed in args.seeds
    ]
    base_dir, pruned_dir = pairs[0]
    mb, mp = (json.loads((d / "metrics.json").read_text()) for d in (base_dir, pruned_dir))
    base, saved = load(base_dir)
    pruned, _ = load(pruned_dir)
    shape = saved["input"]["input_shape"][1:]
    example = (
        (lambda b: torch.randn(b, *shape))
        if saved["input"]["task"] == "image"
        else (lambda b: torch.randint(1, saved["input"]["vocab_size"], (b, saved["input"]["max_len"])))
    )
    # A masked model has the baseline's widths, so dense kernels cost the same as the baseline's:
    # "before compaction" is the baseline architecture, "after" the compact pruned model.
    latency = {
        f"batch{b}_threads{t}": torch_latency({"before_compaction": base, "after_compaction": pruned}, example, b, t)
        for b in (1, 64)
        for t in (1, torch.get_num_threads())
    }
    per_seed = [pair_result(seed, *pair) for seed, pair in zip(args.seeds, pairs)]
    drops = [r["accuracy_drop_points"] for r in per_seed]
    drop = statistics.mean(drops)
    compression = min(r["compression_live"] for r in per_seed)
    result = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "preset": args.preset,
        "limit": args.limit,
        "baseline_args": args.baseline_args,
        "pruned_args": args.pruned_args,
        "baseline": {k: mb[k] for k in ("test_accuracy", "test_f1", "params", "train_seconds", "widths")},
        "pruned": {k: mp[k] for k in ("test_accuracy", "test_f1", "params", "dense_params", "train_seconds", "widths")},
        "compression_live": mb["params"] / mp["params"],
        "compression_dense": mb["params"] / mp["dense_params"],
        "accuracy_drop_points": 100 * (mb["test_accuracy"] - mp["test_accuracy"]),
        "wall_time_ratio_pruned_over_baseline": mp["train_seconds"] / mb["train_seconds"],
        "torch_cpu_latency_ms": latency,
        "seeds": per_seed,
        "accuracy_drop_points_mean": drop,
        "accuracy_drop_points_std": statistics.stdev(drops) if len(drops) > 1 else 0.0,
        "compression_live_min": compression,
        "targets": {
            "compression_live>=8": compression >= 8,
            "accuracy_drop<=0.5pt": drop <= 0.5,
            "pruned_wall_time<=baseline": all(r["wall_time_ratio_pruned_over_baseline"] <= 1 for r in per_seed),
        },
        "notes": [
            "baseline/pruned/compression/latency describe the first seed's pair; targets use every seed: "
            "the mean accuracy drop, the smallest compression, each pair's wall time"
        ],
        "runs": {"baseline": str(base_dir), "pruned": str(pruned_dir)},
    }
    many = f"_{len(args.seeds)}seeds" if len(args.seeds) > 1 else ""
    path = record(args.name or f"prune_vs_baseline_{args.dataset}_{args.epochs}ep{many}", result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("compression_live_min", "accuracy_drop_points_mean", "accuracy_drop_points_std", "targets")
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
