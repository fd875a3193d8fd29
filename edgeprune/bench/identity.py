"""An Identity ONNX model written byte by byte: the per-call floor of onnxruntime.

Timing it with the same inputs as a model shows how much of a latency is the runtime's own
overhead (binding, allocation, dispatch) rather than the model's arithmetic.
"""

from __future__ import annotations

from edgeprune.bench.proto import field_bytes, field_varint

IR_VERSION = 7  # onnxruntime >= 1.8 reads it; Identity has been stable since opset 13
OPSET = 13

# TensorProto.DataType values for the dtypes onnxruntime reports as "tensor(<name>)".
ELEM_TYPES = {
    "float": 1,
    "uint8": 2,
    "int8": 3,
    "uint16": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "string": 8,
    "bool": 9,
    "float16": 10,
    "double": 11,
    "uint32": 12,
    "uint64": 13,
    "bfloat16": 16,
}


def _value_info(name: str, elem_type: int, rank: int) -> bytes:
    # Every dim symbolic, so one model serves any batch size and sequence length.
    dims = b"".join(field_bytes(1, field_bytes(2, f"d{i}")) for i in range(rank))
    tensor_type = field_varint(1, elem_type) + field_bytes(2, dims)
    return field_bytes(1, name) + field_bytes(2, field_bytes(1, tensor_type))


def _elem(ort_type: str) -> int:
    return ELEM_TYPES[ort_type.removeprefix("tensor(").removesuffix(")")]


def identity_model(inputs: list[tuple[str, str, int]]) -> bytes:
    """Serialized ModelProto passing each (name, ort type like 'tensor(float)', rank) through."""
    graph = b""
    for i, (name, _, _) in enumerate(inputs):
        node = field_bytes(1, name) + field_bytes(2, f"out{i}") + field_bytes(3, f"id{i}") + field_bytes(4, "Identity")
        graph += field_bytes(1, node)
    graph += field_bytes(2, "edgeprune_floor")
    for name, ort_type, rank in inputs:
        graph += field_bytes(11, _value_info(name, _elem(ort_type), rank))
    for i, (_, ort_type, rank) in enumerate(inputs):
        graph += field_bytes(12, _value_info(f"out{i}", _elem(ort_type), rank))
    opset = field_bytes(1, "") + field_varint(2, OPSET)
    return field_varint(1, IR_VERSION) + field_bytes(2, "edgeprune") + field_bytes(7, graph) + field_bytes(8, opset)
