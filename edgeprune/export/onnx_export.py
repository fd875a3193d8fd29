"""PyTorch -> ONNX for a run: its model's self-description (the metadata stored in the file); the
conversion itself is edgeprune.models.to_onnx, re-exported here; loading the run's model is
edgeprune.rundir.load_run_model."""

from __future__ import annotations

from edgeprune.models.to_onnx import (
    DEFAULT_OPSET,
    INPUT_NAME,
    IR_VERSION,
    MAX_OPSET,
    META_KEY,
    METADATA_FORMAT,
    MIN_OPSET,
    OUTPUT_NAME,
    check_symbolic,
    dynamic_axes_for,
    example_input,
    example_inputs,
    export_onnx,
    finalize,
    full_check,
    get_metadata,
    input_names,
    metadata_props,
    set_metadata,
    symbolic_problems,
)
from edgeprune.rundir import load_run_model
from edgeprune.version import __version__

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "IR_VERSION",
    "MAX_OPSET",
    "META_KEY",
    "METADATA_FORMAT",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "check_symbolic",
    "dynamic_axes_for",
    "example_input",
    "example_inputs",
    "export_onnx",
    "finalize",
    "full_check",
    "get_metadata",
    "input_names",
    "load_run_model",
    "metadata",
    "metadata_props",
    "set_metadata",
    "symbolic_problems",
]


def metadata(meta: dict, record: dict, logits_width: int) -> dict:
    """The self-description stored in the ONNX file under metadata_props['edgeprune']."""
    return {
        "format": METADATA_FORMAT,
        "task": meta["task"],
        "dataset": meta.get("dataset"),
        "labels": list(meta["labels"]),
        "input_name": INPUT_NAME,
        "inputs": input_names(meta),
        "output_name": OUTPUT_NAME,
        "input_dtype": meta["input_dtype"],
        "input_shape": list(meta["input_shape"]),
        "layout": meta.get("layout"),
        "normalization": meta.get("normalization"),
        "vocab_size": meta.get("vocab_size"),
        "max_len": meta.get("max_len"),
        "vocab_sha256": meta.get("vocab_sha256"),
        # a pretrained text model: its tokenizer.json and the id that pads (edgeprune.data.tokenizer)
        **{k: meta[k] for k in ("tokenizer", "tokenizer_sha256", "pad_id") if k in meta},
        "binary_sigmoid": logits_width == 1,
        "params": int(record["params"]) if record.get("params") is not None else None,
        "edgeprune_version": __version__,
        "source_run": record.get("source_run"),
        # your own data: how the labels were ordered, where the data came from, how images were read
        **{k: meta[k] for k in ("label_order", "source", "preprocessing") if k in meta},
    }
