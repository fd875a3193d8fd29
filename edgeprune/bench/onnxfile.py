"""Read what bench needs from an .onnx file without the `onnx` package: is it a model, how many
parameters does it store, which operators does it run."""

from __future__ import annotations

import math
from pathlib import Path

from edgeprune.bench.proto import LEN, ProtoError, fields, packed_varints

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_NODE = 1  # GraphProto.node
GRAPH_INITIALIZER = 5  # GraphProto.initializer
GRAPH_INPUT = 11  # GraphProto.input (ValueInfoProto: name 1, type 2)
TENSOR_NAME = 8  # TensorProto.name
TENSOR_DIMS = 1  # TensorProto.dims
NODE_OP_TYPE = 4  # NodeProto.op_type
# Operators whose output for one example depends on the rest of its batch: they quantize
# activations with a scale computed over the whole input tensor (onnxruntime's dynamic INT8).
BATCH_DEPENDENT_OPS = ("DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul")
# Evaluation batch: large for speed, unless a model's outputs depend on the batch; then one
# example at a time, as a device answering single requests runs it.
EVAL_CHUNK = 256


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


def op_types(path: Path) -> set[str]:
    """The operator types of the main graph's nodes (empty if unreadable)."""
    try:
        out = set()
        for num, wire, node in fields(_graph(Path(path).read_bytes())):
            if num == GRAPH_NODE and wire == LEN:
                out.update(v.decode() for n, w, v in fields(node) if n == NODE_OP_TYPE and w == LEN)
        return out
    except (OSError, ProtoError, UnicodeDecodeError):
        return set()


def eval_chunk(path: Path) -> int:
    """How many examples to evaluate per call: 1 for batch-dependent (dynamic INT8) models."""
    return 1 if op_types(path) & set(BATCH_DEPENDENT_OPS) else EVAL_CHUNK


def _one(buf: bytes, num: int, wire: int = LEN):
    """The last value of field `num` in `buf` (protobuf: the last one wins), None when absent."""
    found = None
    for n, w, v in fields(buf):
        if n == num and w == wire:
            found = v
    return found


def input_shapes(path: Path) -> dict[str, tuple] | None:
    """The graph inputs the caller feeds (initializers listed as inputs left out) and their declared
    shapes: an int per fixed axis, None per symbolic one. None when the file cannot be read."""
    try:
        graph = _graph(Path(path).read_bytes())
        inits = set()
        for num, wire, tensor in fields(graph):
            if num == GRAPH_INITIALIZER and wire == LEN:
                name = _one(tensor, TENSOR_NAME)
                inits.add(name.decode() if name is not None else None)
        out: dict[str, tuple] = {}
        for num, wire, value_info in fields(graph):
            if num != GRAPH_INPUT or wire != LEN:
                continue
            name = (_one(value_info, 1) or b"").decode()
            tensor_type = _one(_one(value_info, 2) or b"", 1)  # TypeProto.tensor_type
            shape = _one(tensor_type, 2) if tensor_type is not None else None  # TypeProto.Tensor.shape
            if name in inits or shape is None:
                continue
            dims = []
            for n, w, dim in fields(shape):
                if n == 1 and w == LEN:  # TensorShapeProto.dim: dim_value 1 (varint) or dim_param 2
                    value = _one(dim, 1, wire=0)
                    dims.append(value if isinstance(value, int) and value > 0 else None)
            out[name] = tuple(dims)
        return out
    except (OSError, ProtoError, UnicodeDecodeError):
        return None


MODEL_METADATA = 14  # ModelProto.metadata_props (StringStringEntryProto: key 1, value 2)
# TensorProto.DataType -> the type string onnxruntime reports; the other runtimes are told the same.
ORT_TYPES = {
    1: "tensor(float)",
    2: "tensor(uint8)",
    3: "tensor(int8)",
    5: "tensor(int16)",
    6: "tensor(int32)",
    7: "tensor(int64)",
    9: "tensor(bool)",
    10: "tensor(float16)",
    11: "tensor(double)",
}


def input_types(path: Path) -> dict[str, str] | None:
    """The graph inputs' element types as onnxruntime names them ("tensor(float)"); None when unreadable."""
    try:
        out: dict[str, str] = {}
        for num, wire, value_info in fields(_graph(Path(path).read_bytes())):
            if num != GRAPH_INPUT or wire != LEN:
                continue
            name = (_one(value_info, 1) or b"").decode()
            tensor_type = _one(_one(value_info, 2) or b"", 1)
            elem = _one(tensor_type, 1, wire=0) if tensor_type is not None else None
            if isinstance(elem, int):
                out[name] = ORT_TYPES.get(elem, f"tensor(type {elem})")
        return out
    except (OSError, ProtoError, UnicodeDecodeError):
        return None


def metadata_props(path: Path) -> dict[str, str]:
    """The model's metadata_props as a dict ({} when there are none or the file cannot be read)."""
    try:
        out = {}
        for num, wire, entry in fields(Path(path).read_bytes()):
            if num == MODEL_METADATA and wire == LEN:
                out[(_one(entry, 1) or b"").decode()] = (_one(entry, 2) or b"").decode()
        return out
    except (OSError, ProtoError, UnicodeDecodeError):
        return {}
