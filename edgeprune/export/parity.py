"""How close each variant is to PyTorch and how well it classifies, measured with onnxruntime."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgeprune.bench import metrics
from edgeprune.bench.feeds import model_feed
from edgeprune.bench.onnxfile import EVAL_CHUNK, eval_chunk
from edgeprune.errors import UserError

ONNX_TOLERANCE = 1e-4  # max abs logit difference: ONNX vs PyTorch, simplified vs ONNX


def session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feed(sess, x: np.ndarray) -> dict[str, np.ndarray]:
    """The session's inputs for model-ready `x`: the one input; or, for a pretrained text model,
    packed ids and masks [N, 2, T] (edgeprune.data.tokenizer) split into its two inputs."""
    return model_feed([i.name for i in sess.get_inputs()], x)


def logits(sess, x: np.ndarray, chunk: int = EVAL_CHUNK) -> np.ndarray:
    out = [sess.run(None, feed(sess, x[i : i + chunk]))[0] for i in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def sizes(path: Path) -> dict:
    data = Path(path).read_bytes()
    return {"size_bytes": len(data), "size_gz_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def scores(out: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    pred = metrics.predictions(out)
    return {"accuracy": metrics.accuracy(y, pred), "f1": metrics.f1(y, pred, num_classes)}


def compare(out: np.ndarray, ref: np.ndarray) -> dict:
    """Max abs logit difference and the rate at which predicted classes agree."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape:
        raise UserError(
            f"the exported model returns logits of shape {out.shape}, PyTorch {ref.shape}; "
            "the export is broken, please report it."
        )
    agree = float((metrics.predictions(out) == metrics.predictions(ref)).mean()) if len(ref) else None
    return {"max_abs_diff": float(np.abs(out - ref).max()) if out.size else 0.0, "argmax_agreement": agree}


def variant_row(
    name: str,
    file: Path,
    fixed_x: np.ndarray,
    torch_fixed: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    num_classes: int,
    nodes: int | None,
) -> dict:
    """One row of parity.json for an ONNX file."""
    sess = session(file)
    row = {"name": name, "file": Path(file).name, "nodes": nodes, **sizes(file)}
    row.update(compare(logits(sess, fixed_x), torch_fixed))
    # a dynamic INT8 model's output for one example depends on its batch: score it one at a time
    row.update(scores(logits(sess, eval_x, eval_chunk(Path(file))), eval_y, num_classes))
    row["eval_n"] = len(eval_y)
    return row


def require_close(row: dict, against: str, tolerance: float = ONNX_TOLERANCE) -> None:
    if not row["max_abs_diff"] <= tolerance:
        raise UserError(
            f"the {row['name']} model differs from {against} by {row['max_abs_diff']:.2e} "
            f"(tolerance {tolerance:g}) on the parity batch; the export is not exact, try "
            "another --opset or --simplifier."
        )
