"""What edgeprune knows about each kind of layer with parameters: one rule per layer, in one place.

A `LayerRule` holds, for one kind of layer:

- `couple`: how its channels couple (the tracer, prune/trace.py, calls it with the layer's input);
- `numbers`: what `couple` needs, read from a torch.nn layer (`m`), or a reason the layer is not
  understood;
- `functional` / `call_numbers`: the torch.nn.functional ops that compute the same layer when
  given a layer's own parameters (timm's norm+act layers call `F.batch_norm`, a 'same'-padding conv
  subclass `F.conv2d`), and what `couple` needs, read from such a call;
- `resize`: how the layer's shape attributes follow its tensors after compaction (prune/surgery.py);
- `uses`: how often each weight is used per call, for MACs (prune/cost.py).

Adding a layer type is adding one rule to `RULES`. Ops without parameters (activations, pooling,
reshapes, adds) are the tracer's op tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch.nn.functional as F
from torch import nn

from edgeprune.prune.tracevals import TensorVal, fixed_like, origin_of


@dataclass(frozen=True)
class LayerRule:
    """What edgeprune knows about one kind of layer with parameters (`types`): how its channels
    couple, what that needs from the layer, the functional ops that compute it, how it is resized
    after compaction and how often each weight is used per call (see the module docstring)."""

    name: str
    types: tuple
    couple: Callable  # couple(c, t, x, shape, where, **numbers) -> the output's value
    numbers: Callable  # numbers(m, t, args, kwargs) -> dict for couple, or a reason (str) to freeze
    functional: dict = field(default_factory=dict)  # F op -> {parameter role: argument position}
    call_numbers: Callable | None = None  # (fn, keys, args, kwargs, x, owner, state) -> dict or a reason
    resize: Callable | None = None  # resize(m): shape attributes from the layer's tensors
    uses: Callable | None = None  # uses(m, output) -> {weight name: uses per call, whole batch}
    one_input: bool = True  # called with exactly one tensor (else `numbers` checks the arguments)


def _arg(args, kwargs, i: int, name: str, default):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


# --- couplings -------------------------------------------------------------------------------------


def couple_conv(c, t, x, shape, where, groups: int, out_channels: int, rows: tuple):
    """A convolution: `rows` are its weight and bias keys (a missing bias is skipped)."""
    weight = rows[0]
    if isinstance(x, TensorVal) and x.cdim is not None and x.cdim != 1:
        c.freeze(x, where, f"convolution reads channels on dim 1 but they are on dim {x.cdim}")
        x = TensorVal(x.shape)
    prunable = isinstance(x, TensorVal) and x.cdim is not None
    in_channels = x.shape[1] if isinstance(x, TensorVal) else None
    if groups > 1 and groups == in_channels:  # depthwise: each output channel follows its input channel
        if not prunable:
            return TensorVal(shape)
        mult = out_channels // groups
        for r in rows:
            c.emit(r, 0, x.segs, scored=True, scale=mult)
        return TensorVal(shape, 1, tuple((sp, blk * mult) for sp, blk in x.segs))
    if groups > 1:  # whole-group rule: every group keeps the same units of its slice of channels
        if prunable:
            piece = c.chunk_layout(x.segs, groups)
            if piece is None:
                c.freeze(x, where, f"grouped convolution (groups={groups}) over channels it cannot split evenly")
            else:
                c.emit(weight, 1, piece, scored=False)
        sp = c.sp.new(out_channels // groups, t)
        segs = ((sp, 1),) * groups
        for r in rows:
            c.emit(r, 0, segs, scored=True)
        return TensorVal(shape, 1, segs)
    if prunable:
        c.emit(weight, 1, x.segs, scored=False)
    return c.produce(t, out_channels, list(rows), shape, 1)


def couple_linear(c, t, x, shape, where, out_features: int, rows: tuple):
    if isinstance(x, TensorVal) and x.cdim is not None:
        if x.cdim != len(x.shape) - 1:
            c.freeze(x, where, f"Linear mixes the last dim but the channels are on dim {x.cdim}")
        else:
            c.emit(rows[0], 1, x.segs, scored=False)
    return c.produce(t, out_features, list(rows), shape, len(shape) - 1)


def couple_per_channel(c, t, x, shape, where, scored: tuple, buffers: tuple = ()):
    """A layer with one entry per channel on dim 1 (BatchNorm, InstanceNorm, PReLU): the keys of its
    scored parameters and of its buffers (None: absent)."""
    if not isinstance(x, TensorVal) or x.cdim is None:
        return fixed_like(shape, origin_of(x))
    if x.cdim != 1:
        c.freeze(x, where, f"normalizes channels on dim 1 but they are on dim {x.cdim}")
        return TensorVal(shape)
    for p in scored:
        if p is not None:
            c.emit(p, 0, x.segs, scored=True)
    for b in buffers:
        if b is not None:
            c.emit(b, 0, x.segs, scored=False)
    return TensorVal(shape, 1, x.segs)


def norm_over_channels(c, x, where, what):
    """Frozen: the statistics mix the channels. The output keeps the input's channels (frozen with them)."""
    c.freeze(
        x,
        where,
        f"{what} normalizes over the channels: removing one changes the statistics of the others, "
        "so masks cannot stand in for removal",
    )
    return x


