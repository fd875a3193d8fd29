"""At the same predicted latency, is a latency budget more accurate than a parameter or MACs budget?

Reads latency fronts made with `latency_front.py --match-latency` (one file per seed) and pairs
each latency-at-X run with its run X: both were pruned to the same predicted ms on the same table,
one by Taylor score per millisecond saved, the other by the parameter or MACs ramp. For each pair
and seed: the accuracy difference (points, twin minus X) and the ratio of measured p50s (twin over
X, from the same interleaved bench); then their mean over seeds and how often the twin dominated
(no slower and no less accurate). Nothing is trained or timed here.

    python benchmarks/latency_front_pairs.py benchmarks/results/latency_front_fashion-mnist_10ep_matched.json \
        benchmarks/results/latency_front_s1_fashion-mnist_10ep.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import record


def pairs_of(front: dict) -> list[dict]:
    pts = {p["name"]: p for p in front["points"]}
    out = []
    for name, twin in pts.items():
        if not name.startswith("latency-at-") or (match := pts.get(name.removeprefix("latency-at-"))) is None:
            continue
        out.append(
            {
                "match": match["name"],
                "twin_params": twin["params"],
                "match_params": match["params"],
                "same_model_size": twin["params"] == match["params"],
                "accuracy_diff_points": 100 * (twin["accuracy"] - match["accuracy"]),
                "p50_ratio": twin["p50_ms"] / match["p50_ms"],
                "twin_dominates": twin["p50_ms"] <= match["p50_ms"] and twin["accuracy"] >= match["accuracy"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fronts", type=Path, nargs="+", help="latency_front.py results made with --match-latency")
    ap.add_argument("--name", default="latency_front_pairs_fashion-mnist_10ep")
    args = ap.parse_args()
    per_seed = {}
    for path in args.fronts:
        front = json.loads(path.read_text())
        pairs = pairs_of(front)
        if not pairs:
            raise SystemExit(f"{path} has no latency-at-X runs; make it with latency_front.py --match-latency.")
        per_seed[str(front.get("seed", 0))] = {
            "file": path.name,
            "machine": front["machine"].get("cpu_model"),
            "commit": front.get("commit"),
            "test_n": min(p.get("test_n") or 0 for p in front["points"] if "test_n" in p) or None,
            "pairs": pairs,
            "latency_runs_dominate_others": front["targets"]["latency_runs_dominate_others"],
        }
    matches = sorted({p["match"] for s in per_seed.values() for p in s["pairs"]})
    summary = {}
    for m in matches:
        ps = [p for s in per_seed.values() for p in s["pairs"] if p["match"] == m]
        diffs = [p["accuracy_diff_points"] for p in ps]
        summary[m] = {
            "seeds": len(ps),
            "accuracy_diff_points_mean": statistics.fmean(diffs),
            "accuracy_diff_points": diffs,
            "p50_ratio_mean": statistics.fmean(p["p50_ratio"] for p in ps),
            "twin_dominates": sum(p["twin_dominates"] for p in ps),
        }
    all_pairs = [p for s in per_seed.values() for p in s["pairs"]]
    result = {
        "fronts": [str(p) for p in args.fronts],
        "per_seed": per_seed,
        "summary": summary,
        "pairs": len(all_pairs),
        "twin_more_accurate": sum(p["accuracy_diff_points"] > 0 for p in all_pairs),
        "twin_as_accurate": sum(p["accuracy_diff_points"] == 0 for p in all_pairs),
        "twin_dominates": sum(p["twin_dominates"] for p in all_pairs),
        "accuracy_diff_points_mean": statistics.fmean(p["accuracy_diff_points"] for p in all_pairs),
        "p50_ratio_mean": statistics.fmean(p["p50_ratio"] for p in all_pairs),
        "notes": [
            "latency-at-X: a latency budget at the table's predicted ms of run X's finished model, same seed",
            "accuracy_diff_points: twin minus X on the test split; p50_ratio: twin over X in one interleaved bench",
            "one pair per seed and match; a difference of a few tenths of a point is within seed-to-seed spread",
        ],
    }
    print(
        f"{'match':12s} {'seeds':>5s} {'acc diff (pt) per seed':>28s} {'mean':>6s} {'p50 ratio':>9s} {'dominates':>9s}"
    )
    for m, s in summary.items():
        per = " ".join(f"{d:+.2f}" for d in s["accuracy_diff_points"])
        print(f"{m:12s} {s['seeds']:5d} {per:>28s} {s['accuracy_diff_points_mean']:+6.2f} {s['p50_ratio_mean']:9.3f} "
              f"{s['twin_dominates']:5d}/{s['seeds']}")  # fmt: skip
    print(
        f"twin more accurate in {result['twin_more_accurate']}/{len(all_pairs)} pairs, "
        f"dominates in {result['twin_dominates']}; mean {result['accuracy_diff_points_mean']:+.2f} points at "
        f"p50 ratio {result['p50_ratio_mean']:.3f}"
    )
    print("wrote", record(args.name, result))


if __name__ == "__main__":
    main()
