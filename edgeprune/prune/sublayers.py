"""Whole sublayers: what is left of an attention with no head or an FFN with no neuron computes no
product, so it is replaced by what it then computes, exactly.

When every unit of a group goes, its producers have no output rows and its consumers no input
columns: x @ W.T + b with a W of no columns is b. So, one rule, applied wherever tensors change
size (compaction and the reload of a pruned state dict both go through surgery.update_shapes):

- a (plain torch.nn) Linear with no output features returns x[..., :0] (nothing multiplied);
- a Linear with no input features returns its bias, broadcast to the batch (zeros without one);
- a module holding three or more Linear children that all have no output features (the query,
  key and value of an attention whose heads are all gone) returns the pair transformers'
  attention modules return, (output, attention weights): the output is what its own Linear
  children with no inputs (an output projection, ViT's o_proj) make of nothing, else x[..., :0]
  for the parent's output projection; the weights are None.

For a Hugging Face BERT layer whose heads are all gone the attention block is then
LayerNorm(output.dense.bias + input); with no FFN neuron left, LayerNorm(output.dense.bias + input)
too; in a ViT the residual adds the projection's bias. Classes are swapped in place (a subclass of
the layer's own class), so state-dict keys, the zero-sized tensors that record the sizes, and
`isinstance` stay as they were. Whether the rule computes what the masked model computes is
checked on the model itself before any group may be emptied (prune/compact.py: whole_sublayers).
"""

from __future__ import annotations

import torch
from torch import nn

# the fewest empty Linear children that make a module an attention with no head (query, key, value)
QKV = 3


class EmptyLinear(nn.Linear):
    """A Linear left with no output features or no input features: no product computed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_features == 0:
            return x[..., :0]
        if self.bias is None:
            return x.new_zeros(*x.shape[:-1], self.out_features)
        return self.bias.expand(*x.shape[:-1], self.out_features)


def _no_heads_forward(self, hidden_states: torch.Tensor, *args, **kwargs):
    out = hidden_states[..., :0]
    for m in self.children():
        if isinstance(m, nn.Linear) and m.in_features == 0 and m.out_features > 0:
            out = m(out)
    return out, None


_NO_HEADS: dict[type, type] = {}


def _no_heads_class(cls: type) -> type:
    """`cls` with the forward of an attention whose heads are all gone (one subclass per class)."""
    if getattr(cls, "_edgeprune_no_heads", False):
        return cls
    if cls not in _NO_HEADS:
        _NO_HEADS[cls] = type(
            f"NoHeads{cls.__name__}", (cls,), {"forward": _no_heads_forward, "_edgeprune_no_heads": True}
        )
    return _NO_HEADS[cls]


def empty_linears(m: nn.Module) -> list[nn.Linear]:
    return [c for c in m.children() if isinstance(c, nn.Linear) and c.out_features == 0]


def is_headless(m: nn.Module) -> bool:
    """An attention module with no head left: QKV or more Linear children, all with no outputs,
    and at most one Linear child that reads their (empty) result."""
    lin = [c for c in m.children() if isinstance(c, nn.Linear)]
    empty = [c for c in lin if c.out_features == 0]
    rest = [c for c in lin if c.out_features > 0]
    return len(empty) >= QKV and len(rest) <= 1 and all(c.in_features == 0 for c in rest)


def empty_sublayers(model: nn.Module) -> list[str]:
    """Apply the rule to every module of `model` it fits (again: idempotent); returns the names of
    the attention modules left with no head."""
    headless = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and (m.in_features == 0 or m.out_features == 0):
            if type(m) is nn.Linear:  # a subclass has its own forward, which the rule cannot vouch for
                m.__class__ = EmptyLinear
        elif not isinstance(m, nn.Linear) and is_headless(m):
            m.__class__ = _no_heads_class(type(m))
            headless.append(name)
    return headless
