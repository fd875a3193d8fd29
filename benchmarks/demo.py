"""`make demo` measured: the guarded default's pruned model against its unpruned baseline.

Runs the demo's experiment (`edgeprune experiment --dataset fashion-mnist --epochs 6`, what
`make demo` runs) and records its report.json with the pruned float model's drop against the
baseline in points of test accuracy (issue 26's target: within 1 point), the size it reached and
what ended pruning.

    python benchmarks/demo.py                        # runs/demo, as make demo
    python benchmarks/demo.py --out /tmp/demo --epochs 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import record

REPO = Path(__file__).resolve().parent.parent


def summarize(report: dict) -> dict:
    """The baseline and pruned rows of a demo report: accuracies, the drop, the size, the guard."""
    runs = {r["role"]: r["metrics"] for r in report["runs"] if r["role"] in ("baseline", "pruned")}
    base, pruned = runs["baseline"], runs["pruned"]
    drop = 100 * (base["test_accuracy"] - pruned["test_accuracy"])
    guard = pruned.get("guard") or {}
    return {
        "baseline_test_accuracy": base["test_accuracy"],
        "pruned_test_accuracy": pruned["test_accuracy"],
        "test_n": pruned["test_n"],
        "drop_points": drop,
        "pruned_params_fraction": pruned["params"] / base["params"],
        "pruned_macs_reduction": (pruned["baseline_macs"] / pruned["macs"]) if pruned.get("macs") else None,
        "pruning_ended_by": pruned.get("pruning_ended_by"),
        "budget_met": pruned.get("budget_met"),
        "guard": {k: guard.get(k) for k in ("max_drop", "recovery_steps", "kept", "rolled_back", "spent")},
        "target_pruned_within_1_point": drop <= 1.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    ap.add_argument("--epochs", type=int, default=6, help="the demo's epochs (Makefile DEMO_ARGS)")
    ap.add_argument("--name", help="results file name (default demo_<epochs>ep)")
    args = ap.parse_args()
    command = [sys.executable, "-m", "edgeprune", "experiment", "--dataset", "fashion-mnist"]
    command += ["--epochs", str(args.epochs), "--out", str(args.out)]
    subprocess.run(command, cwd=REPO, check=True)  # -m edgeprune: this checkout's code (cwd first on sys.path)
    out = args.out if args.out.is_absolute() else REPO / args.out
    report = json.loads((out / "report.json").read_text())
    result = {"demo_command": " ".join(["edgeprune", *command[3:]]), **summarize(report), "report": report}
    path = record(args.name or f"demo_{args.epochs}ep", result)
    print(f"pruned {result['pruned_test_accuracy']:.4f} vs baseline {result['baseline_test_accuracy']:.4f}: "
          f"{result['drop_points']:.2f} points; wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
