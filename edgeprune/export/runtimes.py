"""Model files for the other runtimes, made from the one checked ONNX file, each checked for parity.

OpenVINO reads the ONNX file itself (no copy); its INT8 variant is made with NNCF's post-training
quantization on the calibration rows and saved as OpenVINO IR. ncnn's files come from pnnx, run
here on the host, never on the device; ncnn has no INT8 path from the pip wheels (see
edgeprune.bench.runtimes.Ncnn.int8). Where a runtime can compute in less than fp32 on this CPU
(`Runtime.lowered`: OpenVINO's bf16 or fp16, ncnn's fp16 storage), that is a variant of its own,
named after its precision: the same file, opened with `precision=`. Every variant is run on its
runtime over the eval set: a float (fp32) variant whose outputs disagree with onnxruntime's beyond
tolerance is refused (one sentence, a warning, and not in the bundle); a bf16, fp16 or INT8 variant
losing more than --max-acc-drop points is measured and not kept. A runtime or tool that is not
installed is a row that says so.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from edgeprune.bench import feeds, metrics, onnxfile
from edgeprune.bench import runtimes as rt

PNNX_TIMEOUT = 600  # seconds: pnnx on a large model takes a while; a hung one must not hang export


def _row(runtime: str, variant: str, file: str | None, status: str, reason: str | None = None, **kw) -> dict:
    return {"runtime": runtime, "variant": variant, "file": file, "status": status, "reason": reason, **kw}


def _say(row: dict) -> dict:
    if row["status"] != "ok":
        warnings.warn(f"{row['runtime']} {row['variant']}: {row['reason']}", stacklevel=3)
    return row


def _check(
    runtime: str,
    variant: str,
    path: Path,
    source: Path,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    ref: np.ndarray,
    float_acc: float,
    max_acc_drop: float,
    precision: str = "fp32",
) -> dict:
    """Run `path` on `runtime` at `precision` over the eval set: parity against onnxruntime's float logits
    `ref`, accuracy; float (fp32) variants must agree within tolerance, bf16/fp16/INT8 ones stay within
    --max-acc-drop."""
    try:
        session = rt.get(runtime).open(path, 1, source, precision=precision)
        out = rt.run_all(session, eval_x, chunk=64)
    except Exception as e:  # noqa: BLE001 - a runtime that cannot run the model is a refused row, said
        return _row(
            runtime, variant, path.name, "refused", f"{runtime} cannot run it: {' '.join(str(e).split())[:300]}"
        )
    par = rt.parity(out, ref)
    acc = metrics.accuracy(np.asarray(eval_y).reshape(-1), metrics.predictions(out))
    drop = round((float_acc - acc) * 100, 4)
    row = _row(
        runtime,
        variant,
        path.name,
        "ok",
        max_abs_diff=par["max_abs_diff"],
        top1_agreement=par["top1_agreement"],
        tolerance=par["tolerance"],
        accuracy=acc,
        acc_drop_points=drop,
        eval_n=len(eval_y),
        precision=session.precision,
    )
    if variant == "float" and not par["ok"]:
        row.update(status="refused", reason=f"{runtime} is refused for this model: {par['reason']}")
    elif variant != "float" and drop > max_acc_drop + 1e-9:
        row.update(
            status="refused",
            reason=f"{runtime} {variant.upper()} loses {drop:.2f} accuracy points, more than --max-acc-drop "
            f"{max_acc_drop:g}",
        )
    return row


def _openvino_int8(source: Path, out: Path, calib_x: np.ndarray) -> tuple[Path | None, str | None]:
    """NNCF's post-training INT8 of the float ONNX model, saved as IR in `out`; (None, why) without NNCF."""
    try:
        nncf = importlib.import_module("nncf")
    except ImportError:
        return None, "nncf is not installed (OpenVINO INT8 at export): pip install 'edgeprune[export-runtimes]'"
    import openvino as ov

    model = ov.Core().read_model(str(source))
    names = [port.get_any_name() for port in model.inputs]

    def example(i: int) -> dict[str, np.ndarray]:  # one calibration row, split into the model's inputs
        return {k: np.ascontiguousarray(v) for k, v in feeds.model_feed(names, calib_x[i : i + 1]).items()}

    data = nncf.Dataset(list(range(len(calib_x))), example)
    quantized = nncf.quantize(model, data, subset_size=len(calib_x))
    path = out / "model.openvino-int8.xml"
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path, None


def _pnnx() -> str | None:
    beside = Path(sys.executable).with_name("pnnx")  # the venv's own pnnx when PATH does not have it
    return str(beside) if beside.is_file() else shutil.which("pnnx")


