"""INT8 quantization with onnxruntime: pre-processing, static QDQ with a calibration reader over
training samples, dynamic quantization, the recipes per model kind, and the `auto` choice."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeprune.errors import UserError, machine_refusal
from edgeprune.export.onnx_export import INPUT_NAME, finalize, get_metadata

QUANTIZE_CHOICES = ("auto", "static", "dynamic", "none")
# The share of weights in Linear (Gemm/MatMul) layers above which dynamic quantization of those
# layers is worth trying on a conv model: there the int8 weights are most of the size win.
LINEAR_DOMINATED = 0.5


@dataclass(frozen=True)
class Recipe:
    name: str  # "static" or "dynamic": also the variant's name in parity.json
    method: str
    per_channel: bool
    reduce_range: bool
    op_types: tuple[str, ...] | None  # None: every op type onnxruntime supports for the method
    # dynamic on a conv model: also store the Conv weights as int8 (per output channel), turned
    # back into float when the session loads; the convolutions themselves stay float
    weight_only_conv: bool = False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["op_types"] = list(self.op_types) if self.op_types else None
        return d


def model_kind(model: onnx.ModelProto) -> dict:
    """What the graph is made of: recurrent (LSTM), conv, and the Linear share of the weights."""
    inits = {t.name: int(np.prod(t.dims)) if t.dims else 1 for t in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    linear = sum(
        inits.get(n.input[1], 0) for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and len(n.input) > 1
    )
    total = sum(inits.values()) or 1
    kind = "recurrent" if "LSTM" in ops else "conv" if "Conv" in ops else "linear"
    return {"kind": kind, "linear_share": round(linear / total, 4), "ops": sorted(set(ops))}


def recipes(kind: dict, quantize: str, per_channel: bool, reduce_range: bool, target=None) -> list[Recipe]:
    """The quantized variants to build for this model. `target` (edgeprune.targets.Target)
    narrows `auto` to the preset's recipe for the model's kind."""
    recurrent_or_linear = kind["kind"] in ("recurrent", "linear")
    if quantize == "none":
        return []
    if quantize == "static" and kind["kind"] == "recurrent":
        raise UserError(
            "static quantization does not cover LSTM layers in onnxruntime; use "
            "--quantize dynamic (or auto) for this model."
        )
    # Dynamic on a conv model: only the Linear layers (ConvInteger made a small CNN 3-7x slower).
    dyn_ops = None if recurrent_or_linear else ("MatMul",)
    static = Recipe("static", "static", per_channel, reduce_range, None)
    dynamic = Recipe("dynamic", "dynamic", per_channel, reduce_range, dyn_ops, weight_only_conv=dyn_ops is not None)
    if quantize == "static":
        return [static]
    if quantize == "dynamic":
        return [dynamic]
    if target is not None:  # auto with a preset: the preset's recipe for this kind
        method = target.quantization_linear if recurrent_or_linear else target.quantization_conv
        return {"static": [static], "dynamic": [dynamic], "none": []}[method]
    if recurrent_or_linear:
        return [dynamic]
    return [static, dynamic] if kind["linear_share"] >= LINEAR_DOMINATED else [static]


def preprocess(src: Path, dst: Path) -> str | None:
    """onnxruntime's quant_pre_process (shape inference + graph optimization); falls back to
    shape inference alone when the optimizer step fails. Returns a note when it fell back."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    props = get_metadata(onnx.load(str(src), load_external_data=False))
    src, dst = Path(src).resolve(), Path(dst).resolve()
    # its shape inference prints "unsupported broadcast ..." for what it then handles: not the user's concern
    with _in_dir(dst.parent), _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        note = _preprocess(quant_pre_process, src, dst)
    finalize(dst, props)
    return note


@contextlib.contextmanager
def _in_dir(directory: Path):
    """Run in `directory`: onnxruntime's shape inference leaves temporary files (sym_shape_infer_temp.onnx,
    <uuid>.data) in the current directory, which is the user's."""
    here = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(here)


def _preprocess(quant_pre_process, src: Path, dst: Path) -> str | None:
    note = None
    try:
        quant_pre_process(str(src), str(dst))
    except Exception as e:  # noqa: BLE001
        if machine_refusal(e) is not None:
            raise machine_refusal(e) from None
        note = f"quant_pre_process with optimization failed ({_one_line(e)}); used shape inference only"
        try:
            quant_pre_process(str(src), str(dst), skip_optimization=True)
        except Exception as e2:  # noqa: BLE001
            if machine_refusal(e2) is not None:
                raise machine_refusal(e2) from None
            # onnxruntime's symbolic shape inference gives up on some graphs (a transformer's
            # Min(max_len, seq) against seq); ONNX's own shape inference is enough for MatMul INT8
            note = f"quant_pre_process failed ({_one_line(e2)}); used ONNX shape inference only"
            try:
                quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True)
            except Exception as e3:  # noqa: BLE001
                if machine_refusal(e3) is not None:
                    raise machine_refusal(e3) from None
                raise UserError(
                    f"onnxruntime's quant_pre_process failed on this model ({_one_line(e3)}); use --quantize none."
                ) from None
    return note


def _replace_nodes(model: onnx.ModelProto, nodes: list) -> None:
    """Give the graph these nodes and drop the initializers no node reads any more."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm(A, W, b) with constant W as MatMul + Add, in place: onnxruntime's dynamic
    quantizer handles MatMul but not Gemm, and Linear layers export as Gemm. Returns the count."""
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        wname = f"{node.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
        out = node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{out}_matmul" if has_bias else out
        new_nodes.append(helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=f"{node.name}_MatMul"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [out], name=f"{node.name}_Add"))
        count += 1
    if count:
        _replace_nodes(model, new_nodes)
    return count