def couple_group_norm(c, t, x, shape, where, num_groups: int, rows: tuple):
    channels = x.shape[1] if isinstance(x, TensorVal) and len(x.shape) > 1 else None
    if num_groups == channels:  # one channel per group: per-channel statistics
        return couple_per_channel(c, t, x, shape, where, rows)
    return norm_over_channels(c, x, where, "GroupNorm over channel groups")


def couple_prelu(c, t, x, shape, where, weight: str, num_parameters: int):
    if num_parameters == 1:
        return c.unary(x, shape)
    return couple_per_channel(c, t, x, shape, where, (weight,))


def couple_layer_norm(c, t, x, shape, where, k: int, rows: tuple | None):
    """Normalization over the last `k` dims, with an affine weight and bias (`rows`, None: none)."""
    if not isinstance(x, TensorVal) or x.cdim is None:
        return fixed_like(shape, origin_of(x))
    if x.cdim < len(x.shape) - k:  # normalized over other dims: each channel on its own
        return TensorVal(shape, x.cdim, x.segs)
    if not c.allow_norm or k != 1 or rows is None:
        return norm_over_channels(c, x, where, "LayerNorm")
    for p in rows:
        if p is not None:
            c.emit(p, 0, x.segs, scored=True)
    return TensorVal(shape, x.cdim, x.segs)


def couple_embedding(c, t, x, shape, where, dim: int, weight: str):
    if isinstance(x, TensorVal) and x.cdim is not None:
        c.freeze(x, where, "embedding indices carry channels")
    sp = c.sp.new(dim, t)
    c.emit(weight, 1, ((sp, 1),), scored=True)
    return TensorVal(shape, len(shape) - 1, ((sp, 1),))


def couple_rnn(c, t, x, shape, where, gates: int, hidden: int, lstm: bool):
    """A single-layer, one-direction LSTM (4 gates) or GRU (3): a unit is a hidden unit, its gate rows
    in each matrix and bias, and its recurrent input column."""
    if isinstance(x, TensorVal) and x.cdim is not None:
        if x.cdim != len(x.shape) - 1:
            c.freeze(x, where, f"the RNN reads features on the last dim but the channels are on dim {x.cdim}")
        else:
            c.emit(f"{t}.weight_ih_l0", 1, x.segs, scored=False)
    sp = c.sp.new(hidden, t)
    unit = ((sp, 1),)
    for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        for g in range(gates):
            c.emit(f"{t}.{p}", 0, unit, scored=True, base=g * hidden)
    c.emit(f"{t}.weight_hh_l0", 1, unit, scored=False)  # the unit's recurrent input column
    out = TensorVal(shape[0], len(shape[0]) - 1, unit)
    states = shape[1] if lstm else (shape[1],)
    hs = tuple(TensorVal(s, len(s) - 1, unit) for s in states)
    return (out, hs) if lstm else (out, hs[0])


# --- numbers from a layer, or from a functional call on its parameters ----------------------------


def _wb(t):
    return f"{t}.weight", f"{t}.bias"


def _conv_call(fn, keys, args, kwargs, x, owner, state):
    groups = _arg(args, kwargs, 6, "groups", 1)
    if groups != 1 and not (isinstance(owner, nn.modules.conv._ConvNd) and owner.groups == groups):
        return "a grouped convolution whose groups no conv layer holds"
    return {"groups": groups, "out_channels": state[keys["weight"]][0], "rows": (keys["weight"], keys["bias"])}


def _group_norm_call(fn, keys, args, kwargs, x, owner, state):
    n = _arg(args, kwargs, 1, "num_groups", None)
    channels = x.shape[1] if isinstance(x, TensorVal) and len(x.shape) > 1 else None
    if n == channels and not isinstance(owner, nn.GroupNorm):  # its group count would not follow the channels
        return "one group per channel, but not a GroupNorm's (its group count would not follow)"
    return {"num_groups": n, "rows": (keys["weight"], keys["bias"])}


