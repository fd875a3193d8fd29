"""Which runtime is fastest, per model, on this machine: onnxruntime, OpenVINO and ncnn, FP32 and INT8.

Each argument is a run directory or a bundle. A run is exported first with `--runtimes all`
(unless --no-export): from its one checked ONNX file, onnxruntime's INT8, OpenVINO's (NNCF) INT8 and
ncnn's files (pnnx) are made and parity-checked; ncnn has no INT8 path from its wheels, and the
record says so from parity.json. Then every bundle's variants on every runtime are timed in ONE
interleaved bench (each with its own per-call floor; one thread and batch 1 by default), and the
variant edgeprune marks to ship (fastest within --max-acc-drop of onnxruntime float) is compared
with onnxruntime FP32 of the same model. The issue's targets are checked and recorded, not assumed:
the chosen variant is never slower than onnxruntime FP32, and (for --speedup-model) at least
--min-speedup faster with at most --max-acc-drop points lost.

    python benchmarks/runtimes.py runs/demo-dense runs/demo-pruned runs/effnet-224 ... --name runtimes
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from common import record

from edgeprune.bench import bench, make_settings
from edgeprune.bench.choose import group_of


def _bundle(
    path: Path, export: bool, calib: int, max_acc_drop: float, eval_limit: int | None
) -> tuple[Path, dict | None]:
    """The bundle of `path` (exported with every runtime first when it is a run and `export`), and the
    export's per-runtime rows (parity.json), or None for a bundle given as is."""
    if (path / "meta.json").is_file():
        return path, None
    if not (path / "config.json").is_file():
        raise SystemExit(f"{path} is neither a run directory nor a bundle")
    if export:
        from edgeprune.export import export_run

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            export_run(path, runtimes="all", calib=calib, max_acc_drop=max_acc_drop, eval_limit=eval_limit)
        for w in caught:
            print(f"warning: {path.name}: {w.message}")
    parity = json.loads((path / "export" / "parity.json").read_text())
    return path / "bundle", {"runtimes": parity.get("runtimes"), "runtime": parity.get("runtime")}


def summarize(report: dict, max_acc_drop: float, speedup_model: str | None, min_speedup: float) -> list[dict]:
    """Per model: onnxruntime FP32, the chosen variant, the speedup, the accuracy lost, the targets."""
    rows = report["results"]
    out = []
    for choice in report["ship"]:
        group = choice["group"]
        members = [r for r in rows if group_of(r) == group]
        base = next((r for r in members if r["runtime"] == "onnxruntime" and r["variant"] == "float"), None)
        chosen = next((r for r in members if r.get("ship")), None)
        entry = {
            "model": group,
            "chosen": choice.get("name"),
            "chosen_runtime": choice.get("runtime"),
            "chosen_variant": choice.get("variant"),
            "reason": choice.get("reason"),
            "onnxruntime_fp32_p50_ms": base and base["latency"].get("1", {}).get("p50_ms"),
            "chosen_p50_ms": choice.get("p50_ms"),
            "speedup_vs_onnxruntime_fp32": choice.get("speedup_vs_onnxruntime_float"),
            "accuracy_lost_points": (
                round((base["accuracy"] - chosen["accuracy"]) * 100, 4)
                if base and chosen and base["accuracy"] is not None and chosen["accuracy"] is not None
                else None
            ),
            "variants": [
                {
                    "name": r["name"],
                    "runtime": r["runtime"],
                    "variant": r["variant"],
                    # the variant's file: "int8" on OpenVINO is its own IR, or onnxruntime's INT8 ONNX run there
                    "file": Path(r["path"]).name,
                    "status": r["status"],
                    "error": r["error"],
                    "p50_ms": r["latency"].get("1", {}).get("p50_ms"),
                    "floor_p50_ms": r["latency"].get("1", {}).get("floor_p50_ms"),
                    "accuracy": r["accuracy"],
                }
                for r in members
            ],
        }
        speedup = entry["speedup_vs_onnxruntime_fp32"]
        entry["never_slower_than_onnxruntime_fp32"] = None if speedup is None else speedup >= 1.0
        if speedup_model is not None and group == speedup_model:
            lost = entry["accuracy_lost_points"]
            entry["speedup_target"] = {
                "min_speedup": min_speedup,
                "max_acc_drop": max_acc_drop,
                "met": speedup is not None and speedup >= min_speedup and lost is not None and lost <= max_acc_drop,
            }
        out.append(entry)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run directories (exported here) and/or bundles")
    ap.add_argument("--no-export", action="store_true", help="use the runs' existing bundles as they are")
    ap.add_argument(
        "--export-only",
        action="store_true",
        help="export the runs and stop (exports need no quiet machine; then run again with --no-export to time)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100, help="timed runs per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--calib", type=int, default=256, help="calibration rows for the INT8 variants")
    ap.add_argument(
        "--eval-limit",
        type=int,
        help="export: at most N test examples (seed-shuffled) in each bundle's eval set, for every runtime's "
        "parity and accuracy (default: the whole test split)",
    )
    ap.add_argument("--max-acc-drop", type=float, default=0.3, help="accuracy points the chosen variant may lose")
    ap.add_argument("--speedup-model", default=None, help="the model (bundle or run name) held to --min-speedup")
    ap.add_argument("--min-speedup", type=float, default=1.8)
    ap.add_argument("--name", default="runtimes", help="benchmarks/results/<name>.json")
    args = ap.parse_args()

    bundles, exports = [], {}
    for path in args.paths:
        bundle, rows = _bundle(path, not args.no_export, args.calib, args.max_acc_drop, args.eval_limit)
        bundles.append(bundle)
        if rows is not None:
            exports[str(path)] = rows  # the path: two runs may share a name (the demo's baseline and another)
    if args.export_only:
        print(f"exported {len(exports)} run(s); time them with --no-export on a quiet machine")
        return
    settings = make_settings(
        threads=args.threads,
        runs=args.runs,
        rounds=args.rounds,
        warmup=args.warmup,
        runtime="all",
        max_acc_drop=args.max_acc_drop,
        label="runtimes",
    )
    report = bench(bundles, settings)  # one interleaved run over every model, runtime and variant
    models = summarize(report, args.max_acc_drop, args.speedup_model, args.min_speedup)
    for m in models:
        speed = m["speedup_vs_onnxruntime_fp32"]
        print(
            f"{m['model']}: ship {m['chosen']} ({m['chosen_p50_ms']} ms; onnxruntime FP32 "
            f"{m['onnxruntime_fp32_p50_ms']} ms; {speed}x; {m['accuracy_lost_points']} points lost)"
        )
        for v in m["variants"]:
            print(
                f"    {v['runtime']:<12} {v['variant']:<6} {v['file']:<28} {v['status']:<8} p50 {v['p50_ms']} ms  "
                f"acc {v['accuracy']}"
            )
    path = record(
        args.name,
        {
            "settings": report["settings"],
            "conditions": report["conditions"],
            "exports": exports,
            "models": models,
            "report": report,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
