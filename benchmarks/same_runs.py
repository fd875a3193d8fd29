"""A refactor changes no result: three short runs, re-made, give byte-identical model.pt and equal metrics.

Run it on the commit before a refactor (it writes what it saw), then after, with --against the
first record: any difference in a model.pt byte or a metric (other than times and paths) is named,
and the exit code is 1.

    python benchmarks/same_runs.py --name same_runs_before            # on the old commit
    python benchmarks/same_runs.py --name same_runs_after --against benchmarks/results/same_runs_before.json

The runs are short versions of three of the study's (one thread each, so they are deterministic):
- the demo's pruned run: `train` with its defaults on Fashion-MNIST;
- a ResNet-20 run with a MACs budget;
- a tweets run (the Embedding+BiLSTM on the binary tweets from benchmarks/fetch_data.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from common import record

RUNS = {  # name -> `edgeprune train` flags
    "demo-pruned": ["--dataset", "fashion-mnist", "--epochs", "2", "--limit", "3000"],
    "resnet20-macs": [
        "--dataset",
        "fashion-mnist",
        "--model",
        "resnet20",
        "--target-macs",
        "0.5",
        "--epochs",
        "2",
        "--limit",
        "1500",
    ],
    "tweets": ["--dataset", "{data}/tweets-binary", "--model", "bilstm", "--epochs", "2", "--limit", "3000"],
}

# Metrics that measure the machine or name the place, not the result.
VOLATILE = ("seconds", "time", "rss", "path", "out", "date", "wall")


def stable(value):
    """The metrics with times, memory and paths left out, at every depth."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not any(word in k.lower() for word in VOLATILE)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def run(name: str, flags: list[str], data: Path, root: Path) -> dict:
    out = root / name
    cmd = [sys.executable, "-m", "edgeprune", "train", *(f.format(data=data) for f in flags), "--out", str(out)]
    cmd += ["--threads", "1", "--restart"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return {
        "command": " ".join(cmd[1:]),
        "model_pt_sha256": hashlib.sha256((out / "model.pt").read_bytes()).hexdigest(),
        "metrics": stable(json.loads((out / "metrics.json").read_text())),
    }


def differences(before: dict, after: dict) -> list[str]:
    said = []
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            said.append(f"{name}: not re-made")
            continue
        if old["model_pt_sha256"] != new["model_pt_sha256"]:
            said.append(f"{name}: model.pt differs")
        for key in sorted(set(old["metrics"]) | set(new["metrics"])):
            if old["metrics"].get(key) != new["metrics"].get(key):
                said.append(f"{name}: metrics[{key!r}] {old['metrics'].get(key)!r} -> {new['metrics'].get(key)!r}")
    return said


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="where benchmarks/fetch_data.py wrote its sets")
    ap.add_argument("--name", default="same_runs")
    ap.add_argument("--against", type=Path, help="a record of an earlier commit to compare with")
    ap.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("/tmp/edgeprune-same-runs"),
        help="where the runs are made, each time anew (model.pt records its run's path: keep it the same)",
    )
    args = ap.parse_args()
    runs = {}
    for name, flags in RUNS.items():
        print(f"{name} ...", flush=True)
        runs[name] = run(name, flags, args.data.resolve(), args.runs_dir.resolve())
    result = {"runs": runs}
    said = None
    if args.against:
        before = json.loads(args.against.read_text())
        said = differences(before["runs"], runs)
        result["against"] = {"record": str(args.against), "commit": before.get("commit"), "differences": said}
    path = record(args.name, result)
    print(f"wrote {path}")
    if said is not None:
        print("\n".join(said) if said else f"identical to {args.against}: every model.pt byte and every metric")
        sys.exit(1 if said else 0)


if __name__ == "__main__":
    main()
