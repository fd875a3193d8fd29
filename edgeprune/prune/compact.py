"""Helpers around compaction (which itself happens in place: prune/surgery.py): connection masks
sliced like their tensors, the units whose removal provably changes nothing, and the groups
whose every unit may go (a whole attention or FFN sublayer, prune/sublayers.py)."""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from edgeprune.prune.groups import Group, model_groups, param_masks_for_units, unit_sums
from edgeprune.prune.surgery import compact_

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


WHOLE_ATOL = 1e-5  # masked vs emptied output, relative to the output's scale (float32)


def _logits(out):
    """The tensor a model's output leads with (a tensor, a transformers ModelOutput, a tuple)."""
    if torch.is_tensor(out):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    return None


def _all_linear(model: nn.Module, g: Group) -> bool:
    """Every tensor of the group is the weight or bias of a torch.nn.Linear (an attention's heads and
    output projection, an FFN's two layers): the layers whose emptying prune/sublayers.py knows."""
    for s in g.slices:
        path, _, kind = s.name.rpartition(".")
        try:
            m = model.get_submodule(path)
        except AttributeError:
            return False
        if type(m) is not nn.Linear or kind not in ("weight", "bias"):
            return False
    return True


@torch.no_grad()
def whole_sublayers(model: nn.Module, groups: list[Group], example_inputs: tuple) -> str | None:
    """Mark the groups whose every unit may go (`Group.whole`): those made of Linear layers only,
    once a copy of the model with all of them emptied (prune/sublayers.py's rule) gives, in eval
    mode on `example_inputs`, what the copy with all of them masked gave. Returns why none was
    marked when there were candidates (they then keep at least one unit, as any other group)."""
    candidates = [g for g in groups if g.width and _all_linear(model, g)]
    if not candidates:
        return None
    try:
        trial = copy.deepcopy(model).eval()
    except Exception as e:  # noqa: BLE001 - a model that cannot be copied cannot be tried
        return f"the model cannot be copied to try it ({type(e).__name__})"
    all_units = {g.name: torch.arange(g.width) for g in candidates}
    state = trial.state_dict()
    for k, mask in param_masks_for_units(trial, candidates, all_units).items():
        state[k].masked_fill_(~mask, 0)
    with torch.random.fork_rng(devices=[]):
        try:
            want = _logits(trial(*example_inputs))
            trial_groups = [replace(g, whole=True) for g in candidates]
            compact_(trial, trial_groups, all_units)
            got = _logits(trial(*example_inputs))
        except Exception as e:  # noqa: BLE001 - the rule does not fit this model: keep a unit everywhere
            return f"emptied, it does not run ({type(e).__name__}: {str(e).strip()[:120]})"
    if want is None or got is None or got.shape != want.shape:
        return "emptied, its output is not the masked model's"
    scale = max(1.0, float(want.abs().max()))
    diff = float((want - got).abs().max())
    if diff > WHOLE_ATOL * scale:
        return f"emptied, it differs from the masked model by {diff:.3g}"
    for g in candidates:
        g.whole = True
    return None
