"""Tiny, deterministic device bundles for tests and for the deploy / ARM64 scripts.

    python tests/bundle_fixture.py OUT_DIR [--int8] [--text]

The image model is a 2-layer MLP classifier (Flatten -> Gemm -> Relu -> Gemm) on float32 input
[batch, 1, 28, 28] with 10 classes; `eval.npz` holds inputs and the model's own float
predictions as labels, so the float variant scores accuracy 1.0. The text model is a binary
sigmoid classifier with one logit (Gather -> ReduceMean -> Gemm) on int64 token ids
[batch, seq]; every TEXT_WRONG_EVERY-th eval label is the wrong class, so it scores 1 - 1/4.
Needs `onnx` (the train extra) to write the files; reading them needs only onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

NUM_CLASSES = 10
HIDDEN = 16
EVAL_SIZE = 64
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
TEXT_VOCAB, TEXT_SEQ, TEXT_EMBED = 50, 12, 8
TEXT_WRONG_EVERY = 4  # eval labels 0, 4, 8, ... are the class the model does not predict


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((28 * 28, HIDDEN)) / 28.0).astype(np.float32),
        "b1": (rng.standard_normal(HIDDEN) * 0.1).astype(np.float32),
        "w2": (rng.standard_normal((HIDDEN, NUM_CLASSES)) / 4.0).astype(np.float32),
        "b2": (rng.standard_normal(NUM_CLASSES) * 0.1).astype(np.float32),
    }


def reference_logits(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the ONNX model computes, in numpy (float64), for exactness checks."""
    w = _weights(seed)
    h = np.maximum(x.reshape(len(x), -1).astype(np.float64) @ w["w1"] + w["b1"], 0.0)
    return h @ w["w2"] + w["b2"]


