"""A model as an ONNX file: exported with symbolic batch (and sequence) axes, proved in the saved
file to have kept them symbolic, stamped with metadata, checked by the ONNX checker. Used by export
(a run's model) and by latency (probes of a model at sampled widths)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import onnx
import torch

from edgeprune.errors import UserError, machine_refusal
from edgeprune.version import __version__

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
META_KEY = "edgeprune"
METADATA_FORMAT = 1
DEFAULT_OPSET = 17
MIN_OPSET = 14  # the LSTM/Gemm/Conv forms this exporter emits, and quant_pre_process's needs
MAX_OPSET = 21
# IR 8 loads in every onnxruntime the base install allows (>= 1.17); newer IRs do not.
IR_VERSION = 8


def dynamic_axes_for(meta: dict) -> dict[int, str]:
    """Symbolic axes of the input: the batch always, the sequence for text."""
    return {0: "batch", 1: "seq"} if meta["task"] == "text" else {0: "batch"}


def input_names(meta: dict) -> list[str]:
    """The graph's inputs: `input`, and for a pretrained text model also `attention_mask`."""
    return list(meta.get("inputs") or [INPUT_NAME])


def example_input(meta: dict, batch: int = 2, seq: int = 16) -> torch.Tensor:
    """A tracing input; its sizes must not be 1 (an exporter may specialize a size-1 axis)."""
    if meta["task"] == "text":
        return torch.randint(1, max(2, int(meta.get("vocab_size") or 2)), (batch, seq), dtype=torch.int64)
    return torch.randn(batch, *meta["input_shape"][1:], dtype=torch.float32)


def example_inputs(meta: dict, batch: int = 2, seq: int = 16) -> tuple[torch.Tensor, ...]:
    """One tracing input per graph input; an attention mask with padding in one row, so the
    exporter cannot take the mask for all ones."""
    x = example_input(meta, batch, seq)
    if len(input_names(meta)) == 1:
        return (x,)
    mask = torch.ones_like(x)
    mask[-1, seq // 2 :] = 0
    return (x, mask)


def export_onnx(
    model: torch.nn.Module, meta: dict, path: Path, opset: int = DEFAULT_OPSET, exporter: str = "torchscript"
) -> None:
    """Write `model` to `path` as ONNX with input `input`, output `logits` and symbolic axes."""
    axes = dynamic_axes_for(meta)
    names = input_names(meta)
    args = example_inputs(meta)
    path = Path(path)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            if exporter == "torchscript":
                torch.onnx.export(
                    model,
                    args,
                    str(path),
                    dynamo=False,
                    input_names=names,
                    output_names=[OUTPUT_NAME],
                    opset_version=opset,
                    dynamic_axes={**{n: axes for n in names}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
            elif exporter == "dynamo":
                shapes = tuple({i: torch.export.Dim.DYNAMIC for i in axes} for _ in names)
                torch.onnx.export(
                    model,
                    args,
                    str(path),
                    dynamo=True,
                    input_names=names,
                    output_names=[OUTPUT_NAME],
                    opset_version=max(opset, 18),
                    dynamic_shapes=shapes,
                    external_data=False,
                    verbose=False,
                )
            else:
                raise UserError(f"unknown exporter {exporter!r}; choose torchscript or dynamo.")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any exporter failure is one sentence for the user
        if machine_refusal(e) is not None:
            raise machine_refusal(e) from None  # a full disk is not the model's fault
        text = str(e)
        if "inferred a static shape" in text:
            # torch.export traced a dynamic axis as a constant: seen on the second export of an
            # LSTM in one process. Refuse rather than ship a model that takes one length only.
            raise UserError(
                f"the {exporter} exporter froze a dimension that must stay dynamic (a known "
                "torch.export problem on a second export in one process); use the default "
                "torchscript exporter or export in a fresh process."
            ) from None
        first = (text.strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(
            f"torch.onnx.export ({exporter}) could not export this model ({first}); try another --opset."
        ) from None
    _rename_axes(path, meta)


def _rename_axes(path: Path, meta: dict) -> None:
    """Give symbolic axes the names batch/seq (the dynamo exporter calls them s0, s1, ...)."""
    m = onnx.load(str(path))
    names = dynamic_axes_for(meta)
    renamed = {}
    for vi in m.graph.input:
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param") and i in names:
                renamed[d.dim_param] = names[i]
    if not renamed or all(k == v for k, v in renamed.items()):
        return
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in renamed:
                d.dim_param = renamed[d.dim_param]
    onnx.save(m, str(path))


def symbolic_problems(model: onnx.ModelProto, meta: dict) -> list[str]:
    """Which axes that must be symbolic are frozen to a number (or missing) in the saved graph."""
    inputs = {vi.name: vi for vi in model.graph.input}
    outputs = {vi.name: vi for vi in model.graph.output}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        return [f"the graph's input/output are not named {INPUT_NAME!r}/{OUTPUT_NAME!r}"]
    problems = []
    missing = [n for n in input_names(meta) if n not in inputs]
    if missing:
        return [f"the graph has no input {', '.join(map(repr, missing))}"]
    checks = [(name, inputs[name], i, n) for name in input_names(meta) for i, n in dynamic_axes_for(meta).items()]
    checks.append((OUTPUT_NAME, outputs[OUTPUT_NAME], 0, "batch"))
    for tensor, vi, axis, what in checks:
        dims = vi.type.tensor_type.shape.dim
        if axis >= len(dims):
            problems.append(f"{tensor} has no axis {axis} ({what})")
        elif not dims[axis].HasField("dim_param"):
            frozen = dims[axis].dim_value if dims[axis].HasField("dim_value") else "unknown"
            problems.append(f"{tensor} axis {axis} ({what}) is fixed to {frozen}")
    return problems


def check_symbolic(path: Path, meta: dict) -> None:
    """A UserError when the saved graph at `path` froze an axis that must stay symbolic."""
    problems = symbolic_problems(onnx.load(str(path), load_external_data=False), meta)
    if problems:
        raise UserError(
            f"the exported graph {Path(path).name} froze a dimension that must stay dynamic "
            f"({'; '.join(problems)}); re-run the export in a fresh process or with another --opset."
        )


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace metadata_props with exactly `props` (tools add their own keys; those are dropped)."""
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def get_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def finalize(path: Path, props: dict[str, str], ir_version: int | None = IR_VERSION) -> None:
    """Stamp metadata (and the IR version) into the file at `path`, then run the full checker."""
    m = onnx.load(str(path))
    set_metadata(m, props)
    onnx_opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    # IR 8 covers opsets up to 18; a newer opset needs the IR that came with it.
    if ir_version is not None and m.ir_version > ir_version and onnx_opset <= 18:
        m.ir_version = ir_version
    m.producer_name = "edgeprune"
    m.producer_version = __version__
    onnx.save(m, str(path))
    full_check(path)


def full_check(path: Path) -> None:
    """The ONNX checker in full on the file at `path`; its complaint as one UserError sentence."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001
        if machine_refusal(e) is not None:
            raise machine_refusal(e) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(f"{Path(path).name} fails the ONNX checker ({first}); try another --opset.") from None


def metadata_props(meta_dict: dict) -> dict[str, str]:
    """The metadata_props entry that holds edgeprune's self-description (under META_KEY, as JSON)."""
    return {META_KEY: json.dumps(meta_dict, sort_keys=True)}
