"""Simplify an ONNX graph with onnxsim, falling back to onnxslim where onnxsim is missing or fails.

The metadata is put back afterwards (onnxsim adds its own keys; those are dropped) and the
caller checks parity against the unsimplified model.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeprune.errors import UserError
from edgeprune.export.onnx_export import finalize, get_metadata

SIMPLIFIERS = ("onnxsim", "onnxslim", "none")


def _one_line(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:200]


def _onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    out, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim's own check of the simplified model failed")
    return out


def _onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


RUNNERS = {"onnxsim": _onnxsim, "onnxslim": _onnxslim}


def simplify(src: Path, dst: Path, simplifier: str = "onnxsim") -> dict:
    """Write the simplified `src` to `dst`: which tool ran, why a fallback happened, node counts."""
    if simplifier not in SIMPLIFIERS:
        raise UserError(f"unknown --simplifier {simplifier!r}; choose one of {', '.join(SIMPLIFIERS)}.")
    model = onnx.load(str(src))
    props = get_metadata(model)
    info = {
        "requested": simplifier,
        "used": None,
        "fallback_reason": None,
        "nodes_before": len(model.graph.node),
        "nodes_after": None,
    }
    order = {"onnxsim": ["onnxsim", "onnxslim"], "onnxslim": ["onnxslim", "onnxsim"], "none": []}[simplifier]
    reasons = []
    out = None
    for tool in order:
        try:
            out = RUNNERS[tool](onnx.load(str(src)))
            info["used"] = tool
            break
        except ImportError:
            reasons.append(f"{tool} is not installed")
        except Exception as e:  # noqa: BLE001 - a simplifier failing is a fallback, never a crash
            reasons.append(f"{tool} failed: {_one_line(e)}")
    if reasons:
        info["fallback_reason"] = "; ".join(reasons)
    if out is None:
        out = model  # "none", or every simplifier failed: the exported graph as it is
        info["used"] = "none"
    onnx.save(out, str(dst))
    finalize(dst, props)
    info["nodes_after"] = len(onnx.load(str(dst), load_external_data=False).graph.node)
    return info
