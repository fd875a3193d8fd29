"""Coupling: which slices of which tensors belong to one prunable unit.

A *group* is one prunable layer (its units are output channels, output features, LSTM hidden
units of one direction, or embedding dimensions). Each group lists the slices that depend on its
units: its own (scored) slices and every consumer slice (the next layer's inputs, BatchNorm
entries, the flattened conv block in the first Linear, an LSTM unit's four gate rows and its
recurrent column, its input to whatever reads the concatenated directions). Masking and
compaction both read these groups and nothing else.

Vocabulary rows are a group too, of a kind of their own: the tokens reach their rows through an
integer buffer (`index_map`, the BiLSTM's token_map), so removing a row sends its tokens to the
group's `fallback` row (<unk>) instead of zeroing an input, and `protected` rows (<pad>, <unk>)
are never removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from edgeprune.errors import UserError


@dataclass(frozen=True)
class Slice:
    """Tensor `name` (a state-dict key) along `dim`: unit k maps to indices given by `kind`.

    plain: offset + k;  gates: g * width + k for the four LSTM gates g;
    block: offset + k * block + j for j < block (a conv channel flattened into a Linear).
    `offset_of` names a group whose current width is the offset (directions concatenated).
    """

    name: str
    dim: int
    kind: str = "plain"
    block: int = 1
    offset_of: str | None = None
    scored: bool = False  # part of the unit's own parameters, summed into its score


_RNN_PARAMS = ("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l")


@dataclass
class Group:
    name: str
    width: int
    slices: list[Slice] = field(default_factory=list)
    index_map: str | None = None  # buffer whose values are this group's unit indices
    fallback: int | None = None  # the unit that takes the index_map entries of removed units
    protected: tuple[int, ...] = ()  # units never removed
    # entries of a module's list of channel counts that count this group's units: (module path,
    # attribute, index, per unit); a traced split at sizes read from that list (timm's MixedConv2d)
    sizes: tuple[tuple[str, str, int, int], ...] = ()
    # every unit may go: the sublayer's rule (prune/sublayers.py) was checked to compute what the
    # masked model computes with all of them masked (prune/compact.py: whole_sublayers)
    whole: bool = False

    def own(self) -> list[Slice]:
        return [s for s in self.slices if s.scored]

    def channels_per_unit(self) -> int:
        """Channels of its producing layer one unit stands for: 1, except where a traced chunk or
        grouped convolution couples one channel of each piece into a unit (an LSTM unit's four
        gate rows are one hidden unit)."""
        per_key: dict[tuple[str, int], int] = {}
        for s in self.own():
            if s.name.rpartition(".")[2].startswith(_RNN_PARAMS):
                continue  # gate rows of one hidden unit
            per_key[(s.name, s.dim)] = per_key.get((s.name, s.dim), 0) + indices_per_unit(s)
        return max(per_key.values(), default=1)


@dataclass(frozen=True)
class OffsetSlice(Slice):
    """Unit k maps to offset + k * block + j (j < block) along `dim`, the offset fixed when the
    groups were derived (a traced concatenation: the pruner traces again after every compaction)."""

    kind: str = "offset"
    offset: int = 0


def expand(s: Slice, units: torch.Tensor, width: int, widths: dict[str, int]) -> torch.Tensor:
    """Indices along `s.dim` of tensor `s.name` that belong to `units` of a group of `width`."""
    units = units.long()
    if isinstance(s, OffsetSlice):
        return (s.offset + units.view(-1, 1) * s.block + torch.arange(s.block).view(1, -1)).reshape(-1)
    offset = widths[s.offset_of] if s.offset_of else 0
    if s.kind == "plain":
        return units + offset
    if s.kind == "gates":
        return (torch.arange(4).view(4, 1) * width + units.view(1, -1)).reshape(-1)
    if s.kind == "block":
        return (offset + units.view(-1, 1) * s.block + torch.arange(s.block).view(1, -1)).reshape(-1)
    raise ValueError(s.kind)


def indices_per_unit(s: Slice) -> int:
    """How many indices along `s.dim` one unit owns."""
    return 4 if s.kind == "gates" else s.block


def unit_sums(t: torch.Tensor, s: Slice, width: int, widths: dict[str, int] | None = None) -> torch.Tensor:
    """Sum a tensor shaped like parameter `s.name` down to one value per unit, over the slice's entries."""
    if s.kind == "gates":
        return t.movedim(s.dim, 0).reshape(4, width, -1).sum(dim=(0, 2))
    if s.kind in ("plain", "block") and not s.offset_of and t.shape[s.dim] == width * s.block:
        return t.movedim(s.dim, 0).reshape(width, -1).sum(dim=1)
    idx = expand(s, torch.arange(width), width, widths or {})
    return t.index_select(s.dim, idx.to(t.device)).movedim(s.dim, 0).reshape(width, -1).sum(dim=1)


