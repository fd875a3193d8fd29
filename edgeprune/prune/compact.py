"""Helpers around compaction (which itself happens in place: prune/surgery.py): connection masks
sliced like their tensors, and the units whose removal provably changes nothing."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.prune.groups import model_groups, unit_sums

Keeps = dict[tuple[str, int], torch.Tensor]


def slice_like(name: str, t: torch.Tensor, keeps: Keeps) -> torch.Tensor:
    for (n, dim), idx in keeps.items():
        if n == name:
            t = t.index_select(dim, idx)
    return t


def compact_masks(masks: dict[str, torch.Tensor], keeps: Keeps) -> dict[str, torch.Tensor]:
    return {k: slice_like(k, m, keeps) for k, m in masks.items()}


def zeroed_units(model: nn.Module, tol: float = 0.0) -> dict[str, torch.Tensor]:
    """Units whose removal cannot change the output, so compaction may remove them exactly: own
    parameters all zero (e.g. masked), or, in a group reached through an index map (vocabulary
    rows), no entry of the map pointing at them. Protected units are never listed."""
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
            nonzero += unit_sums(state[s.name].abs().float(), s, g.width)
        out[g.name] = (nonzero <= tol).nonzero().view(-1)
    return out