def _layer_norm_call(fn, keys, args, kwargs, x, owner, state):
    normalized = _arg(args, kwargs, 1, "normalized_shape", None)
    if not isinstance(normalized, (tuple, list)):
        return "normalizes over a shape the tracer cannot read"
    # over the channels it is prunable only as a LayerNorm (whose normalized_shape follows)
    rows = (keys["weight"], keys["bias"]) if keys["weight"] is not None and isinstance(owner, nn.LayerNorm) else None
    return {"k": len(normalized), "rows": rows}


def _rnn_numbers(m, t, args, kwargs):
    if m.num_layers != 1 or m.bidirectional or getattr(m, "proj_size", 0):
        return "only single-layer, one-direction LSTM/GRU are understood"
    if len(args) > 1 or kwargs:
        return "an initial state is passed (its width is fixed)"
    lstm = isinstance(m, nn.LSTM)
    return {"gates": 4 if lstm else 3, "hidden": m.hidden_size, "lstm": lstm}


def _needs_weight(keys) -> str | None:
    return None if keys.get("weight") is not None else "without a layer's own weight"


# --- shape attributes after compaction -------------------------------------------------------------


def _resize_conv(m: nn.Conv2d) -> None:
    out = m.weight.shape[0]
    if m.groups > 1 and m.groups == m.in_channels:  # depthwise: the groups follow the channels
        mult = m.out_channels // m.groups
        m.groups = out // mult
        m.in_channels = m.groups
    else:
        m.in_channels = m.weight.shape[1] * m.groups
    m.out_channels = out


def _resize_linear(m: nn.Linear) -> None:
    m.out_features, m.in_features = m.weight.shape


def _resize_norm(m: nn.modules.batchnorm._NormBase) -> None:
    t = m.weight if m.weight is not None else m.running_mean
    m.num_features = t.shape[0]


def _resize_layer_norm(m: nn.LayerNorm) -> None:
    m.normalized_shape = (m.weight.shape[0],)


def _resize_group_norm(m: nn.GroupNorm) -> None:
    if m.num_groups == m.num_channels:
        m.num_groups = m.weight.shape[0]
    m.num_channels = m.weight.shape[0]


def _resize_embedding(m: nn.Embedding) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


def _resize_rnn(m: nn.RNNBase) -> None:
    m.input_size = m.weight_ih_l0.shape[1]
    m.hidden_size = m.weight_hh_l0.shape[1]
    m.flatten_parameters()


def _resize_prelu(m: nn.PReLU) -> None:
    m.num_parameters = m.weight.shape[0]


# --- uses per call, for MACs -----------------------------------------------------------------------


def _uses_conv(m, output) -> dict:
    return {"weight": output.numel() / output.shape[1]}  # batch x output positions


def _uses_linear(m, output) -> dict:
    return {"weight": output.numel() / output.shape[-1]}  # batch x tokens


def _uses_rnn(m, output) -> dict:
    out = output[0] if isinstance(output, tuple) else output
    if isinstance(out, nn.utils.rnn.PackedSequence):
        steps = float(out.data.shape[0])  # every real step of every sequence in the batch
    else:
        steps = float(out.shape[0] * out.shape[1]) if out.dim() == 3 else float(out.shape[0])
    return {n: steps for n, _ in m.named_parameters() if n.startswith("weight")}


# --- the rules -------------------------------------------------------------------------------------

