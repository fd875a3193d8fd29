"""What `edgeprune train` with no pruning flags does, against the study's exact setting.

The any-model issue's check: `edgeprune train --dataset fashion-mnist --epochs 4 --limit 20000`
with the default preset (compact) and with `--preset study`, side by side (one thread each).

    python benchmarks/default_preset.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import record
from prune_vs_baseline import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-default"))
    args = ap.parse_args()
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    runs = {"default": args.runs_dir / "default", "study": args.runs_dir / "study"}
    procs = [
        train(runs["default"], "fashion-mnist", 4, [], 20000),
        train(runs["study"], "fashion-mnist", 4, ["--preset", "study"], 20000),
    ]
    for p in procs:
        if p is not None and p.wait() != 0:
            raise SystemExit(f"training failed; see the logs in {args.runs_dir}")
    result = {}
    for name, run in runs.items():
        m = json.loads((run / "metrics.json").read_text())
        preset = json.loads((run / "config.json").read_text())["config"]["preset"]
        result[name] = {
            "preset": preset,
            **{k: m[k] for k in ("test_accuracy", "test_f1", "test_n", "params", "baseline_params", "compression")},
            "widths": m["widths"],
        }
    print(json.dumps(result, indent=2))
    print("wrote", record("default_preset_fashion-mnist_4ep", result))


if __name__ == "__main__":
    main()