GROUP_BUILDERS: dict[str, Callable[[nn.Module], list[Group]]] = {}


def register_groups(arch_name: str):
    def deco(fn):
        GROUP_BUILDERS[arch_name] = fn
        return fn

    return deco


def model_groups(model: nn.Module) -> list[Group]:
    name = getattr(model, "arch_name", type(model).__name__)
    if name not in GROUP_BUILDERS:
        raise UserError(f"edgeprune cannot prune a '{name}' model; supported: {', '.join(GROUP_BUILDERS)}.")
    return GROUP_BUILDERS[name](model)


@register_groups("cnn")
def cnn_groups(model) -> list[Group]:
    groups = []
    n_conv, n_fc = len(model.convs), len(model.fcs)
    first_linear = "fcs.0" if n_fc else "classifier"
    for i, conv in enumerate(model.convs):
        own = [Slice(f"convs.{i}.weight", 0, scored=True), Slice(f"convs.{i}.bias", 0, scored=True)]
        if model.norms:
            own += [
                Slice(f"norms.{i}.{p}", 0, scored=p in ("weight", "bias"))
                for p in ("weight", "bias", "running_mean", "running_var")
            ]
        consumer = (
            Slice(f"convs.{i + 1}.weight", 1)
            if i + 1 < n_conv
            else Slice(f"{first_linear}.weight", 1, kind="block", block=model.spatial)
        )
        groups.append(Group(f"conv{i}", conv.out_channels, own + [consumer]))
    for j, fc in enumerate(model.fcs):
        nxt = f"fcs.{j + 1}" if j + 1 < n_fc else "classifier"
        groups.append(
            Group(
                f"fc{j}",
                fc.out_features,
                [
                    Slice(f"fcs.{j}.weight", 0, scored=True),
                    Slice(f"fcs.{j}.bias", 0, scored=True),
                    Slice(f"{nxt}.weight", 1),
                ],
            )
        )
    return groups


@register_groups("bilstm")
def bilstm_groups(model) -> list[Group]:
    from edgeprune.models.bilstm import PAD, UNK

    n = len(model.layers)
    groups = []
    if model.token_map is not None:
        groups.append(
            Group(
                "vocab",
                model.embedding.num_embeddings,
                [Slice("embedding.weight", 0, scored=True)],
                index_map="token_map",
                fallback=UNK,
                protected=(PAD, UNK),
            )
        )
    groups.append(
        Group(
            "embed",
            model.embedding.embedding_dim,
            [Slice("embedding.weight", 1, scored=True)]
            + [Slice(f"layers.0.{d}.weight_ih_l0", 1) for d in ("fwd", "bwd")],
        )
    )
    for i, layer in enumerate(model.layers):
        for d in ("fwd", "bwd"):
            lstm = getattr(layer, d)
            p = f"layers.{i}.{d}"
            own = [
                Slice(f"{p}.{t}", 0, kind="gates", scored=True)
                for t in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
            ]
            own.append(Slice(f"{p}.weight_hh_l0", 1))  # the unit's recurrent input column
            offset = f"lstm{i}.fwd" if d == "bwd" else None
            if i + 1 < n:
                consumers = [Slice(f"layers.{i + 1}.{e}.weight_ih_l0", 1, offset_of=offset) for e in ("fwd", "bwd")]
            else:
                consumers = [Slice("classifier.weight", 1, offset_of=offset)]
            groups.append(Group(f"lstm{i}.{d}", lstm.hidden_size, own + consumers))
    return groups


