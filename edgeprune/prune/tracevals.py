"""The tracer's value of a tensor: its shape and where its prunable channels lie.

Shared by the tracer's pass (prune/trace.py) and the layer rules (prune/layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorVal:
    """A tensor: its shape and where its prunable channels lie (cdim None: nothing prunable flows here).

    `segs` lists the channel spaces along dim `cdim` in order, as (space id, block): a space's units
    in order, `block` positions each."""

    shape: tuple
    cdim: int | None = None
    segs: tuple = ()
    param: str | None = None  # the state-dict key when the tensor is a parameter or buffer read directly
    origin: str | None = None  # for a tensor with no prunable channels: the op that fixed them


def fixed_like(shape, origin: str | None = None):
    """A value of the node's output structure in which no channel is prunable (fixed by `origin`)."""
    if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
        return TensorVal(shape, origin=origin)
    if isinstance(shape, (tuple, list)):
        return tuple(fixed_like(s, origin) for s in shape)
    if isinstance(shape, dict):
        return {k: fixed_like(v, origin) for k, v in shape.items()}
    return None


def origin_of(x) -> str | None:
    return x.origin if isinstance(x, TensorVal) else None
