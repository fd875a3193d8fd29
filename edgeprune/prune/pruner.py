"""The pruner: plugs into the training loop (after each backward, at the end of each epoch),
scores units and connections, removes what falls under the threshold or the budget, and
compacts the model (progressively, or once at the end)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeprune.models import build_model
from edgeprune.prune.compact import compact_masks, compact_model, compact_optimizer
from edgeprune.prune.groups import Group, model_groups, param_masks_for_units, redirect_removed
from edgeprune.prune.importance import TaylorScores, normalize
from edgeprune.prune.masks import MaskSet
from edgeprune.prune.schedule import PruneSchedule, round_keep

CONNECTION_SUFFIXES = (".weight", ".weight_ih_l0", ".weight_hh_l0")
NOTCH_SHARE = 32  # a budget notch takes at most this share (1/32) of a big layer's survivors
PROTECTED = float(torch.finfo(torch.float32).max)  # the normalized score of a protected unit


def connection_params(model: nn.Module) -> list[str]:
    """Weights whose single entries are connections: conv, linear and LSTM matrices."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() >= 2 and name.endswith(CONNECTION_SUFFIXES) and not name.startswith("embedding"):
            out.append(name)
    return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class StepReport:
    removed_units: dict[str, int] = field(default_factory=dict)
    removed_connections: int = 0
    budget: float | None = None
    compacted: bool = False


