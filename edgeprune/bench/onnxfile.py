"""Read what bench needs from an .onnx file without the `onnx` package: is it a model, how many
parameters does it store."""

from __future__ import annotations

import math
from pathlib import Path

from edgeprune.bench.proto import LEN, ProtoError, fields, packed_varints

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer
TENSOR_DIMS = 1  # TensorProto.dims


def _graph(data: bytes) -> bytes:
    graph = None
    for num, wire, value in fields(data):
        if num == MODEL_GRAPH and wire == LEN:
            graph = value
    if graph is None:
        raise ProtoError("no graph")
    return graph


def check_model(path: Path) -> str | None:
    """None if `path` looks like an ONNX model, else the reason it does not."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    if not data:
        return "the file is empty"
    try:
        for _ in fields(_graph(data)):
            pass
    except ProtoError as e:
        return f"it does not parse as an ONNX protobuf ({e})"
    return None


def count_initializer_elements(path: Path) -> int | None:
    """Total elements over all graph initializers (the stored parameters), None if unreadable."""
    try:
        total = 0
        for num, wire, tensor in fields(_graph(Path(path).read_bytes())):
            if num != GRAPH_INITIALIZER or wire != LEN:
                continue
            dims: list[int] = []
            for tnum, twire, value in fields(tensor):
                if tnum == TENSOR_DIMS:
                    dims.extend(packed_varints(value) if twire == LEN else [value])
            total += math.prod(dims) if dims else 1
        return total
    except (OSError, ProtoError):
        return None