RULES: list[LayerRule] = [
    LayerRule(
        "conv",
        (nn.Conv1d, nn.Conv2d, nn.Conv3d),
        couple_conv,
        lambda m, t, args, kwargs: {"groups": m.groups, "out_channels": m.out_channels, "rows": _wb(t)},
        functional={fn: {"weight": 1, "bias": 2} for fn in (F.conv1d, F.conv2d, F.conv3d)},
        call_numbers=lambda fn, keys, *rest: _needs_weight(keys) or _conv_call(fn, keys, *rest),
        resize=_resize_conv,
        uses=_uses_conv,
    ),
    LayerRule(
        "linear",
        (nn.Linear,),
        couple_linear,
        lambda m, t, args, kwargs: {"out_features": m.out_features, "rows": _wb(t)},
        functional={F.linear: {"weight": 1, "bias": 2}},
        call_numbers=lambda fn, keys, args, kwargs, x, owner, state: (
            _needs_weight(keys) or {"out_features": state[keys["weight"]][0], "rows": (keys["weight"], keys["bias"])}
        ),
        resize=_resize_linear,
        uses=_uses_linear,
    ),
    LayerRule(  # BatchNorm and InstanceNorm: per-channel statistics
        "batch_norm",
        (nn.modules.batchnorm._NormBase,),
        couple_per_channel,
        lambda m, t, args, kwargs: {"scored": _wb(t), "buffers": (f"{t}.running_mean", f"{t}.running_var")},
        functional={
            fn: {"running_mean": 1, "running_var": 2, "weight": 3, "bias": 4} for fn in (F.batch_norm, F.instance_norm)
        },
        call_numbers=lambda fn, keys, *rest: {
            "scored": (keys["weight"], keys["bias"]),
            "buffers": (keys["running_mean"], keys["running_var"]),
        },
        resize=_resize_norm,
    ),
    LayerRule(
        "layer_norm",
        (nn.LayerNorm,),
        couple_layer_norm,
        lambda m, t, args, kwargs: {"k": len(m.normalized_shape), "rows": _wb(t) if m.weight is not None else None},
        functional={F.layer_norm: {"weight": 2, "bias": 3}},
        call_numbers=_layer_norm_call,
        resize=_resize_layer_norm,
    ),
    LayerRule(
        "group_norm",
        (nn.GroupNorm,),
        couple_group_norm,
        lambda m, t, args, kwargs: {"num_groups": m.num_groups, "rows": _wb(t)},
        functional={F.group_norm: {"weight": 2, "bias": 3}},
        call_numbers=_group_norm_call,
        resize=_resize_group_norm,
    ),
    LayerRule(
        "embedding",
        (nn.Embedding,),
        couple_embedding,
        lambda m, t, args, kwargs: {"dim": m.embedding_dim, "weight": f"{t}.weight"},
        functional={F.embedding: {"weight": 1}},
        call_numbers=lambda fn, keys, args, kwargs, x, owner, state: (
            _needs_weight(keys) or {"dim": state[keys["weight"]][1], "weight": keys["weight"]}
        ),
        resize=_resize_embedding,
    ),
    LayerRule(
        "rnn",
        (nn.LSTM, nn.GRU),
        couple_rnn,
        _rnn_numbers,
        resize=_resize_rnn,
        uses=_uses_rnn,
        one_input=False,
    ),
    LayerRule(
        "prelu",
        (nn.PReLU,),
        couple_prelu,
        lambda m, t, args, kwargs: {"weight": f"{t}.weight", "num_parameters": m.num_parameters},
        functional={F.prelu: {"weight": 1}},
        call_numbers=lambda fn, keys, args, kwargs, x, owner, state: (
            _needs_weight(keys) or {"weight": keys["weight"], "num_parameters": math.prod(state[keys["weight"]])}
        ),
        resize=_resize_prelu,
    ),
]

# A plain RNN (tanh units) is counted and resized like the LSTM and GRU, but not coupled.
_RESIZE_ONLY = [(nn.RNNBase, _resize_rnn)]
_USES_ONLY = [(nn.RNN, _uses_rnn)]

FUNCTIONAL: dict = {fn: rule for rule in RULES for fn in rule.functional}


def rule_for(m: nn.Module) -> LayerRule | None:
    """The rule for a torch.nn layer the tracer meets as a module call (exact types for conv and
    embedding: a subclass with a forward of its own is traced into instead)."""
    for rule in RULES:
        if isinstance(m, rule.types):
            if rule.name in ("conv", "embedding") and type(m) not in rule.types:
                return None
            if rule.name == "linear" and isinstance(m, nn.Bilinear):
                return None
            return rule
    return None


def resize_layer(m: nn.Module) -> None:
    """Bring layer `m`'s shape attributes in line with its tensors (after compaction)."""
    for rule in RULES:
        if rule.resize is not None and isinstance(m, rule.types):
            rule.resize(m)
            return
    for types, resize in _RESIZE_ONLY:
        if isinstance(m, types):
            resize(m)
            return


def weight_uses(m: nn.Module, output) -> dict | None:
    """Uses per call of each weight of layer `m` for the whole batch (None: it multiplies nothing)."""
    for rule in RULES:
        if rule.uses is not None and isinstance(m, rule.types):
            return rule.uses(m, output)
    for types, uses in _USES_ONLY:
        if isinstance(m, types):
            return uses(m, output)
    return None
