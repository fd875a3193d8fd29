"""Test helper: compact a copy of a model (and of its optimizer), leaving the original as it was."""

from __future__ import annotations

import copy

import torch

from edgeprune.prune.groups import model_groups
from edgeprune.prune.surgery import compact_


def compact_model(model, removed, optimizer=None):
    """(compacted copy, keeps) or, with `optimizer`, (copy, keeps, an optimizer over the copy
    holding the sliced state)."""
    small = copy.deepcopy(model)
    opt = None
    if optimizer is not None:
        opt = type(optimizer)(small.parameters(), **optimizer.defaults)
        opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    keeps = compact_(small, model_groups(small), {k: torch.as_tensor(v) for k, v in removed.items()}, opt)
    return (small, keeps) if optimizer is None else (small, keeps, opt)
