"""Is `edgeprune bench` repeatable? Run it several times on the same models and compare.

    python benchmarks/bench_stability.py [--repeats 5] [--threads N] [--out FILE]

Builds a small CNN that takes a few ms per call (A), a byte-identical copy (A'), and a
half-depth variant (B); runs the real command `edgeprune bench A A' B` --repeats times, each a
fresh set of worker processes with interleaved rounds, and checks that across repeats
  - each model's p50 and round median agree within 5 % ((max - min) / median), and
  - the ratios A/A' and A/B agree within 5 %.
Writes benchmarks/results/bench_stability.json with the machine, versions, command, every
repeat's numbers and whether the 5 % target was met. Needs `onnx` to build the models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOLERANCE = 0.05
STATS = ("p50_ms", "round_median_ms", "round_min_ms")
OUT = Path(__file__).parent / "results" / "bench_stability.json"


def conv_net(path: Path, blocks: int, channels: int = 64, size: int = 64) -> Path:
    """Conv3x3+Relu blocks on [batch, 3, size, size], global pool, 10 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "input", 3
    for i in range(blocks):
        w = (rng.standard_normal((channels, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev, cin = f"r{i}", channels
    fc = (rng.standard_normal((channels, 10)) / np.sqrt(channels)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stability_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def spread(values: list[float]) -> float:
    """(max - min) / median: the whole range of the repeats, relative."""
    return float((max(values) - min(values)) / np.median(values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="default: bench's default")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import onnx
    import onnxruntime

    work = Path(tempfile.mkdtemp(prefix="edgeprune-stability-"))
    try:
        a = conv_net(work / "A.onnx", blocks=4)
        a_copy = work / "A_copy.onnx"
        shutil.copyfile(a, a_copy)
        b = conv_net(work / "B.onnx", blocks=2)
        bench_args = [
            "bench",
            str(a),
            str(a_copy),
            str(b),
            "--runs",
            str(args.runs),
            "--rounds",
            str(args.rounds),
            "--warmup",
            "10",
        ]
        if args.threads:
            bench_args += ["--threads", str(args.threads)]
        repeats, machine, settings = [], None, None
        for k in range(args.repeats):
            out = work / f"repeat{k}.json"
            load = os.getloadavg()
            t0 = time.time()
            subprocess.run(
                [sys.executable, "-m", "edgeprune", *bench_args, "--json", str(out)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            report = json.loads(out.read_text())
            machine, settings = report["machine"], report["settings"]
            lat = {Path(r["path"]).stem: r["latency"]["1"] for r in report["results"]}
            rep = {
                "seconds": round(time.time() - t0, 1),
                "loadavg_1min_before": load[0],
                "conditions": report["conditions"],
                "models": {name: {s: v[s] for s in (*STATS, "p90_ms", "floor_p50_ms")} for name, v in lat.items()},
            }
            rep["ratios"] = {
                s: {"A/A_copy": lat["A"][s] / lat["A_copy"][s], "A/B": lat["A"][s] / lat["B"][s]} for s in STATS
            }
            repeats.append(rep)
            print(
                f"repeat {k + 1}/{args.repeats}: "
                + ", ".join(f"{n} p50 {v['p50_ms']:.3f} ms" for n, v in rep["models"].items())
                + f"; background {report['conditions']['background_cpu_cores']:.2f} cores",
                flush=True,
            )

        summary, met = {}, True
        for s in STATS:
            entry = {f"{n} spread": spread([r["models"][n][s] for r in repeats]) for n in ("A", "A_copy", "B")}
            for ratio in ("A/A_copy", "A/B"):
                values = [r["ratios"][s][ratio] for r in repeats]
                entry[f"{ratio} spread"] = spread(values)
                entry[f"{ratio} median"] = float(np.median(values))
            # A and its copy are the same bytes: their ratio should also sit at 1.
            entry["A/A_copy max |ratio-1|"] = max(abs(r["ratios"][s]["A/A_copy"] - 1) for r in repeats)
            checks = [v for k, v in entry.items() if "spread" in k or "|ratio-1|" in k]
            entry["within_5pct"] = all(v <= TOLERANCE for v in checks)
            summary[s] = entry
        met = {s: summary[s]["within_5pct"] for s in STATS}
        result = {
            "format": 1,
            "what": "repeatability of `edgeprune bench` across fresh runs (batch 1)",
            "command": ["python", "benchmarks/bench_stability.py", *sys.argv[1:]],
            "bench_command": ["edgeprune", *bench_args, "--json", "<tmp>/repeatN.json"],
            "models": {
                "A": "CNN, 4x Conv3x3(64)+Relu on 3x64x64",
                "A_copy": "byte copy of A",
                "B": "CNN, 2x Conv3x3(64)+Relu on 3x64x64",
            },
            "machine": machine,
            "versions": {
                "python": platform.python_version(),
                "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__,
                "onnx": onnx.__version__,
            },
            "settings": settings,
            "tolerance": TOLERANCE,
            "repeats": repeats,
            "summary": summary,
            "target_met": met,  # per statistic: every spread and |A/A'-1| within 5 %
            "busy_repeats": sum(bool(r["conditions"]["busy"]) for r in repeats),
            "note": (
                "spread = (max - min) / median over the repeats. The machine is shared "
                "(other jobs may run); each repeat records how many cores other processes "
                "used while it measured (conditions.background_cpu_cores)."
            ),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        print(f"5% target met per statistic: {met}; wrote {args.out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