def _move(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move a model and its optimizer's per-weight state in place (the optimizer keeps its parameters)."""
    model.to(device)
    for state in optimizer.state.values():
        for k, v in state.items():
            if torch.is_tensor(v) and v.dim() > 0:  # moments; Adam's scalar step stays on the CPU
                state[k] = v.to(device)


class Pruner:
    def __init__(
        self, model: nn.Module, schedule: PruneSchedule, baseline_params: int | None = None, reduce_scores=None
    ):
        self.schedule = schedule
        # Called on the scores before every decision; under DDP it sums them over the ranks so that
        # all ranks decide the same (see edgeprune.distributed.all_reduce_scores).
        self.reduce_scores = reduce_scores
        self.baseline_params = baseline_params or count_params(model)
        self.masks = MaskSet()
        self.removed: dict[str, torch.Tensor] = {}  # masked-only mode: units zeroed, not yet compacted
        self.budget_reached = False
        self._bind(model)

    def _bind(self, model: nn.Module) -> None:
        self.groups: list[Group] = model_groups(model)
        self.scores = TaylorScores(self.groups, connection_params(model) if self.schedule.prune_connections else [])

    # --- hooks called by the training loop -------------------------------------------------
    def after_backward(self, model: nn.Module, epoch: int) -> None:
        if self.schedule.phase(epoch) == "prune" and not self.budget_reached:
            self.scores.accumulate(model)

    def end_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int):
        """Prune if this is a pruning epoch; returns (model, optimizer, StepReport)."""
        if self.schedule.phase(epoch) != "prune" or self.budget_reached:
            self.scores.reset()
            return model, optimizer, StepReport()
        if self.reduce_scores is not None:
            self.reduce_scores(self.scores)
        if self.scores.batches == 0:
            self.scores.reset()
            return model, optimizer, StepReport()
        return self._on_cpu(self._prune, model, optimizer, epoch)

    def _on_cpu(self, step, model: nn.Module, optimizer: torch.optim.Optimizer, *args):
        """Run a decision/surgery step on the CPU (index work on small tensors) and bring the
        possibly new model and optimizer back to the model's device."""
        device = next(model.parameters()).device
        if device.type == "cpu":
            return step(model, optimizer, *args)
        self.scores.to("cpu")
        _move(model, optimizer, "cpu")
        model, optimizer, *rest = step(model, optimizer, *args)
        _move(model, optimizer, device)
        self.masks.apply(model, optimizer)  # gradient hooks must hold masks on the device
        return (model, optimizer, *rest)

    def _prune(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int):
        report = StepReport()
        budget = self.schedule.budget(epoch)
        report.budget = budget
        removed = self._choose_units(model, budget)
        conn_masks = self._choose_connections(model) if self.schedule.prune_connections else {}
        zeros_before = self.masks.zeros()
        old_in_removed = self._zeros_in(removed, model) if self.schedule.progressive else 0
        self.masks.merge(conn_masks)
        report.removed_units = {k: int(len(v)) for k, v in removed.items() if len(v)}
        if any(len(v) for v in removed.values()):
            if self.schedule.progressive:
                model, optimizer = self._compact(model, optimizer, removed)
                report.compacted = True
                zeros_before -= old_in_removed  # those went with their units
            else:
                for k, v in removed.items():
                    self.removed[k] = torch.unique(torch.cat([self.removed.get(k, v.new_empty(0)), v]))
                unit_masks = param_masks_for_units(model, self.groups, removed)
                zeros_before += sum(
                    int((~m & self.masks.masks.get(k, torch.ones_like(m))).sum()) for k, m in unit_masks.items()
                )
                self.masks.merge(unit_masks)
                redirect_removed(model, self.groups, removed)
        self.masks.apply(model, optimizer)
        report.removed_connections = self.masks.zeros() - zeros_before
        if budget is not None and self.live_params(model) <= self.schedule.target_params * self.baseline_params:
            self.budget_reached = True
        self._bind(model)
        return model, optimizer, report

    def finalize(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        """Physically remove units that are still only masked (masked-only mode)."""
        if any(len(v) for v in self.removed.values()):
            model, optimizer = self._on_cpu(self._finalize, model, optimizer)
        return model, optimizer

    def _finalize(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        model, optimizer = self._compact(model, optimizer, self.removed)
        self.removed = {}
        self.masks.apply(model, optimizer)
        self._bind(model)
        return model, optimizer

    # --- decisions ------------------------------------------------------------------------
    def _live_units(self, g: Group) -> torch.Tensor:
        live = torch.ones(g.width, dtype=torch.bool)
        if g.name in self.removed:
            live[self.removed[g.name]] = False
        return live

    def _choose_units(self, model: nn.Module, budget: float | None) -> dict[str, torch.Tensor]:
        """Units under the threshold; with a budget, then more, one notch of units of one layer at
        a time, until the rebuilt model fits. Survivor counts are multiples of round_to (rounded
        up), the best-scored units always stay, and so do a group's protected units."""
        raw = self.scores.unit_scores()
        norm, live = {}, {}
        for g in self.groups:
            live[g.name] = self._live_units(g)
            norm[g.name] = normalize(raw[g.name], live[g.name]).float()
            if g.protected:  # ranked above every live unit, below the dead ones (inf) in _fit_budget
                norm[g.name][list(g.protected)] = PROTECTED
        s = self.schedule
        keep = {}
        for g in self.groups:
            n_live = int(live[g.name].sum())
            n_drop = int(((norm[g.name] < s.threshold) & live[g.name]).sum())
            keep[g.name] = max(round_keep(n_live - n_drop, n_live, s.round_to, s.min_width), len(g.protected))
        if budget is not None:
            self._fit_budget(model, keep, norm, live, budget)
        return self._removed_for(keep, norm, live)

    def _fit_budget(self, model, keep: dict[str, int], norm, live, budget: float) -> None:
        """Lower survivor counts one notch at a time until the rebuilt model fits `budget`.

        Each notch takes the next-lowest-scored units of one layer; the notch with the lowest mean
        normalized score goes first, but a notch that would cross the run's final target is taken
        only when every notch would: with coarse rounding at small widths, the cheapest-scored
        notch can remove a third of a layer, far more than the step needs. A notch is `round_to`
        units, or 1/NOTCH_SHARE of the layer's survivors when that is more, so that a
        20,000-row vocabulary takes tens of notches, not thousands.
        """
        s = self.schedule
        target = budget * self.baseline_params
        final = s.target_params * self.baseline_params
        # live units, lowest-scored first (dead ones, at inf, last); norm and live do not change here
        ascending = {
            g.name: torch.argsort(torch.where(live[g.name], norm[g.name], torch.tensor(float("inf"))), stable=True)
            for g in self.groups
        }
        params = self._params_for(model, keep)
        while params > target:
            options = []  # (mean normalized score of the notch, group order, name, lower)
            for order, g in enumerate(self.groups):
                n_live = int(live[g.name].sum())
                notch = max(s.round_to, math.ceil(keep[g.name] / NOTCH_SHARE))
                # (keep - notch) rounded up to a multiple of round_to: at most `notch` units go
                lower = ((keep[g.name] - notch + s.round_to - 1) // s.round_to) * s.round_to
                if lower < min(s.min_width, n_live) or lower < max(1, len(g.protected)):
                    continue
                leaving = ascending[g.name][n_live - keep[g.name] : n_live - lower]
                options.append((float(norm[g.name][leaving].mean()), order, g.name, lower))
            if not options:
                return
            choice = self._cheapest_notch(model, keep, options, final)
            keep[choice[0]], params = choice[1], choice[2]

    def _cheapest_notch(self, model, keep: dict[str, int], options: list, final: float) -> tuple[str, int, int]:
        """(layer, survivors, params after) of the lowest-scored notch that does not cross `final`
        (ties: the one that removes least); when every notch crosses, the one that overshoots least.
        Sizes are computed in score order and only as far as needed: a model build each."""
        sized = []
        options = sorted(options)
        i = 0
        while i < len(options):
            tied = [o for o in options[i:] if o[0] == options[i][0]]
            i += len(tied)
            for _, order, name, lower in tied:
                sized.append((order, name, lower, self._params_for(model, {**keep, name: lower})))
            fits = [o for o in sized[-len(tied) :] if o[3] >= final]
            if fits:
                _, name, lower, after = min(fits, key=lambda o: (-o[3], o[0]))
                return name, lower, after
        _, name, lower, after = min(sized, key=lambda o: (-o[3], o[0]))
        return name, lower, after

    def _removed_for(self, keep: dict[str, int], norm, live) -> dict[str, torch.Tensor]:
        """The live units outside the best-scored `keep[layer]` of each layer."""
        removed = {}
        for g in self.groups:
            ranked = torch.argsort(torch.where(live[g.name], norm[g.name], torch.tensor(-1.0)), descending=True)
            gone = live[g.name].clone()
            gone[ranked[: keep[g.name]]] = False
            removed[g.name] = gone.nonzero().view(-1)
        return removed

    def _params_for(self, model: nn.Module, widths: dict[str, int]) -> int:
        """Dense parameter count of the model rebuilt with these survivor counts (on the meta device)."""
        with torch.device("meta"):
            return count_params(build_model(model.arch_with_widths(widths)))

    def _choose_connections(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = {}
        for name, sc in self.scores.connection_scores().items():
            live = self.masks.masks.get(name)
            norm = normalize(sc, live)
            keep = norm >= self.schedule.threshold
            out[name] = keep if live is None else keep & live
        return out

    def _zeros_in(self, removed, model) -> int:
        """Masked entries that lie inside the slices of `removed` units (they go with the units)."""
        unit_masks = param_masks_for_units(model, self.groups, removed)
        return sum(int((~unit_masks[k] & ~m).sum()) for k, m in self.masks.masks.items() if k in unit_masks)

    # --- compaction ---------------------------------------------------------------------------
    def _compact(self, model, optimizer, removed):
        new_model, keeps = compact_model(model, removed)
        new_opt = compact_optimizer(model, new_model, optimizer, keeps)
        self.masks.detach()
        self.masks = MaskSet(compact_masks(self.masks.masks, keeps))
        return new_model, new_opt

    # --- bookkeeping ----------------------------------------------------------------------
    def live_params(self, model: nn.Module) -> int:
        return count_params(model) - self.masks.zeros()

    def connection_sparsity(self, model: nn.Module) -> float:
        params = dict(model.named_parameters())
        total = sum(params[n].numel() for n in connection_params(model))
        return (self.masks.zeros() / total) if total else 0.0

    def state_dict(self) -> dict:
        return {
            "baseline_params": self.baseline_params,
            "budget_reached": self.budget_reached,
            "masks": self.masks.state_dict(),
            "removed": {k: v.clone() for k, v in self.removed.items()},
        }

    def load_state_dict(self, state: dict, model: nn.Module, optimizer=None) -> None:
        self.baseline_params = int(state["baseline_params"])
        self.budget_reached = bool(state["budget_reached"])
        self.masks = MaskSet(state["masks"])
        self.removed = dict(state["removed"])
        self.masks.apply(model, optimizer)
        self._bind(model)
