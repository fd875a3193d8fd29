"""Run every model of a bundle on its eval.npz and save the outputs, or compare two such runs.

    python predict.py run BUNDLE OUT.npz [--timing-runs N]   -> JSON summary on stdout
    python predict.py compare A.npz B.npz [--atol 1e-4]     -> JSON agreement report on stdout

Used by arm64_verify.sh on the host and inside the emulated arm64 root, so it needs only numpy
and onnxruntime (no edgeprune import: it must also run where edgeprune is not installed). A bundle's
models for other runtimes (meta.json "runtime": openvino, ncnn) run through edgeprune's runtime seam
where edgeprune and that runtime are installed (the device image); elsewhere they are listed as
skipped with the reason. The bundle's chosen runtime and variant ("ship") lead the summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Tolerances per variant: float kernels differ across ISAs only by summation order; dynamic INT8
# quantizes activations at run time with ISA-specific kernels (u8s8 on x86, s8s8 on ARM), so a
# quantization step of difference is expected there.
DEFAULT_ATOL = {"float": 1e-4, "int8": 0.1}
# OpenVINO and ncnn pick kernels (and bf16/fp16 where the CPU has them) by ISA: looser across machines.
OTHER_RUNTIME_ATOL = 0.1


def predictions(logits: np.ndarray) -> np.ndarray:
    """Class ids: one logit column is a binary sigmoid model (class 1 when sigmoid > 0.5, i.e.
    logit > 0), otherwise argmax. The rule edgeprune.bench.metrics uses, copied: no edgeprune here."""
    logits = np.asarray(logits)
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return (logits.reshape(len(logits)) > 0).astype(np.int64)
    return logits.reshape(len(logits), -1).argmax(axis=1).astype(np.int64)


def _models(bundle: Path) -> list[tuple[str, Path, str, Path | None]]:
    """(key, file, runtime, source ONNX) per model: key is the name, name@runtime off onnxruntime."""
    meta_path = bundle / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        out = []
        for m in meta.get("models", []):
            runtime = m.get("runtime") or "onnxruntime"
            key = m["name"] if runtime == "onnxruntime" else f"{m['name']}@{runtime}"
            out.append((key, bundle / m["file"], runtime, bundle / m["source"] if m.get("source") else None))
        return out
    return [("float", bundle / "model.onnx", "onnxruntime", None)]


def _runner(path: Path, runtime: str, source: Path | None):
    """(run: x -> logits) on `runtime`; onnxruntime directly, the others through edgeprune's seam."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {inp: x})[0]
    try:
        from edgeprune.bench import runtimes
    except ImportError:
        raise RuntimeError(f"{runtime} models run through edgeprune, which is not installed here") from None
    session = runtimes.get(runtime).open(path, 1, source)  # RuntimeMissing says which extra to install
    spec = session.inputs[0]
    return lambda x: session.run({spec.name: np.ascontiguousarray(x, dtype=spec.dtype)})[0]


def run(bundle: Path, out: Path, timing_runs: int) -> dict:
    import onnxruntime as ort

    meta = json.loads((bundle / "meta.json").read_text()) if (bundle / "meta.json").exists() else {}
    data = np.load(bundle / meta.get("eval", "eval.npz"))
    x, y = data["x"], data["y"]
    outputs, summary = {}, {}
    for name, path, runtime, source in _models(bundle):
        try:
            infer = _runner(path, runtime, source)
        except Exception as e:  # noqa: BLE001 - a runtime this machine lacks is a skipped model, said
            if runtime == "onnxruntime":
                raise
            summary[name] = {"runtime": runtime, "skipped": " ".join(str(e).split())[:300]}
            continue
        logits = infer(x)
        outputs[name] = logits
        times = []
        for _ in range(timing_runs):
            t0 = time.perf_counter()
            infer(x[:1])
            times.append((time.perf_counter() - t0) * 1e3)
        summary[name] = {
            "runtime": runtime,
            "accuracy": float((predictions(logits) == y).mean()),
            "batch1_ms_median": float(np.median(times)) if times else None,
            "timing_runs": timing_runs,
        }
    np.savez(out, **outputs)
    choice = meta.get("runtime") or {}
    ship = choice.get("model", meta.get("default", "float"))
    if choice.get("name") and choice["name"] != "onnxruntime":
        ship = f"{ship}@{choice['name']}"
    return {
        "ship": ship,  # the bundle's chosen model on its chosen runtime (meta.json "runtime")
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "eval_size": len(x),
        "models": summary,
    }


def compare(a_path: Path, b_path: Path, atol: float | None) -> dict:
    a, b = np.load(a_path), np.load(b_path)
    report, ok = {}, True
    for name in sorted(set(a.files) | set(b.files)):
        if name not in a.files or name not in b.files:
            report[name] = {"ok": False, "error": "present on one side only"}
            ok = False
            continue
        la, lb = a[name], b[name]
        other_runtime = "@" in name
        tol = atol if atol is not None else OTHER_RUNTIME_ATOL if other_runtime else DEFAULT_ATOL.get(name, 1e-4)
        diff = float(np.abs(la.astype(np.float64) - lb.astype(np.float64)).max())
        agree = float((predictions(la) == predictions(lb)).mean())  # "argmax" also for one logit: its sign
        good = agree == 1.0 and diff <= tol
        ok = ok and good
        report[name] = {"ok": good, "argmax_agreement": agree, "max_abs_diff": diff, "atol": tol, "n": len(la)}
    return {"ok": ok, "models": report}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--timing-runs", type=int, default=3)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--atol", type=float, default=None)
    args = ap.parse_args()
    if args.cmd == "run":
        print(json.dumps(run(args.bundle, args.out, args.timing_runs)))
        return 0
    result = compare(args.a, args.b, args.atol)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