def _ncnn_files(source: Path, out: Path, work: Path, example: np.ndarray) -> tuple[Path | None, str | None]:
    """model.ncnn.param/.bin in `out`, converted by pnnx from `source` for one example's shape."""
    exe = _pnnx()
    if exe is None:
        return None, "pnnx is not installed (converts ONNX to ncnn at export): pip install 'edgeprune[export-runtimes]'"
    conv = work / "ncnn"
    conv.mkdir(parents=True, exist_ok=True)
    onnx_copy = conv / "model.onnx"
    shutil.copyfile(source, onnx_copy)
    kind = "i64" if np.issubdtype(example.dtype, np.integer) else "f32"
    # one shape per input: a pretrained text model's packed example [2, T] is its ids and its mask
    two = example.ndim == 2 and len(onnxfile.input_shapes(source) or {}) == 2
    rows = list(example) if two else [example]
    shape = ",".join("[" + ",".join(str(d) for d in (1, *r.shape)) + "]" + kind for r in rows)
    try:
        proc = subprocess.run(
            [exe, onnx_copy.name, f"inputshape={shape}"],
            cwd=conv,
            capture_output=True,
            text=True,
            timeout=PNNX_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"pnnx took more than {PNNX_TIMEOUT} s to convert the model"
    param, weights = conv / "model.ncnn.param", conv / "model.ncnn.bin"
    if proc.returncode != 0 or not param.is_file() or not weights.is_file():
        tail = " ".join((proc.stderr or proc.stdout).split()[-30:])
        return None, f"pnnx could not convert the model (exit {proc.returncode}): {tail[:300]}"
    shutil.copyfile(param, out / param.name)
    shutil.copyfile(weights, out / weights.name)
    return out / param.name, None


def export_runtimes(
    names: tuple[str, ...],
    source: Path,
    out: Path,
    work: Path,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    calib_x: np.ndarray,
    max_acc_drop: float,
) -> tuple[list[dict], list[dict], dict[str, Path]]:
    """For each runtime in `names` other than onnxruntime: its variants' rows (parity, accuracy,
    status), the bundle's meta.json entries of the kept ones, and the files to copy into the bundle."""
    ref = rt.run_all(rt.get(rt.DEFAULT).open(source, 1), eval_x, chunk=64)
    float_acc = metrics.accuracy(np.asarray(eval_y).reshape(-1), metrics.predictions(ref))
    rows, entries, files = [], [], {}

    def check(runtime, variant, path, precision="fp32"):
        return _check(runtime, variant, path, source, eval_x, eval_y, ref, float_acc, max_acc_drop, precision)

    def lowered(runtime, path, entry):  # the runtime's bf16/fp16 variants of the float file: lossy, so on accuracy
        for precision in runtime.lowered():
            row = check(runtime.name, precision, path, precision)
            rows.append(_say(row))
            if row["status"] == "ok":
                entries.append({**entry, "name": precision, "precision": precision})

    for name in names:
        if name == rt.DEFAULT:
            continue
        runtime = rt.get(name)
        why = runtime.missing()
        if why:
            rows.append(_say(_row(name, "float", None, "skipped", why)))
            continue
        if name == "openvino":
            row = check(name, "float", source)
            rows.append(_say(row))
            if row["status"] == "ok":
                entries.append({"name": "float", "file": source.name, "runtime": name})
            lowered(runtime, source, {"file": source.name, "runtime": name})
            qpath, why = _openvino_int8(source, out, calib_x)
            if qpath is None:
                rows.append(_say(_row(name, "int8", None, "unavailable", why)))
                continue
            row = check(name, "int8", qpath)
            rows.append(_say(row))
            if row["status"] == "ok":
                entries.append({"name": "int8", "file": qpath.name, "runtime": name, "source": source.name})
                for f in (qpath, qpath.with_name(rt.companion(qpath.name))):
                    files[f.name] = f
        elif name == "ncnn":
            param, why = _ncnn_files(source, out, work, eval_x[0])
            row = check(name, "float", param) if param is not None else _row(name, "float", None, "refused", why)
            rows.append(_say(row))
            if row["status"] == "ok":
                entries.append({"name": "float", "file": param.name, "runtime": name, "source": source.name})
            if param is not None:
                lowered(runtime, param, {"file": param.name, "runtime": name, "source": source.name})
                if any(e["file"] == param.name for e in entries):  # kept as float, fp16 or both: one copy
                    for f in (param, param.with_name(rt.companion(param.name))):
                        files[f.name] = f
            rows.append(_say(_row(name, "int8", None, "unavailable", f"no INT8 variant: {runtime.int8}")))
    return rows, entries, files
