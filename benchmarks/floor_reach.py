"""How close to onnxruntime's per-call floor can the study's CNN get, at any widths and depths?

The latency-budget issue asks for a pruned CNN within 2.5x of onnxruntime's floor (an Identity
model's batch-1 call, measured beside every model by the bench). Channel pruning changes widths,
never the graph's nodes, and each node costs onnxruntime a fixed dispatch time however narrow it
is. This script exports the study's CNN architecture (Fashion-MNIST's 28x28x1 input, 10 classes)

- dense (32, 64 channels; 128 hidden units),
- at uniform widths down to 1 channel and 1 hidden unit (every channel-pruned CNN of this
  architecture is at least as wide as some of these: a lower bound on what any channel budget
  can reach, whatever the accuracy),
- with layers removed (no hidden layer; one conv block; a lone Linear layer): what depth pruning,
  which edgeprune does not do, could reach,

and times all of them with edgeprune's bench in one interleaved run: one onnxruntime thread,
batch 1, graph optimizations ORT_ENABLE_ALL as deployed. Weights are random: a dense float
kernel's time does not depend on the values. Then every graph that came within the target is
trained (`edgeprune train --no-prune`, real Fashion-MNIST, --train-epochs, one seed) beside the
dense CNN, so its accuracy says whether it could count.

    python benchmarks/floor_reach.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from common import record
from latency_front import run_all
from prune_vs_baseline import train

from edgeprune.bench import bench, make_settings
from edgeprune.export.onnx_export import export_onnx, finalize, metadata_props
from edgeprune.models.cnn import SeedCNN

META = {"task": "image", "input_shape": ["batch", 1, 28, 28], "input_dtype": "float32"}
TARGET_X_FLOOR = 2.5


def variants(widths: list[int]) -> dict[str, dict]:
    """name -> SeedCNN keyword arguments, with the kind of reduction it stands for."""
    out = {"dense": {"kind": "dense", "channels": [32, 64], "hidden": [128]}}
    for w in widths:
        out[f"width-{w}"] = {"kind": "channels", "channels": [w, w], "hidden": [w]}
    for w in (8, 1):
        out[f"no-hidden-{w}"] = {"kind": "depth", "channels": [w, w], "hidden": []}
    for w in (8, 4, 2, 1):
        out[f"one-conv-{w}"] = {"kind": "depth", "channels": [w], "hidden": []}
    out["linear-only"] = {"kind": "depth", "channels": [], "hidden": []}
    return out


def export(name: str, spec: dict, out_dir: Path) -> tuple[Path, int, list[str]]:
    torch.manual_seed(0)
    model = SeedCNN(channels=spec["channels"], hidden=spec["hidden"]).eval()
    params = sum(p.numel() for p in model.parameters())
    path = out_dir / f"{name}.onnx"
    export_onnx(model, META, path)
    finalize(path, metadata_props({"format": 1, **META, "params": params}))
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    return path, params, ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="*", default=[16, 8, 4, 2, 1])
    ap.add_argument("--bench-runs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--train-epochs", type=int, default=10, help="0: time only")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/floor-reach"))
    args = ap.parse_args()
    specs = variants(args.widths)
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: export(name, spec, Path(tmp)) for name, spec in specs.items()}
        report = bench(
            [f[0] for f in files.values()],
            make_settings(threads=1, runs=args.bench_runs, rounds=args.rounds, batch="1"),
        )
    rows = {r["name"]: r for r in report["results"]}
    floor = min(r["latency"]["1"]["floor_p50_ms"] for r in rows.values())
    points = []
    for name, spec in specs.items():
        lat = rows[name]["latency"]["1"]
        _, params, ops = files[name]
        points.append(
            {
                "name": name,
                "kind": spec["kind"],
                "channels": spec["channels"],
                "hidden": spec["hidden"],
                "params": params,
                "onnx_ops": ops,
                "p50_ms": lat["p50_ms"],
                "floor_p50_ms": lat["floor_p50_ms"],
                "x_floor": lat["p50_ms"] / floor,
            }
        )
    by_kind = {k: [p for p in points if p["kind"] == k] for k in ("channels", "depth")}
    narrowest = min(by_kind["channels"], key=lambda p: p["x_floor"])
    within = [p for p in points if p["x_floor"] <= TARGET_X_FLOOR]
    if args.train_epochs:
        to_train = [p for p in points if p["name"] == "dense"] + within
        jobs = []
        for p in to_train:
            out = args.runs_dir / f"{p['name']}_{args.train_epochs}ep"
            kw = json.dumps({"channels": p["channels"], "hidden": p["hidden"]})
            flags = ["--model", "cnn", "--model-kwargs", kw, "--no-prune", "--seed", "0"]
            jobs.append((out, lambda out=out, flags=flags: train(out, "fashion-mnist", args.train_epochs, flags, None)))
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        run_all(jobs)
        for p, (out, _) in zip(to_train, jobs, strict=True):
            m = json.loads((out / "metrics.json").read_text())
            p.update(test_accuracy=m["test_accuracy"], test_n=m["test_n"], train_epochs=args.train_epochs)
        dense_acc = next(p["test_accuracy"] for p in points if p["name"] == "dense")
        for p in within:
            p["drop_points"] = 100 * (dense_acc - p["test_accuracy"])
    result = {
        "architecture": "edgeprune's seed CNN, 28x28x1 input, 10 classes (Fashion-MNIST's shapes)",
        "settings": report.get("settings"),
        "floor_ms": floor,
        "points": points,
        "min_x_floor_any_channel_width": narrowest["x_floor"],
        "min_x_floor_any_channel_width_model": narrowest["name"],
        "within_target": [p["name"] for p in within],
        "train_epochs": args.train_epochs,
        "targets": {
            f"some_channel_width_within_{TARGET_X_FLOOR}x_floor": narrowest["x_floor"] <= TARGET_X_FLOOR,
            f"some_graph_within_{TARGET_X_FLOOR}x_floor_and_0.5pt": any(
                p.get("drop_points", 99) <= 0.5 for p in within
            ),
        },
        "notes": [
            "one onnxruntime thread, batch 1, ORT_ENABLE_ALL, all models interleaved in one edgeprune bench",
            "x_floor: p50 over the smallest floor (Identity model) p50 measured in the bench",
            "width-w: both convs w channels and w hidden units; a channel budget's model is never narrower",
            "weights are random (seed 0): float kernel times do not depend on values",
            "test_accuracy: the graphs within the target and the dense CNN, trained unpruned (edgeprune train "
            "--no-prune --seed 0, Adam 1e-3, batch 64) on real Fashion-MNIST for train_epochs; drop_points "
            "against that dense run",
        ],
    }
    print(f"floor {floor * 1000:.2f} us")
    for p in sorted(points, key=lambda p: p["p50_ms"]):
        acc = f"  acc {p['test_accuracy']:.4f}" if "test_accuracy" in p else ""
        print(f"{p['name']:14s} {p['kind']:9s} p50 {p['p50_ms'] * 1000:7.2f} us  {p['x_floor']:5.2f}x floor  "
              f"{len(p['onnx_ops'])} ops  {p['params']:,} params{acc}")  # fmt: skip
    print(json.dumps(result["targets"]))
    print("wrote", record("floor_reach_cnn", result))


if __name__ == "__main__":
    main()