def _model(seed: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = _weights(seed)
    nodes = [
        helper.make_node("Flatten", [INPUT_NAME], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    # opset 13 / IR 8: loadable by every onnxruntime the project allows (>= 1.17).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeprune-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _text_weights(seed: int, flip: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    sign = -1.0 if flip else 1.0
    return {
        "emb": rng.standard_normal((TEXT_VOCAB, TEXT_EMBED)).astype(np.float32),
        "w": (sign * rng.standard_normal((TEXT_EMBED, 1))).astype(np.float32),
        "b": (sign * rng.standard_normal(1) * 0.1).astype(np.float32),
    }


def reference_text_logits(ids: np.ndarray, seed: int = 0, flip: bool = False) -> np.ndarray:
    """What the text model computes, in numpy (float64): [N, 1] logits."""
    w = _text_weights(seed, flip)
    pooled = w["emb"].astype(np.float64)[ids].mean(axis=1)
    return pooled @ w["w"] + w["b"]


def _text_model(seed: int, flip: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = _text_weights(seed, flip)
    nodes = [
        helper.make_node("Gather", ["emb", INPUT_NAME], ["e"], axis=0),
        helper.make_node("ReduceMean", ["e"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["pooled", "w", "b"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeprune-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


CNN_CHANNELS = 4


def _cnn_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 200)
    return {
        "cw": (rng.standard_normal((CNN_CHANNELS, 1, 3, 3)) / 3.0).astype(np.float32),
        "cb": (rng.standard_normal(CNN_CHANNELS) * 0.1).astype(np.float32),
        "fw": rng.standard_normal((CNN_CHANNELS, NUM_CLASSES)).astype(np.float32),
        "fb": (rng.standard_normal(NUM_CLASSES) * 0.1).astype(np.float32),
    }


def reference_cnn_logits(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the CNN computes, in numpy (float64): 3x3 conv (pad 1) -> ReLU -> global mean -> linear."""
    w = _cnn_weights(seed)
    xp = np.pad(x.astype(np.float64)[:, 0], ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2], x.shape[3]
    conv = np.zeros((len(x), CNN_CHANNELS, h, wd))
    for di in range(3):
        for dj in range(3):
            conv += w["cw"][None, :, 0, di, dj, None, None] * xp[:, None, di : di + h, dj : dj + wd]
    pooled = np.maximum(conv + w["cb"][None, :, None, None], 0.0).mean(axis=(2, 3))
    return pooled @ w["fw"] + w["fb"]


def _cnn_model(seed: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = _cnn_weights(seed)
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "cw", "cb"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeprune-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _write_manifest(root: Path) -> None:
    lines = []
    for p in sorted(root.iterdir()):
        if p.is_file() and p.name != "MANIFEST.sha256":
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}")
    (root / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


def make_tiny_bundle(out_dir: Path | str, *, int8: bool = False, seed: int = 0) -> Path:
    """Write a complete bundle (model.onnx [+ model.int8.onnx], meta.json, eval.npz,
    MANIFEST.sha256) into `out_dir` and return its path."""
    import onnx

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_model(seed), str(root / "model.onnx"))
    models = [{"name": "float", "file": "model.onnx"}]
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(root / "model.onnx"), str(root / "model.int8.onnx"), weight_type=QuantType.QInt8)
        models.append({"name": "int8", "file": "model.int8.onnx"})

    return _finish_image_bundle(root, models, reference_logits, seed)


def _finish_image_bundle(root: Path, models: list[dict], logits, seed: int) -> Path:
    """Eval set (labels: `logits`' own predictions), meta.json and manifest of a 28x28 image bundle."""
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((EVAL_SIZE, 1, 28, 28)).astype(np.float32)
    y = logits(x, seed).argmax(axis=1).astype(np.int64)
    np.savez(root / "eval.npz", x=x, y=y)

    meta = {
        "format": 1,
        "task": "image-classification",
        "dataset": "synthetic",
        "labels": [f"class{i}" for i in range(NUM_CLASSES)],
        "num_classes": NUM_CLASSES,
        "input_name": INPUT_NAME,
        "input_dtype": "float32",
        "input_shape": ["batch", 1, 28, 28],
        "output_name": OUTPUT_NAME,
        "models": models,
        "eval": "eval.npz",
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    _write_manifest(root)
    return root


def make_cnn_bundle(out_dir: Path | str, *, seed: int = 0) -> Path:
    """Write a bundle of a tiny convolutional classifier (eval labels: its own float predictions)."""
    import onnx

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_cnn_model(seed), str(root / "model.onnx"))
    return _finish_image_bundle(root, [{"name": "float", "file": "model.onnx"}], reference_cnn_logits, seed)


def make_text_bundle(out_dir: Path | str, *, seed: int = 0, flip: bool = False) -> Path:
    """Write a one-logit (binary sigmoid) text bundle into `out_dir` and return its path.

    `flip` negates the logit: a model that predicts the other class on every example."""
    import onnx

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_text_model(seed, flip), str(root / "model.onnx"))
    rng = np.random.default_rng(seed + 1)
    x = rng.integers(0, TEXT_VOCAB, (EVAL_SIZE, TEXT_SEQ)).astype(np.int64)
    y = (reference_text_logits(x, seed)[:, 0] > 0).astype(np.int64)  # the unflipped model's classes
    y[::TEXT_WRONG_EVERY] = 1 - y[::TEXT_WRONG_EVERY]
    np.savez(root / "eval.npz", x=x, y=y)
    meta = {
        "format": 1,
        "task": "text",
        "dataset": "synthetic",
        "labels": ["negative", "positive"],
        "num_classes": 2,
        "input_name": INPUT_NAME,
        "input_dtype": "int64",
        "input_shape": ["batch", "seq"],
        "vocab_size": TEXT_VOCAB,
        "max_len": TEXT_SEQ,
        "binary_sigmoid": True,
        "output_name": OUTPUT_NAME,
        "models": [{"name": "float", "file": "model.onnx"}],
        "eval": "eval.npz",
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    _write_manifest(root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--int8", action="store_true", help="also write a dynamic-INT8 variant (image bundle)")
    ap.add_argument("--text", action="store_true", help="the one-logit text bundle instead of the image one")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.text:
        print(make_text_bundle(args.out_dir, seed=args.seed))
    else:
        print(make_tiny_bundle(args.out_dir, int8=args.int8, seed=args.seed))


if __name__ == "__main__":
    main()