def conv_weights_int8(model: onnx.ModelProto) -> int:
    """Store each Conv's constant float weight as int8 with one symmetric scale per output
    channel, turned back into float by Cast + Mul in front of the (still float) Conv, in place.
    The file shrinks by almost 4x on those weights, and no integer convolution runs:
    onnxruntime's constant folding computes Cast + Mul once when the session loads (a
    DequantizeLinear would instead run at every call, 4 us of a 16 us model here). Returns the
    count of weights converted."""
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes, count = [], 0
    for node in model.graph.node:
        w_name = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else None
        t = inits.get(w_name)
        if t is None or t.data_type != onnx.TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(t)
        peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32).reshape(-1, *[1] * (w.ndim - 1))
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        names = [f"{w_name}_int8", f"{w_name}_scale", f"{w_name}_cast", f"{w_name}_dequantized"]
        model.graph.initializer.extend([numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scale, names[1])])
        new_nodes.append(
            helper.make_node("Cast", [names[0]], [names[2]], name=f"{w_name}_Cast", to=onnx.TensorProto.FLOAT)
        )
        new_nodes.append(helper.make_node("Mul", [names[2], names[1]], [names[3]], name=f"{w_name}_Mul"))
        node.input[1] = names[3]
        new_nodes.append(node)
        count += 1
    if count:
        _replace_nodes(model, new_nodes)
    return count


class ArrayReader:
    """A CalibrationDataReader over model-ready arrays, in batches."""

    def __init__(self, x: np.ndarray, batch: int = 32):
        self.batches = [x[i : i + batch] for i in range(0, len(x), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {INPUT_NAME: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs 'Please consider pre-processing' on the root logger even after
    quant_pre_process ran; the pipeline always pre-processes, so that advice is noise here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(src: Path, dst: Path, recipe: Recipe, calib_x: np.ndarray | None = None) -> None:
    """Write the INT8 model of the pre-processed float model `src` to `dst`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    props = get_metadata(onnx.load(str(src), load_external_data=False))
    try:
        with _quiet_root_logger():
            if recipe.method == "static":
                if calib_x is None or not len(calib_x):
                    raise UserError("static quantization needs calibration samples; raise --calib.")
                reader = type("Reader", (ArrayReader, CalibrationDataReader), {})(calib_x)
                quantize_static(
                    str(src),
                    str(dst),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=recipe.per_channel,
                    reduce_range=recipe.reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
                )
            else:
                model = onnx.load(str(src))
                gemm_to_matmul(model)
                with tempfile.TemporaryDirectory() as tmp:
                    mm = Path(tmp) / "matmul.onnx"
                    onnx.save(model, str(mm))
                    quantize_dynamic(
                        str(mm),
                        str(dst),
                        weight_type=QuantType.QInt8,
                        per_channel=recipe.per_channel,
                        reduce_range=recipe.reduce_range,
                        op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
                    )
                if recipe.weight_only_conv:
                    model = onnx.load(str(dst))
                    if conv_weights_int8(model):
                        onnx.save(model, str(dst))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        if machine_refusal(e) is not None:
            raise machine_refusal(e) from None
        raise UserError(
            f"{recipe.method} quantization failed on this model ({_one_line(e)}); "
            "use --quantize none or another method."
        ) from None
    finalize(dst, props)


def choose(
    float_row: dict,
    rows: list[dict],
    max_acc_drop: float,
    latency_ms: dict | None,
    explicit: bool,
    latency_note: str | None = None,
) -> tuple[str, str | None, str]:
    """Pick the default variant: returns (chosen name, the int8 variant kept or None, why).

    Accuracies are fractions; `max_acc_drop` is in points (1.0 = one percentage point). Among
    the quantized variants within budget, the fastest is kept (the smaller file on a latency
    tie or without timings); it becomes the default when explicitly requested or when it is
    not slower than float (beyond 5%, the noise of a short measurement), else float stays the
    default and the INT8 file still ships for the device to measure.
    """
    base = float_row["accuracy"]
    ok, rejected = [], []
    for r in rows:
        drop = (base - r["accuracy"]) * 100
        (ok if drop <= max_acc_drop + 1e-9 else rejected).append((r, drop))
    if not rows:
        return "float", None, "no quantized variant was requested (--quantize none or the target's recipe)"
    if not ok:
        why = "; ".join(f"{r['name']} loses {d:.2f} accuracy points" for r, d in rejected)
        return "float", None, f"every quantized variant exceeds --max-acc-drop {max_acc_drop:g} ({why})"
    lat = latency_ms or {}
    ok.sort(key=lambda rd: (lat.get(rd[0]["name"], float("inf")), rd[0]["size_bytes"]))
    best, drop = ok[0]
    name = best["name"]
    within = f"{name} is within --max-acc-drop {max_acc_drop:g} ({drop:+.2f} points lost)"
    if explicit:
        return "int8", name, f"requested; {within}"
    if name in lat and "float" in lat:
        f, q = lat["float"], lat[name]
        if q <= f * 1.05:
            return "int8", name, f"{within} and not slower than float ({q:.3f} vs {f:.3f} ms p50)"
        return (
            "float",
            name,
            (
                f"{within} but slower than float here ({q:.3f} vs {f:.3f} ms p50); "
                "float is the default, the INT8 file ships for the device to measure"
            ),
        )
    return "int8", name, f"{within}; {latency_note or 'no latency measured'}, so the smaller file is the default"


def _one_line(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:200]