def _kept(
    state: dict[str, torch.Tensor], groups: list[Group], removed: dict[str, torch.Tensor]
) -> dict[tuple[str, int], torch.Tensor]:
    """For every (tensor, dim) touched by a removal, a boolean vector of the indices that survive."""
    widths = {g.name: g.width for g in groups}
    keep: dict[tuple[str, int], torch.Tensor] = {}
    for g in groups:
        units = removed.get(g.name)
        if units is None or len(units) == 0:
            continue
        for s in g.slices:
            k = keep.setdefault((s.name, s.dim), torch.ones(state[s.name].shape[s.dim], dtype=torch.bool))
            k[expand(s, units.cpu(), g.width, widths)] = False
    return keep


def param_masks_for_units(
    model: nn.Module, groups: list[Group], removed: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks (parameter name -> mask shaped like the parameter) zeroing removed units.

    Parameters only: a group's slices also name buffers (BatchNorm's running_mean and running_var),
    which MaskSet.apply never touches and count_params never counts, so a mask of one would make
    `Pruner.live_params()` subtract a masked channel's statistics as if they were weights. Compaction
    slices the buffers with the units (surgery.py); until then a masked unit's statistics are unused."""
    state = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    masks: dict[str, torch.Tensor] = {}
    for (name, dim), k in _kept(state, groups, removed).items():
        if name not in params:
            continue
        shape = [1] * state[name].dim()
        shape[dim] = -1
        m = masks.setdefault(name, torch.ones_like(state[name], dtype=torch.bool))
        m &= k.to(m.device).view(shape)
    return masks


@torch.no_grad()
def redirect_removed(model: nn.Module, groups: list[Group], removed: dict[str, torch.Tensor]) -> None:
    """Point the index_map entries of removed units at their group's fallback unit (in place):
    what masking means for a vocabulary row."""
    for g in groups:
        units = removed.get(g.name)
        if g.index_map is None or units is None or len(units) == 0:
            continue
        buf = model.get_buffer(g.index_map)
        buf[torch.isin(buf, units.to(buf.device))] = g.fallback


def remapped_index(index_map: torch.Tensor, g: Group, removed: torch.Tensor) -> torch.Tensor:
    """`index_map` after the units `removed` leave group `g`: survivors renumbered in order, the
    entries of removed units sent to the fallback unit."""
    keep = torch.ones(g.width, dtype=torch.bool)
    keep[removed.long()] = False
    if g.fallback is None or not keep[g.fallback]:
        raise ValueError(f"group {g.name}: its fallback unit must survive")
    new_pos = torch.full((g.width,), -1, dtype=index_map.dtype)
    new_pos[keep] = torch.arange(int(keep.sum()), dtype=index_map.dtype)
    out = new_pos[index_map.cpu()]
    return torch.where(out < 0, new_pos[g.fallback], out).to(index_map.device)


def keep_indices(
    state: dict[str, torch.Tensor], groups: list[Group], removed: dict[str, torch.Tensor]
) -> dict[tuple[str, int], torch.Tensor]:
    """For every (tensor, dim) touched by a removal, the sorted indices that survive."""
    return {key: k.nonzero().view(-1) for key, k in _kept(state, groups, removed).items()}


def sizes_after(
    shapes: dict[str, tuple[int, ...]], groups: list[Group], keep: dict[str, int]
) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor once each group keeps `keep[group]` of its units (any units:
    a unit owns the same number of indices of each tensor whichever it is)."""
    changed: dict[str, list[int]] = {}  # only the shapes that change are copied (called thousands of times)
    for g in groups:
        gone = g.width - keep.get(g.name, g.width)
        if gone <= 0:
            continue
        for s in g.slices:
            if s.name in shapes:
                changed.setdefault(s.name, list(shapes[s.name]))[s.dim] -= gone * indices_per_unit(s)
    return {k: tuple(changed[k]) if k in changed else tuple(v) for k, v in shapes.items()}
