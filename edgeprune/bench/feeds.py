"""Inputs to time a model with: from its eval data when there is some, else synthetic."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

DEFAULT_SEQ = 128  # token sequence length when neither metadata nor eval data gives one
DEFAULT_VOCAB = 100  # token ids drawn from [0, DEFAULT_VOCAB) without metadata
MASK_INPUT = "attention_mask"  # a pretrained text model's second input: 1 on tokens, 0 on padding
# a pretrained text model's examples are packed [N, 2, T]: row IDS the token ids, row MASK the attention
# mask (edgeprune.data.tokenizer writes them; defined here, the lower layer, so the device reads them too)
IDS, MASK = 0, 1

NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    ort_type: str  # as onnxruntime reports it, e.g. "tensor(float)"
    shape: tuple  # ints or symbolic names/None, as declared by the model

    @property
    def dtype(self):
        try:
            return NUMPY_TYPES[self.ort_type]
        except KeyError:
            raise ValueError(f"input {self.name!r} has type {self.ort_type}, which bench cannot synthesize") from None


def read_metadata(custom_metadata_map: dict) -> dict | None:
    """The edgeprune metadata dict stored in the model, None when absent or unreadable."""
    raw = custom_metadata_map.get("edgeprune")
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) else None


def concrete_shape(spec: InputSpec, batch: int, meta: dict | None, seq_len: int | None = None) -> tuple[int, ...]:
    """The declared shape with the first axis set to `batch` and other symbolic axes filled."""
    seq = seq_len or (meta or {}).get("max_len") or DEFAULT_SEQ
    dims = []
    for i, d in enumerate(spec.shape):
        if i == 0:
            dims.append(batch)
        elif isinstance(d, int) and d > 0:
            dims.append(d)
        else:
            dims.append(int(seq))
    return tuple(dims)


def model_feed(names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """A model's inputs (named `names`) for model-ready examples `x`: the one input; or, for a
    pretrained text model (token ids, then the attention mask), packed ids and masks [N, 2, T]
    (edgeprune.data.tokenizer) split into its two inputs."""
    if len(names) == 2 and x.ndim == 3:
        return {names[0]: x[:, IDS], names[1]: x[:, MASK]}
    return {names[0]: x}


def synthetic(spec: InputSpec, batch: int, meta: dict | None, seed: int = 0, seq_len: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = concrete_shape(spec, batch, meta, seq_len)
    dtype = spec.dtype
    if spec.name == MASK_INPUT:  # every token attended: the cost of a full-length input
        return np.ones(shape, dtype=dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        high = (meta or {}).get("vocab_size") or DEFAULT_VOCAB
        return rng.integers(0, int(high), shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def from_eval(x: np.ndarray, batch: int, spec: InputSpec, seq_len: int | None = None) -> np.ndarray:
    """`batch` real examples (repeated if the eval set is smaller) in the model's dtype; with
    `seq_len`, token rows are cut to that many tokens or right-padded with 0 (the pad id) to it."""
    rows = np.resize(x, (batch,) + x.shape[1:]) if len(x) < batch else x[:batch]
    if seq_len is not None and rows.ndim == 2:
        rows = rows[:, :seq_len]
        if rows.shape[1] < seq_len:
            rows = np.pad(rows, ((0, 0), (0, seq_len - rows.shape[1])))
    return np.ascontiguousarray(rows, dtype=spec.dtype)


def make_feed(
    specs: list[InputSpec],
    batch: int,
    meta: dict | None,
    eval_x: np.ndarray | None,
    seq_len: int | None = None,
    eval_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Timed inputs: real eval rows when there are some (one input, or token ids with their
    `eval_mask` for a model whose second input is the attention mask), else synthetic ones. With
    `seq_len`, masks are cut or padded like the ids; padding a mask with 1s times the full length."""
    if seq_len is not None and not all(len(s.shape) == 2 and not isinstance(s.shape[1], int) for s in specs):
        raise ValueError(f"--seq-len {seq_len} needs a model whose inputs are token sequences of any length")
    if eval_x is not None and len(specs) == 1 and len(eval_x):
        return {specs[0].name: from_eval(eval_x, batch, specs[0], seq_len)}
    if eval_x is not None and eval_mask is not None and len(eval_x) and [s.name for s in specs[1:]] == [MASK_INPUT]:
        ids = from_eval(eval_x, batch, specs[0], seq_len)
        mask = from_eval(eval_mask, batch, specs[1], seq_len)
        if seq_len is not None and seq_len > eval_mask.shape[1]:
            mask[:, eval_mask.shape[1] :] = 1  # the tokens asked for are attended, as in a text that long
        return {specs[0].name: ids, specs[1].name: mask}
    return {s.name: synthetic(s, batch, meta, seed=i, seq_len=seq_len) for i, s in enumerate(specs)}
