"""The accuracy guard's estimate against a dense twin: did the pruned model learn between steps?

    python benchmarks/guard_twin.py DENSE_RUN PRUNED_RUN --name NAME

DENSE_RUN and PRUNED_RUN are `edgeprune train` runs on the same data split (same data, seed,
--limit, --val-fraction) and recipe, one with --no-prune. The guard adds up the costs of the steps
it keeps, which equals the gap to the dense model only while the pruned model learns between
steps what the dense one would (docs/pruning.md). This checks that from the two runs' records: at
each of the dense run's epoch ends, its validation figure beside the pruned model's figure before
the pruning point nearest that step (the guard's own pass, with no step under trial), the direct
gap between them, and the guard's running estimate then. Writes benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import record

from edgeprune.data.tokenizer import TokenizerFile
from edgeprune.run import read_jsonl
from edgeprune.rundir import load_run_data


def step_of(at: str) -> int | None:
    """The optimizer step of a guard event's pruning point ("step 120"), or None (an epoch point)."""
    parts = at.split()
    return int(parts[1]) if len(parts) == 2 and parts[0] == "step" else None


def compare(dense: Path, pruned: Path, steps_per_epoch: int) -> dict:
    guard = json.loads((pruned / "metrics.json").read_text())["guard"]
    metric = guard["metric"]
    key = f"val_{metric}"
    events = [e for e in guard["events"] if e["action"] in ("kept", "rolled back") and step_of(e["at"]) is not None]
    befores = {}  # the model's figure before the step at each pruning point that tried one (the same at retries)
    running, estimate_after = 0.0, []  # the guard's estimate after each kept step, with the step it was judged at
    for e in events:
        befores.setdefault(step_of(e["at"]), e["before"])
        if e["action"] == "kept":
            running += e["step_drop"]
            estimate_after.append((e["judged_at"], running))
    rows = []
    for h in read_jsonl(dense / "history.jsonl"):
        step = h["epoch"] * steps_per_epoch
        if not befores or h.get(key) is None:
            continue
        point = min(befores, key=lambda s: abs(s - step))
        if abs(point - step) > steps_per_epoch // 2:
            continue  # no pruning point near this epoch end
        est = [v for at, v in estimate_after if at <= point]
        rows.append(
            {
                "epoch": h["epoch"],
                "dense_step": step,
                "dense_val": h[key],
                "pruned_point": point,
                "pruned_before": befores[point],
                "direct_gap_points": 100 * (h[key] - befores[point]),
                "guard_estimate_points": est[-1] if est else 0.0,
            }
        )
    return {
        "metric": metric,
        "steps_per_epoch": steps_per_epoch,
        "validation_n": guard.get("n"),
        "noise_points": guard.get("noise_points"),
        "guard_spent_points": guard.get("spent"),
        "kept": guard.get("kept"),
        "rolled_back": guard.get("rolled_back"),
        "pruned_before_figures": {str(s): v for s, v in sorted(befores.items())},
        "at_dense_epoch_ends": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dense", type=Path)
    ap.add_argument("pruned", type=Path)
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    a = json.loads((args.dense / "config.json").read_text())["config"]
    b = json.loads((args.pruned / "config.json").read_text())["config"]
    split = ("dataset", "seed", "limit", "val_fraction", "data_options", "epochs", "batch_size")
    differ = [k for k in split if a.get(k) != b.get(k)]
    if differ:
        raise SystemExit(f"the two runs differ in {', '.join(differ)}: give a dense twin of the pruned run.")
    tokenizer = args.pruned / "tokenizer.json"  # a pretrained text model's own (the split does not depend on it)
    data = load_run_data(b, tokenizer=TokenizerFile.read(tokenizer) if tokenizer.exists() else None)
    steps_per_epoch = (len(data.train) + b["batch_size"] - 1) // b["batch_size"]  # as edgeprune train counts them
    out = compare(args.dense, args.pruned, steps_per_epoch)
    tests = {arm: json.loads((run / "metrics.json").read_text()).get("test_accuracy") for arm, run in
             (("dense", args.dense), ("pruned", args.pruned))}  # fmt: skip
    out["test_accuracy"] = tests
    out["test_drop_points"] = 100 * (tests["dense"] - tests["pruned"])
    out["runs"] = {"dense": str(args.dense), "pruned": str(args.pruned)}
    print(f"{'epoch':>5} {'dense val':>9} {'point':>6} {'pruned before':>13} {'direct gap':>10} {'guard est.':>10}")
    for r in out["at_dense_epoch_ends"]:
        print(
            f"{r['epoch']:>5} {r['dense_val']:>9.4f} {r['pruned_point']:>6} {r['pruned_before']:>13.4f} "
            f"{r['direct_gap_points']:>10.2f} {r['guard_estimate_points']:>10.2f}"
        )
    print(f"test: dense {tests['dense']:.4f}, pruned {tests['pruned']:.4f} ({out['test_drop_points']:.2f} points lost)")
    print("wrote", record(args.name, out))


if __name__ == "__main__":
    main()
