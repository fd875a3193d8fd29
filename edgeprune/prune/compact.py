"""Physical compaction: rebuild a model with smaller dense layers, holding only surviving units.

Per-layer surgery is one operation, `index_select` along the coupled dimension, driven by the
coupling groups; the new model is built from the same architecture with the new widths and
loads the sliced state dict (an index map, such as the BiLSTM's token map, is renumbered instead:
see groups.remapped_index). The optimizer state (Adam moments, step counts) and connection
masks are sliced the same way, so training continues as if only the removed units changed.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.models import build_model
from edgeprune.prune.groups import keep_indices, model_groups, remapped_index

Keeps = dict[tuple[str, int], torch.Tensor]


def slice_like(name: str, t: torch.Tensor, keeps: Keeps) -> torch.Tensor:
    for (n, dim), idx in keeps.items():
        if n == name:
            t = t.index_select(dim, idx)
    return t


def compact_model(model: nn.Module, removed: dict[str, torch.Tensor]) -> tuple[nn.Module, Keeps]:
    """A new, smaller model computing what `model` computes with `removed` units zeroed."""
    groups = model_groups(model)
    state = model.state_dict()
    keeps = keep_indices(state, groups, removed)
    widths = {g.name: g.width - len(removed.get(g.name, ())) for g in groups}
    new = build_model(model.arch_with_widths(widths))
    new_state = {k: slice_like(k, v, keeps).clone() for k, v in state.items()}
    for g in groups:
        if g.index_map is not None and len(removed.get(g.name, ())):
            new_state[g.index_map] = remapped_index(state[g.index_map], g, removed[g.name])
    new.load_state_dict(new_state)
    new.train(model.training)
    return new, keeps


def compact_optimizer(
    old_model: nn.Module, new_model: nn.Module, optimizer: torch.optim.Optimizer, keeps: Keeps
) -> torch.optim.Optimizer:
    """The same optimizer over the new parameters, its per-weight state sliced to match."""
    new_opt = type(optimizer)(new_model.parameters(), **optimizer.defaults)
    for g_old, g_new in zip(optimizer.param_groups, new_opt.param_groups):
        g_new.update({k: v for k, v in g_old.items() if k != "params"})
    old_params = dict(old_model.named_parameters())
    for name, p_new in new_model.named_parameters():
        st = optimizer.state.get(old_params[name])
        if not st:
            continue
        shape = old_params[name].shape
        # per-weight tensors (moments) are sliced; scalars (step) copied, never shared
        new_opt.state[p_new] = {
            k: (slice_like(name, v, keeps) if v.shape == shape else v).clone() if torch.is_tensor(v) else v
            for k, v in st.items()
        }
    return new_opt


def compact_masks(masks: dict[str, torch.Tensor], keeps: Keeps) -> dict[str, torch.Tensor]:
    return {k: slice_like(k, m, keeps) for k, m in masks.items()}


def zeroed_units(model: nn.Module, tol: float = 0.0) -> dict[str, torch.Tensor]:
    """Units whose removal cannot change the output, so compaction may remove them exactly: own
    parameters all zero (e.g. masked), or, in a group reached through an index map (vocabulary
    rows), no entry of the map pointing at them. Protected units are never listed."""
    from edgeprune.prune.importance import per_unit

    state = model.state_dict()
    out = {}
    for g in model_groups(model):
        if g.index_map is not None:
            unread = torch.ones(g.width, dtype=torch.bool)
            unread[state[g.index_map].cpu()] = False
            unread[list(g.protected)] = False
            out[g.name] = unread.nonzero().view(-1)
            continue
        nonzero = torch.zeros(g.width)
        for s in g.own():
            nonzero += per_unit(state[s.name].abs().float(), s.dim, s.kind, g.width)
        out[g.name] = (nonzero <= tol).nonzero().view(-1)
    return out
