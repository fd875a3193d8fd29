"""The pruner: plugs into any training loop (after each backward and each optimizer step, at the
end of each epoch), scores units and connections, removes what falls under the threshold or the
budget, and compacts the model in place (progressively, or once at the end), so the caller's
`model` and `optimizer` objects stay the ones that train.

    pruner = Pruner(model, example_inputs, optimizer, epochs=30, steps_per_epoch=len(loader),
                    target_params=0.25, max_drop=1.0, evaluate=val_accuracy)
    for epoch in range(1, 31):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(); loss.backward()
            pruner.after_backward()      # Taylor scores from the gradients just computed
            optimizer.step()
            pruner.step()                # counts the step; prunes here when the schedule is in steps
        pruner.end_epoch()               # prunes + compacts `model` in place at an epoch's end
    pruner.finalize(); print(pruner.summary())

`steps_per_epoch` (or `total_steps`) lets pruning happen within epochs, so a one-epoch fine-tune
prunes (prune/schedule.py says where); `max_drop` with `evaluate` is the accuracy guard
(prune/guard.py): a step is judged after `guard_recovery` optimizer steps of training with its
masks held, and one that would then put the model more than `max_drop` points of validation under
the dense one (the kept steps' costs, each against the model just before it, added up) is rolled
back and retried smaller, and pruning stops when no smaller step fits.

Coupling comes from the model: the study's two models declare theirs (prune/groups.py), any
other model is traced with torch.fx (prune/trace.py); what the tracer cannot follow is frozen
and listed in `pruner.frozen`, never guessed.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from edgeprune.errors import BudgetWarning, GuardWarning, UserError
from edgeprune.prune import budget as budgets
from edgeprune.prune import guard as guards
from edgeprune.prune.compact import compact_masks
from edgeprune.prune.cost import CostModel
from edgeprune.prune.groups import (
    GROUP_BUILDERS,
    Group,
    model_groups,
    param_masks_for_units,
    redirect_removed,
    sizes_after,
)
from edgeprune.prune.importance import Importance, TaylorScores, normalize
from edgeprune.prune.masks import MaskSet
from edgeprune.prune.schedule import PruneSchedule, default_warmup, round_keep
from edgeprune.prune.surgery import check_optimizer, compact_


def _caller_level() -> int:
    """`warnings.warn`'s stacklevel for the pruner's caller: the first frame outside edgeprune.prune
    (and the torch or contextlib wrappers between), however deep inside the warning is raised."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _inside(frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    return level


def _inside(module: str) -> bool:
    return module.startswith(("edgeprune.prune.", "torch.")) or module in ("contextlib", "functools")


NOTCH_SHARE = 32  # a budget notch takes at most this share (1/32) of a big layer's survivors
# Sublayers a step may empty (an attention's last heads, an FFN's last neurons): the largest change
# one notch makes, and the one its first-order score says least about. One a step, the guard judges
# each (a whole-split MiniLM run's first tries emptied all 6 attentions at once and collapsed).
EMPTIED_PER_STEP = 1
PROTECTED = float(torch.finfo(torch.float32).max)  # the normalized score of a protected unit
_CONNECTION_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.GRU, nn.RNN)


def connection_params(model: nn.Module) -> list[str]:
    """Weights whose single entries are connections: conv, linear and recurrent weight matrices
    (not embeddings, whose rows are tokens, nor norms)."""
    out = []
    for path, m in model.named_modules():
        if not isinstance(m, _CONNECTION_LAYERS):
            continue
        for name, p in m.named_parameters(recurse=False):
            if p.dim() >= 2 and name.startswith("weight"):
                out.append(f"{path}.{name}" if path else name)
    return out


def _cpu_copy(obj):
    """A deep copy of a state dict (nested dicts, lists, tensors) with every tensor on the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class StepReport:
    """What one pruning point did: units removed per layer, connections masked, the budget fraction
    allowed there, whether the model was compacted, where it was, and the accuracy guard's tries."""

    removed_units: dict[str, int] = field(default_factory=dict)
    removed_connections: int = 0
    budget: float | None = None
    compacted: bool = False
    at: str | None = None  # where the pruning point was ("epoch 3", "step 120"); None: no pruning point
    # the accuracy guard's decisions made by this call: a step tried here, or at an earlier point whose
    # recovery steps ended now (each event's "at" says which); units and connections above are the kept step's
    guard: list[dict] = field(default_factory=list)
    pending: bool = False  # a step is masked and under trial: the guard judges it after its recovery steps


@dataclass
class Summary:
    """What pruning did: widths per prunable layer, parameters and MACs before and after."""

    widths_before: dict[str, int]
    widths_after: dict[str, int]
    params_before: int
    params_after: int  # live: dense parameters of the compacted model minus masked connections
    macs_before: int | None
    macs_after: int | None
    frozen: list[str]
    latency_ms_before: float | None = None  # predicted by the latency model, when there is one
    latency_ms_after: float | None = None
    # {measure, target, reached (fractions of the dense model's cost), met, reasons}; None: no budget
    budget: dict | None = None
    nothing_pruned: str | None = None  # why, when no unit and no connection was removed
    ended_by: str | None = None  # what ended pruning: "budget", "guard" or "schedule" (None: not over)
    guard: dict | None = None  # the accuracy guard's outcome (prune/guard.py Guard.to_dict); None: off

    def to_dict(self) -> dict:
        """The summary as a plain dict (for JSON)."""
        return dict(self.__dict__)

    def __str__(self) -> str:
        def ratio(a, b):
            return f"{a / b:.2f}x" if a is not None and b else "-"

        if self.nothing_pruned:  # not an empty table and "1.00x fewer"
            lines = [f"nothing was pruned: {self.nothing_pruned}"]
            lines.append(
                f"parameters {self.params_before:,}"
                + (f", MACs per example {self.macs_before:,}" if self.macs_before is not None else "")
                + " (unchanged)"
            )
        else:
            lines = [f"{'layer':<40} {'before':>8} {'after':>8}"]
            for k, before in self.widths_before.items():
                lines.append(f"{k:<40} {before:>8} {self.widths_after.get(k, before):>8}")
            lines.append(
                f"parameters {self.params_before:,} -> {self.params_after:,} "
                f"({ratio(self.params_before, self.params_after)} fewer)"
            )
            if self.macs_before is not None:
                lines.append(
                    f"MACs per example {self.macs_before:,} -> {self.macs_after:,} "
                    f"({ratio(self.macs_before, self.macs_after)} fewer)"
                )
            if self.latency_ms_before is not None:
                lines.append(
                    f"predicted latency {self.latency_ms_before:.4f} ms -> {self.latency_ms_after:.4f} ms "
                    f"({ratio(self.latency_ms_before, self.latency_ms_after)} faster)"
                )
        if self.budget is not None:
            lines.append(budgets.status_line(self.budget))
        if self.ended_by is not None:
            lines.append(f"pruning ended by the {self.ended_by}")
        if self.guard is not None:
            lines.append(guard_line(self.guard))
        if self.frozen:
            lines.append("not pruned (the tracer could not follow them): " + "; ".join(self.frozen))
        return "\n".join(lines)


def guard_line(g: dict) -> str:
    """One line for the accuracy guard's outcome (a Guard.to_dict())."""
    ref = "not measured yet" if g["reference"] is None else f"{g['reference']:.4f}"
    n = f" (n={g['n']})" if g.get("n") else ""
    before = g.get("before_passes", 0)
    recovery = g.get("recovery_steps", 0)
    when = f"judged after {recovery} step(s) of training" if recovery else "judged at once"
    if g.get("shortened"):  # said, not averaged away: some tries trained less before their figure
        when += f", {g['shortened']} of them after fewer (at the run's end or a pruning point)"
    return (
        f"accuracy guard: max drop {g['max_drop']:g} points of validation {g['metric']}{n}, dense reference {ref} "
        f"(each step {when}; the kept steps cost {g.get('spent', 0.0):.2f} points in all, each against the model "
        "just before it"
        + (f", uncertain by up to {g['spent_noise_points']:.1f}" if g.get("spent_noise_points") is not None else "")
        + "); "
        f"{g['kept']} step(s) kept, {g['rolled_back']} rolled back"
        + (f", {g['waited']} point(s) passed while no better than guessing" if g.get("waited") else "")
        + (_stopped_words(g["stopped"]) if g.get("stopped") else "")
        + f"; {g['validations']} validation pass(es) ({before} of the model before a step), {g['seconds']:.1f}s"
        + (f"; {g.get('discarded_steps', 0)} training step(s) discarded by rollbacks" if recovery else "")
    )


def _stopped_words(stopped: dict) -> str:
    steps = stopped.get("recovery_steps")
    if steps is None:
        return ", pruning stopped"
    return f", pruning stopped at {stopped['at']} (its last try judged after {steps} step(s) of training)"


def _move(model: nn.Module, optimizer: torch.optim.Optimizer | None, device: torch.device | str) -> None:
    """Move a model and its optimizer's per-weight state in place (the optimizer keeps its parameters)."""
    model.to(device)
    for state in optimizer.state.values() if optimizer is not None else ():
        for k, v in state.items():
            if torch.is_tensor(v) and v.dim() > 0:  # moments; Adam's scalar step stays on the CPU
                state[k] = v.to(device)


def _default_reduce():
    """Under torchrun (an initialized process group), sum the scores over the ranks before deciding."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from edgeprune.distributed import all_reduce_scores

        return all_reduce_scores
    return None


class Pruner:
    """Prune `model` while it trains; see the module docstring for the loop.

    `example_inputs` (a tensor or a tuple, a batch of a few real inputs) is what the model is
    traced on and its MACs counted with. Give either a `schedule` or `epochs` plus the schedule's
    settings: `target_params` / `target_macs` (a fraction of the dense model's parameters / MACs),
    `threshold`, `warmup_epochs` (default epochs // 10, at least 1; 0 with `from_weights=True`),
    `prune_until` (the share of the run after which the structure is frozen), `round_to`,
    `min_width`, `prune_connections` and `progressive` (False: masks until `finalize()`).

    The run's length in optimizer steps, `steps_per_epoch` (with `epochs`) or `total_steps`,
    lets the schedule prune within epochs: every `prune_every` steps, or at points spread over
    the pruning window when no epoch end falls in it; call `step()` after every optimizer step.

    The accuracy guard: `max_drop` (points of the validation metric, e.g. 1.0) with `evaluate`, a
    callable `evaluate(model) -> float` that returns the validation metric as a fraction in [0, 1]
    (it may switch the model to eval mode; the pruner restores the mode). `val_size` (its number
    of examples) lets the guard warn when `max_drop` is below the set's noise; `recalibrate(model)`
    runs after a step's masks and before its evaluation (e.g. BatchNorm statistics). The
    reference is the dense model at the end of the warm-up. A step's cost is the model just before it
    (validated at the pruning point unless the same weights were measured with no training since)
    minus the model after its recovery steps; a step is rolled back when the kept steps' costs with
    its own add up to more than `max_drop` points, or it falls more than that under the reference.
    `val_labels` (the validation set's class ids) tell the guard what always guessing the most common
    class scores: a pruning point where the model is within noise of that tries no step (a new
    classifier head that has not learned yet), and they give `val_size`. `guard_recovery` says when:
    a step is judged after that many optimizer steps of training with its masks held (validation dips
    right after a step and recovers within a fraction of an epoch), and a rolled-back step throws
    those steps of training away. None (auto) is a quarter of the steps
    between consecutive pruning points (steps_per_epoch // 4 in an epoch schedule), at least 1; 0 judges
    a step at once, which is also what auto does when the pruner does not know the run's steps (a loop
    that gives no steps_per_epoch and may never call `step()`). A step still under trial when the next
    pruning point comes, or at `finalize()`, is judged then.

    `importance` (an edgeprune.prune.importance.Importance instance; default TaylorScores(), the
    first-order contribution to the loss) says what each unit and connection is worth.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs=None,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        schedule: PruneSchedule | None = None,
        epochs: int | None = None,
        target_params: float | None = None,
        target_macs: float | None = None,
        target_latency_ms: float | None = None,
        latency_model=None,
        threshold: float = PruneSchedule.threshold,
        warmup_epochs: int | None = None,
        prune_until: float = PruneSchedule.prune_until,
        round_to: int = PruneSchedule.round_to,
        min_width: int = PruneSchedule.min_width,
        prune_connections: bool = PruneSchedule.prune_connections,
        progressive: bool = PruneSchedule.progressive,
        reduce_scores="auto",
        baseline_params: int | None = None,
        steps_per_epoch: int | None = None,
        total_steps: int | None = None,
        prune_every: int | None = None,
        from_weights: bool = False,
        max_drop: float | None = None,
        evaluate=None,
        val_size: int | None = None,
        val_labels=None,
        guard_metric: str = guards.DEFAULT_METRIC,
        guard_recovery: int | None = None,
        recalibrate=None,
        importance: Importance | None = None,
    ):
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise UserError("Pass the model inside DistributedDataParallel (ddp.module) to Pruner, not the wrapper.")
        if total_steps is not None:
            if steps_per_epoch is not None:
                raise UserError("Give the pruner total_steps= or steps_per_epoch=, not both.")
            epochs = epochs if epochs is not None else (schedule.epochs if schedule is not None else 1)
            if total_steps < 1 or total_steps % epochs:
                raise UserError(
                    f"total_steps={total_steps} is not {epochs} epoch(s) of whole steps; give steps_per_epoch= instead."
                )
            steps_per_epoch = total_steps // epochs
        if schedule is None:
            if epochs is None:
                raise UserError("Pruner needs epochs= (the length of training), total_steps= or a schedule=.")
            if warmup_epochs is None:
                warmup_epochs = default_warmup(epochs, from_weights)
            schedule = PruneSchedule(
                epochs=epochs,
                warmup_epochs=warmup_epochs,
                prune_until=prune_until,
                threshold=threshold,
                target_params=target_params,
                target_macs=target_macs,
                target_latency_ms=target_latency_ms,
                round_to=round_to,
                min_width=min_width,
                prune_connections=prune_connections,
                progressive=progressive,
                steps_per_epoch=steps_per_epoch,
                prune_every=prune_every,
            )
        elif steps_per_epoch is not None or prune_every is not None:
            schedule = replace(
                schedule,
                steps_per_epoch=steps_per_epoch or schedule.steps_per_epoch,
                prune_every=prune_every or schedule.prune_every,
            )
        if schedule.prune_every is not None and schedule.steps_per_epoch is None:
            raise UserError(
                "prune_every counts optimizer steps: give the pruner steps_per_epoch= (or total_steps=) too."
            )
        if optimizer is not None:
            check_optimizer(optimizer)
        self.guard = self._make_guard(max_drop, evaluate, val_size, guard_metric, guard_recovery, schedule, val_labels)
        # the step under the guard's trial (masked, training on; plain data, saved by state_dict): its
        # snapshot, the units and connections it removes, when it is judged; None: no step under trial
        self._trial: dict | None = None
        # the guard's last validation of the weights as they are now (None: trained since, or never measured):
        # the pre-step figure of a pruning point that needs no pass of its own
        self._fresh: float | None = None
        # a pruning point carried forward (plain data, saved by state_dict): {"k", "at", "epoch", "due"}.
        # A step judged at a point (kept and compacted, or rolled back) restarts the scores there, so the
        # point has nothing to choose by; it prunes at step `due`, once scores have been gathered for
        # max(1, R) steps (a later point of the schedule takes it up when it comes first)
        self._deferred: dict | None = None
        self._judged_at: int | None = None  # the step count when a trial was last judged (this call's test)
        self.evaluate, self.recalibrate = evaluate, recalibrate
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        if torch.is_tensor(example_inputs):
            example_inputs = (example_inputs,)
        self.example_inputs = None if example_inputs is None else tuple(x.detach().cpu() for x in example_inputs)
        # Called on the scores before every decision; under DDP it sums them over the ranks so that
        # all ranks decide the same (see edgeprune.distributed.all_reduce_scores).
        self.reduce_scores = _default_reduce() if reduce_scores == "auto" else reduce_scores
        self.masks = MaskSet()
        self.removed: dict[str, torch.Tensor] = {}  # masked-only mode: units zeroed, not yet compacted
        self.budget_reached = False
        self.epoch = 1  # the epoch in progress (numbered from 1)
        self._ending: int | None = None  # inside end_epoch(): the epoch whose end it is
        self.steps_done = 0  # optimizer steps counted by step()
        self._points = {p: k for k, p in enumerate(schedule.points, start=1)}  # step -> its ramp index
        self.frozen: list[str] = []
        self._frozen_spaces: list = []  # the tracer's Frozen records behind `frozen`
        if importance is not None and not isinstance(importance, Importance):
            raise UserError(
                "importance= must be an instance of edgeprune.prune.importance.Importance "
                f"(e.g. MagnitudeScores()), got {importance!r}."
            )
        # what each unit and connection is worth (prune/importance.py): re-bound after every compaction
        self.scores: Importance = TaylorScores() if importance is None else importance
        self._bind()
        budget = self.budget
        if budget is not None and not self.groups:
            frozen = self._frozen_pairs()
            raise UserError(budgets.nothing_prunable_sentence(type(model).__name__, budget.unit, budget.target, frozen))
        self.cost = CostModel(model, self.example_inputs)
        if budget is not None and budget.unit == "macs" and self.cost.macs_factors is None:
            raise UserError("target_macs needs example_inputs to count the model's MACs.")
        # predicts ms per call from the layers' shapes (edgeprune.latency.LatencyModel, fitted to a
        # latency table measured with onnxruntime on the machine that will run the model)
        self.latency_model = latency_model
        if budget is not None and budget.unit == "latency" and latency_model is None:
            raise UserError(
                "target_latency_ms needs latency_model= (edgeprune.latency.host_latency_model(...) measures "
                "one here, or load_latency_model(TABLE) reads a table made on the device)."
            )
        self.baseline_params = baseline_params or count_params(model)
        self.baseline_macs = self.cost.macs(self._shapes({}))
        self.baseline_latency_ms = self.latency_ms()
        self.widths_before = self.widths()
        if budget is not None and budget.unit == "latency":
            self._check_reachable(budget.target)
        # the first moment a miss is known: say it now, not after the run
        self.warn_budget()
        if self.guard is not None and schedule.warmup_epochs == 0:
            self._measure_reference("the start")  # no warm-up: the model as given is the dense reference

    @staticmethod
    def _make_guard(max_drop, evaluate, val_size, metric, recovery, schedule, labels=None) -> guards.Guard | None:
        points = guards.parse_max_drop(max_drop)
        asked = guards.parse_recovery(recovery)
        if points is None:
            if evaluate is not None:
                raise UserError("evaluate= is the accuracy guard's validation; give max_drop= (points) with it.")
            if asked is not None:
                raise UserError("guard_recovery= says when the accuracy guard judges a step; give max_drop= with it.")
            if labels is not None:
                raise UserError("val_labels= tell the accuracy guard what guessing scores; give max_drop= with them.")
            return None
        if not callable(evaluate):
            raise UserError("max_drop= needs evaluate=, a function evaluate(model) -> validation accuracy in [0, 1].")
        if val_size is not None and val_size < 1:
            raise UserError(f"val_size must be the validation set's number of examples, got {val_size}.")
        gap = schedule.point_gap
        steps = guards.auto_recovery(gap) if asked is None else asked
        if asked is not None and gap is not None and steps >= gap > 0:
            warnings.warn(
                f"guard_recovery={steps} is not shorter than the {gap} optimizer steps between pruning points: each "
                "step is judged at the next point at the latest, after fewer steps of training, and that point "
                f"may prune nothing; give guard_recovery below {gap}.",
                GuardWarning,
                stacklevel=_caller_level(),
            )
        metric = guards.check_metric(metric)
        floor = None
        if labels is not None:
            labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
            floor = guards.chance_floor(labels, metric)
            if val_size is not None and val_size != len(labels):
                raise UserError(f"val_size={val_size} but val_labels= has {len(labels)} labels; give one of them.")
            val_size = len(labels)
        return guards.Guard(max_drop=points, metric=metric, n=val_size, recovery_steps=steps, floor=floor)

    def _bind(self) -> None:
        """(Re)derive the coupling groups of the model as it is now, and start fresh score sums."""
        model = self.model
        if getattr(model, "arch_name", None) in GROUP_BUILDERS:
            self.groups: list[Group] = model_groups(model)
        else:
            if self.example_inputs is None:
                raise UserError(
                    f"Pruning a {type(model).__name__} needs example_inputs (a batch of inputs) to trace it."
                )
            from edgeprune.prune.trace import trace_groups

            device = next(model.parameters()).device
            traced = trace_groups(model, tuple(x.to(device) for x in self.example_inputs))
            self.groups = traced.groups
            # the model's outputs are never pruned by design; the rest is what the tracer refused
            self._frozen_spaces = [f for f in traced.frozen if f.node != "output"]
            self.frozen = [f"{f.space}: {f.reason} at {f.node}" for f in self._frozen_spaces]
        self._per_unit = {g.name: g.channels_per_unit() for g in self.groups}
        self.scores.bind(self.groups, connection_params(self.model) if self.schedule.prune_connections else [])

    @property
    def budget(self) -> budgets.Budget | None:
        """How far pruning goes, in what unit (prune/budget.py; None: the threshold alone decides)."""
        return self.schedule.cost_budget

    def use_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer compaction slices and re-points, for a loop that makes it after the pruner
        (transformers' Trainer does: edgeprune.hf.EdgepruneCallback calls this)."""
        check_optimizer(optimizer)
        self.optimizer = optimizer

    # --- hooks called by the training loop -------------------------------------------------
    def after_backward(self) -> None:
        """Call after every backward, before optimizer.step(): adds this batch's contributions."""
        self._fresh = None  # training: the guard's last figure no longer describes the weights
        if self._collecting():
            self.scores.accumulate(self.model)

    def step(self) -> StepReport | None:
        """Call after every optimizer.step(): counts the step and, when the schedule prunes in steps
        and this step is one of its points, prunes (and compacts) in place. Returns the pruning
        point's report, None between points."""
        self.steps_done += 1
        self._fresh = None  # an optimizer step changed the weights
        if self.schedule.in_steps and self.steps_done == self.schedule.warmup_steps and self._needs_reference():
            self._measure_reference(f"step {self.steps_done}")  # the end of the warm-up
        report = None
        if self._trial is not None and self.steps_done >= self._trial["judge_at"]:
            report = StepReport()  # a step under trial has had its recovery steps: judged now
            self._judge(report)
        k = self._points.get(self.steps_done) if self.schedule.in_steps else None
        if k is not None:
            return self._prune_point(k, f"step {self.steps_done}", report)
        d = self._deferred
        if d is not None and self._trial is None and self.steps_done >= d["due"]:
            self._deferred = None
            return self._prune_point(d["k"], f"step {self.steps_done} (deferred from {d['at']})", report)
        return report

    def end_epoch(self, epoch: int | None = None) -> StepReport:
        """Call once at the end of every epoch (`epoch` numbered from 1, default: the next one).
        Prunes on a pruning epoch; the model is compacted in place and the optimizer follows."""
        if epoch is not None:
            self.epoch = epoch
        epoch, self.epoch = self.epoch, self.epoch + 1
        self._ending = epoch
        try:
            return self._end_of(epoch)
        finally:
            self._ending = None

    def _end_of(self, epoch: int) -> StepReport:
        """end_epoch()'s work for the epoch that has just ended."""
        if self.schedule.in_steps:
            if self.steps_done == 0 and self.schedule.points:
                raise UserError(
                    "This schedule prunes within epochs (at optimizer steps "
                    f"{', '.join(map(str, self.schedule.points[:3]))}, ...): call pruner.step() after every "
                    "optimizer.step()."
                )
            return StepReport()
        if self._trial is not None and self.steps_done == self._trial["masked_at"]:
            raise UserError(
                f"The accuracy guard judges a pruning step after guard_recovery={self.guard.recovery_steps} optimizer "
                f"steps counted by pruner.step(), and none was counted during epoch {epoch}: call pruner.step() after "
                "every optimizer.step(), or give guard_recovery=0."
            )
        if epoch == self.schedule.warmup_epochs and self._needs_reference():
            self._measure_reference(f"epoch {epoch}")  # the end of the warm-up
        if self.schedule.phase(epoch) != "prune":
            if self._deferred is None:  # (a point carried forward gathers on into the next epoch)
                self.scores.reset()
            return StepReport()
        return self._prune_point(epoch - self.schedule.warmup_epochs, f"epoch {epoch}")

    @property
    def _now(self) -> int:
        """The epoch a guard record made now belongs to: at an epoch's end, that epoch (not the next)."""
        return self.epoch if self._ending is None else self._ending

    def _collecting(self) -> bool:
        """Whether scores count now: within the pruning window, before the budget is met and while
        the guard has not stopped pruning."""
        if self.budget_reached or (self.guard is not None and self.guard.stopped):
            return False
        if self._deferred is not None:  # a point carried forward gathers its scores, past the window too
            return True
        s = self.schedule
        if s.in_steps:
            return bool(s.points) and s.warmup_steps <= self.steps_done < s.points[-1]
        return s.phase(self.epoch) == "prune"

    def _prune_point(self, k: int, at: str, report: StepReport | None = None) -> StepReport:
        """The k-th pruning point of the schedule (1-based), called `at` in records; `report` holds what
        this call decided before it (a trial judged at this step)."""
        report = StepReport() if report is None else report
        report.at = at
        if self._deferred is not None:  # a point carried forward, taken up by this later one (its ramp is further)
            d, self._deferred = self._deferred, None
            self._passed(report, d["at"], d["epoch"], f"deferred, then taken up by the point at {at}")
        if self._trial is not None and self._trial["masked_at"] < self.steps_done:
            self._judge(report)  # a point that comes while a step is under trial judges it first
        if self._trial is not None:
            # a step rolled back (here, or by step() just before) has its smaller retry under trial now:
            # this point passes (its scores were gathered on the discarded weights); the ramp's later
            # points take up its share
            report.pending = True
            self._passed(report, at, self._now, "a smaller retry is under trial")
            return report
        if self.budget_reached or (self.guard is not None and self.guard.stopped):
            self.scores.reset()
            return report
        if self.reduce_scores is not None:
            self.reduce_scores(self.scores)
        if self.scores.batches == 0:
            if self.guard is not None and self._judged_at == self.steps_done:
                # the step judged here restarted the scores: carry the point forward, not lose it
                self._defer(k, at, report)
                return report
            self.scores.reset()
            return report
        if self._needs_reference():  # a loop that skipped the end of the warm-up: the model before this step
            self._measure_reference(at)
        budget = self.schedule.ramp_at(k, self._final) if self._final is not None else None
        if self.guard is not None:
            return self._guarded(budget, report)
        report = self._on_cpu(self._prune, budget)
        report.at = at
        return report

    def finalize(self) -> None:
        """Judge a step still under the guard's trial (its retries at once: no training is left to recover
        with), then physically remove units that are still only masked (masks-until-the-end mode). A
        pruning point still carried forward passes, recorded as such."""
        while self._trial is not None:
            self._judge(StepReport())
        if self._deferred is not None:
            d, self._deferred = self._deferred, None
            self._passed(StepReport(), d["at"], d["epoch"], "deferred, and the run ended before its scores were in")
        if any(len(v) for v in self.removed.values()):
            self._on_cpu(self._finalize)

    def _on_cpu(self, step, *args):
        """Run a decision/surgery step on the CPU (index work on small tensors) and bring the model
        and optimizer back to the model's device."""
        device = next(self.model.parameters()).device
        if device.type == "cpu":
            return step(*args)
        self.scores.to("cpu")
        _move(self.model, self.optimizer, "cpu")
        try:
            return step(*args)
        finally:
            _move(self.model, self.optimizer, device)
            self.masks.apply(self.model, self.optimizer)  # gradient hooks must hold masks on the device

    def _prune(self, budget: float | None) -> StepReport:
        model = self.model
        report = StepReport()
        report.budget = budget
        removed = self._choose_units(budget)
        conn_masks = self._choose_connections() if self.schedule.prune_connections else {}
        report.removed_units = {k: int(len(v)) for k, v in removed.items() if len(v)}
        zeros_before = self.masks.zeros()
        if self.schedule.progressive:
            old_in_removed = self._zeros_in(removed)
            self.masks.merge(conn_masks)
            if report.removed_units:
                self._compact(removed)
                report.compacted = True
                zeros_before -= old_in_removed  # those went with their units
            self.masks.apply(model, self.optimizer)
        else:  # masks until the end: what goes with the removed units is not a removed connection
            zeros_before += self._mask(removed, conn_masks)
        report.removed_connections = self.masks.zeros() - zeros_before
        if budget is not None and self.budget.reached(self._cost_now(), self._baseline_cost()):
            self.budget_reached = True
        if report.compacted:
            self._bind()
        else:
            self.scores.reset()
        return report

    def _finalize(self) -> None:
        self._compact(self.removed)
        self.removed = {}
        self.masks.apply(self.model, self.optimizer)
        self._bind()

    # --- the accuracy guard (the rule and the words: prune/guard.py) ---------------------------
    def _validate(self) -> float:
        """The caller's validation metric of the model as it is now (its train/eval mode kept)."""
        was_training = self.model.training
        t0 = time.perf_counter()
        try:
            value = self.guard.check_value(self.evaluate(self.model))
        finally:
            self.model.train(was_training)
        self.guard.validations += 1
        self.guard.seconds += time.perf_counter() - t0
        return value

    def _needs_reference(self) -> bool:
        return self.guard is not None and self.guard.reference is None

    def _measure_reference(self, at: str) -> None:
        """The dense model's validation metric: what every pruning step is compared with."""
        g = self.guard
        g.reference = self._fresh = self._validate()
        event = {"at": at, "epoch": self._now, "action": "reference", "value": g.reference, "drop": 0.0}
        g.events.append({**event, "params_alive": self.live_params()})
        if g.learned(g.reference):  # (one at chance level is retaken later, and warned about then)
            self._warn_noise()

    def _warn_noise(self) -> None:
        noisy = self.guard.noise_warning()
        if noisy is not None:
            warnings.warn(noisy, GuardWarning, stacklevel=_caller_level())

    def _before_step(self) -> float:
        """The validation figure of the model just before a step: the fresh one when the same weights
        were measured with no training since, else one more pass (counted as such)."""
        if self._fresh is None:
            self._fresh = self._validate()
            self.guard.before_passes += 1
        return self._fresh

    def _guarded(self, budget: float | None, report: StepReport) -> StepReport:
        """A pruning point under the accuracy guard: validate the model before the step (unless fresh),
        snapshot everything the step and the training after it change, mask the chosen units and
        connections, and put the step under trial: `_judge` decides after the guard's recovery steps
        (at once when they are 0). A step is held to max(dense reference, the model before it)."""
        report.budget = budget
        removed, conn = self._on_cpu(self._choose, budget)
        if not self._step_size(removed, conn):  # nothing to remove here: no pass spent
            self.scores.reset()
            return report
        before_value = self._before_step()  # before the snapshot: the state it measured is the one restored
        g = self.guard
        if not g.learned(before_value):  # no better than guessing: no step's cost can be told (guard.py)
            self.scores.reset()
            event = {"at": report.at, "epoch": self._now, "action": "passed", "why": g.floor_text(before_value)}
            self._record(report, {**event, "untrained": True, "value": before_value, "judged_at": self.steps_done,
                                  "params_alive": self.live_params()})  # fmt: skip
            return report
        if not g.learned(g.reference):  # the reference was taken at chance level: this figure replaces it
            g.reference = before_value
            why = "the first pruning point above guessing (the reference before it was no better)"
            event = {"at": report.at, "epoch": self._now, "action": "reference", "value": before_value, "drop": 0.0}
            g.events.append({**event, "why": why, "params_alive": self.live_params()})
            self._warn_noise()
        self._trial = {
            "at": report.at,
            "epoch": self._now,
            "budget": budget,
            "before": before_value,
            "tries": 0,
            "snapshot": self._snapshot(),
            "removed": removed,
            "conn": conn,
            # the ranking at this point, which a retry halves by: scores gathered from here on come from
            # the masked model, where the units under trial score nothing
            "unit_scores": {k: v.detach().cpu().clone() for k, v in self.scores.unit_scores().items()},
            "conn_scores": {k: v.detach().cpu().clone() for k, v in self.scores.connection_scores().items()},
        }
        self.scores.reset()  # the next point's scores are gathered from here on
        self._try(report)
        return report

    def _try(self, report: StepReport) -> None:
        """Mask the trial's step and train on; it is judged at `judge_at` (now, when the guard's recovery
        steps are 0 or the run ends here). A step with nothing left to remove ends the trial: when it
        is a retry, every smaller step was rolled back too, and pruning stops."""
        t = self._trial
        if not self._step_size(t["removed"], t["conn"]):
            if t["tries"]:
                self._stop(report, t["last"])
            self._trial = None
            return
        t["zeros_before"] = self.masks.zeros()
        t["unit_zeros"] = self._on_cpu(self._mask, t["removed"], t["conn"])
        if self.recalibrate is not None:
            self.recalibrate(self.model)
        t["masked_at"] = self.steps_done
        t["judge_at"] = self.steps_done + self.guard.recovery_steps
        total = self.schedule.total_steps
        if total is not None:  # judged within the run: a step masked near its end recovers as long as it can
            t["judge_at"] = min(t["judge_at"], max(total, self.steps_done))
        report.pending = True
        if t["judge_at"] <= self.steps_done:
            self._judge(report)

    def _judge(self, report: StepReport) -> None:
        """Decide the step under trial: validate the model as its recovery steps left it, and keep the
        step (then compact it, in progressive mode) or roll everything back to the snapshot (the
        training since is discarded) and put half of the step under trial; after MAX_HALVINGS retries
        pruning stops for good."""
        g, t = self.guard, self._trial
        report.pending = False
        self._judged_at = self.steps_done
        if self._deferred is not None:  # the scores restart here (below): a point carried forward waits again
            self._deferred["due"] = self.steps_done + self._wait()
        value = self._validate()
        t["tries"] += 1
        recovery = self.steps_done - t["masked_at"]
        event = {
            "at": t["at"],
            "epoch": t["epoch"],
            "try": t["tries"],
            "value": value,
            "drop": g.drop(value),  # under the dense reference
            "before": t["before"],  # the model just before the step
            "step_drop": g.cost(value, t["before"]),  # under it, in points: the step's cost
            "estimate": g.estimate(value, t["before"]),  # the drop against the dense model if kept
            "recovery_steps": recovery,  # optimizer steps trained with the step's masks before this figure
            "judged_at": self.steps_done,
            "budget": t["budget"],
            "removed_units": {k: int(len(v)) for k, v in t["removed"].items() if len(v)},
            "params_alive": self.live_params(),
        }
        if g.within(value, t["before"]):
            g.keep(value, t["before"])
            self._record(report, {**event, "action": "kept"})
            report.removed_units = event["removed_units"]
            report.removed_connections = self.masks.zeros() - t["zeros_before"] - t["unit_zeros"]
            self._trial = None
            if self.schedule.progressive and any(len(v) for v in t["removed"].values()):
                # the masked step, now removed for real (exact: tests). The scores gathered during the
                # recovery start over: their tensors index the units before compaction, and remapping every
                # Importance's state is not worth it (the next point has the steps after this one)
                self._on_cpu(self._finalize)
                report.compacted = True
            if t["budget"] is not None and self.budget.reached(self._cost_live(), self._baseline_cost()):
                self.budget_reached = True
            self._fresh = value  # the kept model is what was just measured (compaction is exact)
            return
        self._record(report, {**event, "action": "rolled back"})
        self._restore(t["snapshot"])  # exact: the pre-step figure describes the model again
        self._fresh = t["before"]
        g.discarded_steps += recovery
        self.scores.reset()  # gathered on the weights just discarded
        if t["tries"] > guards.MAX_HALVINGS:
            self._stop(report, event)
            self._trial = None
            return
        t["last"] = event
        t["removed"], t["conn"] = self._on_cpu(self._halve, t["removed"], t["conn"], t["unit_scores"], t["conn_scores"])
        self._try(report)

    def _record(self, report: StepReport, event: dict) -> None:
        report.guard.append(event)
        self.guard.events.append(event)

    def _wait(self) -> int:
        """Optimizer steps of scores a point carried forward waits for: max(1, R)."""
        return max(1, self.guard.recovery_steps)

    def _defer(self, k: int, at: str, report: StepReport) -> None:
        """Carry the k-th pruning point forward: it prunes once scores have been gathered for `_wait()`
        steps (a later point of the schedule takes it up if it comes first); said as a passed point."""
        self._deferred = {"k": k, "at": at, "epoch": self._now, "due": self.steps_done + self._wait()}
        why = f"deferred: scores restart after the step judged here (it prunes at step {self._deferred['due']})"
        self._passed(report, at, self._now, why)

    def _passed(self, report: StepReport, at: str, epoch: int, why: str) -> None:
        """A pruning point that passed without trying a step: recorded, with why (never silent)."""
        event = {"at": at, "epoch": epoch, "action": "passed", "why": why, "judged_at": self.steps_done}
        self._record(report, {**event, "params_alive": self.live_params()})

    def _stop(self, report: StepReport, last: dict) -> None:
        """Pruning stops for good: the smallest step tried (`last`) was rolled back too."""
        keys = ("at", "value", "drop", "before", "estimate", "recovery_steps")
        self.guard.stopped = {k: last.get(k) for k in keys}
        self._record(report, {**last, "action": "stopped"})

    @property
    def trial(self) -> dict | None:
        """The step under the guard's trial: {at, tries, masked_at, judge_at} (steps counted by step());
        None when none is (its masks count as removed until it is judged)."""
        t = self._trial
        return None if t is None else {k: t[k] for k in ("at", "tries", "masked_at", "judge_at")}

    def _choose(self, budget: float | None):
        """The step the schedule asks for: (units per group, connection keep-masks)."""
        removed = self._choose_units(budget)
        return removed, self._choose_connections() if self.schedule.prune_connections else {}

    def _new_zeros(self, conn: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries each keep-mask of `conn` (connections, or a unit's slices) removes beyond the masks
        already held."""
        out = {}
        for k, keep in conn.items():
            live = self.masks.masks.get(k)
            out[k] = ~keep if live is None else live & ~keep
        return out

    def _step_size(self, removed, conn) -> int:
        return sum(len(v) for v in removed.values()) + sum(int(z.sum()) for z in self._new_zeros(conn).values())

    def _mask(self, removed, conn) -> int:
        """Apply a step as masks (units zeroed and redirected, connections masked); returns the
        masked entries that belong to the units (what is not a removed connection)."""
        unit_masks, unit_zeros = {}, 0
        if any(len(v) for v in removed.values()):
            # counted before the connections are merged: one this step masks inside a removed unit goes
            # with the unit, so it is not a removed connection (as compaction, which removes it, counts)
            unit_masks = param_masks_for_units(self.model, self.groups, removed)
            unit_zeros = sum(int(z.sum()) for z in self._new_zeros(unit_masks).values())
        self.masks.merge(conn)
        if unit_masks:
            for k, v in removed.items():
                self.removed[k] = torch.unique(torch.cat([self.removed.get(k, v.new_empty(0)), v]))
            self.masks.merge(unit_masks)
            redirect_removed(self.model, self.groups, removed)
        self.masks.apply(self.model, self.optimizer)
        return unit_zeros

    def _halve(self, removed, conn, unit_scores, conn_scores):
        """Half of a step: of each group's removed units the lowest-scored half (survivors still a
        multiple of round_to, so a one-notch removal halves to none), of the new connection zeros
        the lowest-scored half; by the scores the step was chosen with."""
        norm, live = self._unit_norms(unit_scores)
        half = {}
        for g in self.groups:
            gone = removed.get(g.name)
            if gone is None or not len(gone):
                half[g.name] = torch.empty(0, dtype=torch.long)
                continue
            n_live = int(live[g.name].sum())
            rt, mw = self._in_units(g)
            keep = round_keep(n_live - len(gone) // 2, n_live, rt, mw)
            order = torch.argsort(norm[g.name][gone], stable=True)
            half[g.name] = torch.sort(gone[order[: n_live - keep]]).values
        smaller = {}
        scores = conn_scores
        for k, zeros in self._new_zeros(conn).items():
            idx = zeros.view(-1).nonzero().view(-1)
            ranked = idx[torch.argsort(scores[k].reshape(-1)[idx], stable=True)]
            keep = torch.ones(zeros.numel(), dtype=torch.bool)
            keep[ranked[: len(ranked) // 2]] = False
            live = self.masks.masks.get(k)
            keep = keep.view_as(zeros)
            smaller[k] = keep if live is None else keep & live
        return half, smaller

    def _snapshot(self) -> dict:
        """Everything a pruning step changes, copied: weights and buffers, the optimizer's state, the
        masks and the bookkeeping (before the step, so shapes are the pre-step ones). Held on the CPU:
        a GPU run keeps no second copy of its weights and moments on the device during a trial
        (load_state_dict copies the weights back into the device's tensors, and the optimizer's casts
        its state to each parameter's device; both exact)."""
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "optimizer": _cpu_copy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            "masks": self.masks.state_dict(),
            "removed": {k: v.clone() for k, v in self.removed.items()},
            "budget_reached": self.budget_reached,
        }

    def _restore(self, snap: dict) -> None:
        """Roll back to `snap` exactly (a step under trial is masks only: the shapes are unchanged)."""
        self.masks.detach()
        self.model.load_state_dict(snap["model"])
        if self.optimizer is not None:
            # the run's clock is not turned back: hyperparameters set since (the learning rate of a new
            # epoch, an LR scheduler's) stay; the state (moments, step counts) is the snapshot's
            hyper = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
            self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
            for group, h in zip(self.optimizer.param_groups, hyper):
                group.update(h)
        self.masks = MaskSet({k: v.clone() for k, v in snap["masks"].items()})
        self.removed = {k: v.clone() for k, v in snap["removed"].items()}
        self.budget_reached = snap["budget_reached"]
        self.masks.apply(self.model, self.optimizer)  # the hooks again; the weights are already masked

    @property
    def ended_by(self) -> str | None:
        """What ended pruning: "budget" (met), "guard" (it stopped pruning), "schedule" (its last
        pruning point passed); None while pruning goes on."""
        if self._trial is not None:  # a step under trial may yet be rolled back, or stop pruning
            return None
        if self.budget_reached:
            return "budget"
        if self.guard is not None and self.guard.stopped:
            return "guard"
        return "schedule" if self._pruning_over() else None

    def _pruning_over(self) -> bool:
        if self._deferred is not None:
            return False
        s = self.schedule
        if s.in_steps:
            return not s.points or self.steps_done >= s.points[-1]
        return self.epoch > s.last_prune_epoch

    # --- decisions ------------------------------------------------------------------------
    def _live_units(self, g: Group) -> torch.Tensor:
        live = torch.ones(g.width, dtype=torch.bool)
        if g.name in self.removed:
            live[self.removed[g.name]] = False
        return live

    def _unit_norms(self, raw=None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(normalized unit scores, live units) of every group, by `raw` unit scores (default: the
        scores gathered so far); protected units rank first."""
        raw = self.scores.unit_scores() if raw is None else raw
        norm, live = {}, {}
        for g in self.groups:
            live[g.name] = self._live_units(g)
            norm[g.name] = normalize(raw[g.name], live[g.name]).float()
            if g.protected:  # ranked above every live unit, below the dead ones (inf) in _fit_budget
                norm[g.name][list(g.protected)] = PROTECTED
        return norm, live

    def _choose_units(self, budget: float | None) -> dict[str, torch.Tensor]:
        """Units under the threshold; with a budget, then more, one notch of units of one layer at
        a time, until the rebuilt model fits. Survivor counts are multiples of round_to (rounded
        up), the best-scored units always stay, and so do a group's protected units."""
        raw = self.scores.unit_scores()
        norm, live = self._unit_norms(raw)
        s = self.schedule
        keep = {}
        for g in self.groups:
            n_live = int(live[g.name].sum())
            n_drop = int(((norm[g.name] < s.threshold) & live[g.name]).sum())
            rt, mw = self._in_units(g)
            keep[g.name] = max(round_keep(n_live - n_drop, n_live, rt, mw), len(g.protected))
        if budget is not None:
            self._fit_budget(keep, norm, live, budget, raw)
        return self._removed_for(keep, norm, live)

    def _fit_budget(self, keep: dict[str, int], norm, live, budget: float, raw) -> None:
        """Lower survivor counts one notch at a time until the rebuilt model fits `budget`.

        Each notch takes the next-lowest-scored units of one layer. Under a parameter budget the
        notch with the lowest mean normalized score goes first; under a MACs or latency budget the
        one with the least loss per MAC (or millisecond) it saves, so that a layer whose units are
        cheap in parameters but costly in compute (early, high-resolution convolutions) goes before
        one whose units are the reverse. That loss is the units' raw scores (`raw`: the first-order
        change of the loss, comparable from layer to layer), not their normalized ones: those make
        every layer's average unit 1.0, so a unit that is a twelfth of its layer (an attention head)
        would count as little as one that is a 1,536th (an FFN neuron) while saving 64 times the
        MACs, and a budget would take every head before any neuron. Either way a notch that would
        cross the run's final target is taken only when every notch would: with coarse rounding at
        small widths, the cheapest-scored notch can remove a third of a layer, far more than the step
        needs. A notch is `round_to` units, or 1/NOTCH_SHARE of the layer's survivors when that is
        more, so that a 20,000-row vocabulary takes tens of notches, not thousands. A step empties
        at most EMPTIED_PER_STEP whole sublayers.
        """
        target = budget * self._baseline_cost()
        final = self._final * self._baseline_cost()
        per_cost = self.budget.per_cost  # what goes first: the least loss per MAC or ms saved
        # live units, lowest-scored first (dead ones, at inf, last); norm and live do not change here
        ascending = {
            g.name: torch.argsort(torch.where(live[g.name], norm[g.name], torch.tensor(float("inf"))), stable=True)
            for g in self.groups
        }
        params = self._cost_for(keep)
        emptied = 0  # sublayers this step has emptied
        while params > target:
            options = []  # (rank of the notch, group order, name, lower)
            for order, g in enumerate(self.groups):
                n_live = int(live[g.name].sum())
                rt, mw = self._in_units(g)
                notch = max(rt, math.ceil(keep[g.name] / NOTCH_SHARE))
                # (keep - notch) rounded up to a multiple of round_to: at most `notch` units go
                lower = ((keep[g.name] - notch + rt - 1) // rt) * rt
                if g.whole and keep[g.name] > 0 and lower < min(mw, n_live) and not g.protected:
                    if emptied >= EMPTIED_PER_STEP:
                        continue
                    lower = 0  # below the floor a whole sublayer goes (prune/sublayers.py)
                elif lower < min(mw, n_live) or lower < max(1, len(g.protected)):
                    continue
                leaving = ascending[g.name][n_live - keep[g.name] : n_live - lower]
                if per_cost:
                    saved = params - self._cost_for({**keep, g.name: lower})
                    rank = float(raw[g.name][leaving].sum()) / saved if saved > 0 else math.inf
                else:
                    rank = float(norm[g.name][leaving].mean())
                options.append((rank, order, g.name, lower))
            if not options or all(o[0] == math.inf for o in options):
                return  # nothing left to remove, or nothing that would save time
            choice = self._cheapest_notch(keep, options, final)
            emptied += choice[1] == 0 and keep[choice[0]] > 0
            keep[choice[0]], params = choice[1], choice[2]

    def _cheapest_notch(self, keep: dict[str, int], options: list, final: float) -> tuple[str, int, float]:
        """(layer, survivors, params after) of the lowest-scored notch that does not cross `final`
        (ties: the one that removes least); when every notch crosses, the one that overshoots least.
        Sizes are computed in score order and only as far as needed."""
        sized = []
        options = sorted(options)
        i = 0
        while i < len(options):
            tied = [o for o in options[i:] if o[0] == options[i][0]]
            i += len(tied)
            for _, order, name, lower in tied:
                sized.append((order, name, lower, self._cost_for({**keep, name: lower})))
            fits = [o for o in sized[-len(tied) :] if o[3] >= final]
            if fits:
                _, name, lower, after = min(fits, key=lambda o: (-o[3], o[0]))
                return name, lower, after
        _, name, lower, after = min(sized, key=lambda o: (-o[3], o[0]))
        return name, lower, after

    def _in_units(self, g: Group) -> tuple[int, int]:
        """round_to and min_width (given in channels) in units of group `g`."""
        per = self._per_unit[g.name]
        return max(1, math.ceil(self.schedule.round_to / per)), max(1, math.ceil(self.schedule.min_width / per))

    def _removed_for(self, keep: dict[str, int], norm, live) -> dict[str, torch.Tensor]:
        """The live units outside the best-scored `keep[layer]` of each layer."""
        removed = {}
        for g in self.groups:
            ranked = torch.argsort(torch.where(live[g.name], norm[g.name], torch.tensor(-1.0)), descending=True)
            gone = live[g.name].clone()
            gone[ranked[: keep[g.name]]] = False
            removed[g.name] = gone.nonzero().view(-1)
        return removed

    def _shapes(self, keep: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """Every parameter's shape once each group keeps `keep[group]` of its units."""
        shapes = self.cost.param_shapes()
        return sizes_after(shapes, self.groups, keep)

    def _measure(self, shapes: dict[str, tuple[int, ...]], params: float | None = None) -> float:
        """The budget's measure of a model with these shapes (see Budget.measure)."""
        latency = None if self.latency_model is None else self.latency_model.predict_shapes
        return self.budget.measure(shapes, self.cost.macs, latency, params)

    def _cost_for(self, keep: dict[str, int]) -> float:
        """The budget's measure (dense parameters, MACs per example or predicted ms) with these
        survivor counts."""
        return self._measure(self._shapes(keep))

    def _cost_now(self) -> float:
        """The budget's measure of the model as it is (parameters: the live ones)."""
        return self._measure(self._shapes({}), params=self.live_params())

    def _baseline_cost(self) -> float:
        """The budget's measure of the dense model (kept from construction, and across a resume)."""
        dense = {"latency": self.baseline_latency_ms, "macs": self.baseline_macs, "params": self.baseline_params}
        return float(dense[self.budget.unit])

    @property
    def _final(self) -> float | None:
        """The budget's final fraction of the dense model's cost (None: no budget)."""
        return None if self.budget is None else self.budget.fraction(self._baseline_cost())

    def _check_reachable(self, target_ms: float) -> None:
        """A latency budget below the floor is refused outright (the table says it cannot be met)."""
        floor = self.latency_model.predict_shapes(self._shapes(self._floor_keep()))
        if target_ms < floor:
            frozen = self._frozen_pairs()
            raise UserError(
                f"--target-latency-ms {target_ms:g} is below what this model can reach by the latency table "
                f"({floor:.4g} ms with every prunable layer at --min-width"
                + (f" and the frozen ones whole, {budgets.frozen_names(frozen)}" if frozen else "")
                + f"; the dense model: {self.baseline_latency_ms:.4g} ms); raise it or start from a smaller model."
            )

    # --- is the budget reachable? (the words: prune/budget.py) --------------------------------
    def _frozen_pairs(self) -> list[tuple[str, str]]:
        return [(f.space, f.reason) for f in self._frozen_spaces]

    def _floor_keep(self, units=None) -> dict[str, int]:
        """Survivors of every group at its floor: `units(g)` (default --min-width), never below its
        protected units nor above its width; a whole sublayer (Group.whole) can go entirely."""
        units = units or (lambda g: self._in_units(g)[1])
        return {g.name: 0 if g.whole else max(min(g.width, units(g)), len(g.protected)) for g in self.groups}

    def _floors(self) -> budgets.Floors:
        """The budget's measure at the lowest widths pruning can reach, as fractions of the dense
        model's (frozen channel spaces and the model's inputs and outputs stay whole)."""
        base = self._baseline_cost()
        fixed_measure = "params" if self.budget.unit == "params" or self.cost.macs_factors is None else "macs"
        nothing = self._shapes({g.name: 0 for g in self.groups})  # what is left when every group is gone
        # of the dense model (after compaction and on resume too: the baselines are the dense model's)
        if fixed_measure == "macs":
            fixed = self.cost.macs(nothing) / max(self.baseline_macs, 1)
        else:
            fixed = sum(math.prod(s) for s in nothing.values()) / max(self.baseline_params, 1)
        return budgets.Floors(
            min_width=self._cost_for(self._floor_keep()) / base,
            one_unit=self._cost_for(self._floor_keep(lambda g: 1)) / base,
            fixed=fixed,
            fixed_measure=fixed_measure,
        )

    def _unreachable_reasons(self, floors: budgets.Floors | None = None) -> list[str]:
        if self._final is None or not self.groups:
            return []
        floors = floors or self._floors()
        return budgets.unreachable_reasons(
            floors, self._final, self._frozen_pairs(), self.schedule.min_width, self.budget.unit
        )

    def _schedule_reason(self) -> str | None:
        """Why the schedule never prunes (None: it has pruning epochs)."""
        s = self.schedule
        if s.prune_steps > 0:
            return None
        if s.in_steps:
            return budgets.no_pruning_step(s.total_steps, s.warmup_steps, s.prune_until)
        reason = budgets.no_pruning_epoch(s.epochs, s.warmup_epochs, s.prune_until, s.last_prune_epoch)
        if s.steps_per_epoch is None:
            reason += "; give the pruner steps_per_epoch= (or total_steps=) and it prunes within epochs"
        return reason

    def budget_warnings(self) -> list[str]:
        """What is known now about a budget (or any pruning) this run cannot reach, one sentence
        each: a floor above the target (frozen layers, --min-width) or no pruning epoch."""
        out = []
        if self._final is not None:
            floors = self._floors()
            reasons = self._unreachable_reasons(floors)
            if reasons:
                out.append(budgets.unreachable_sentence(self.budget.unit, self._final, floors, reasons))
        schedule = self._schedule_reason()
        if schedule is not None:
            out.append(budgets.no_pruning_sentence(schedule))
        return out

    def warn_budget(self) -> list[str]:
        """`warnings.warn` each of `budget_warnings()` as a BudgetWarning (done at construction;
        call it again after `load_state_dict`, which restores the dense model's costs)."""
        found = self.budget_warnings()
        for message in found:
            warnings.warn(message, BudgetWarning, stacklevel=_caller_level())
        return found

    def budget_status(self) -> dict | None:
        """The budget's outcome so far: {measure, target, reached (fractions of the dense model's
        cost), met, reasons}; None without a budget. Masked units count as removed."""
        final = self._final
        if final is None:
            return None
        base = self._baseline_cost()
        cost = self._cost_live()
        met = budgets.meets(cost, final, base)
        reasons = []
        if not met:
            reasons = self._unreachable_reasons()
            schedule = self._schedule_reason()
            if schedule is not None:
                reasons.append(schedule)
            if not reasons and self.guard is not None and self.guard.stopped:
                reasons.append(self.guard.stop_reason())
            if not reasons:
                reasons.append(self._stopped_reason())
        return {"measure": self.budget.unit, "target": final, "reached": cost / base, "met": met, "reasons": reasons}

    def _stopped_reason(self) -> str:
        """Why a budget whose floor is below the target was still missed."""
        s = self.schedule
        if self._trial is not None:
            t = self._trial
            return f"a pruning step from {t['at']} is under the accuracy guard's trial until step {t['judge_at']}"
        if self._deferred is not None:
            d = self._deferred
            return f"the pruning point at {d['at']} was carried forward to step {d['due']} (scores restarted there)"
        if not self._pruning_over():
            if s.in_steps:
                return f"pruning is not over (it ends at step {s.points[-1]}; {self.steps_done} done)"
            return f"pruning is not over (it ends after epoch {s.last_prune_epoch}; {self.epoch - 1} done)"

        def rounded(g):  # the lowest width the budget's steps reach: a multiple of --round-to
            rt, mw = self._in_units(g)
            return math.ceil(max(min(mw, g.width), 1) / rt) * rt

        floor = self._cost_for(self._floor_keep(rounded)) / self._baseline_cost()
        if not budgets.meets(floor, self._final, 1.0):
            return f"--round-to {s.round_to}: widths in its multiples stop the budget's steps at {budgets.frac(floor)}"
        if self.guard is not None and self.guard.counts()["rolled_back"]:
            return self.guard.shrunk_reason()
        if self.guard is not None and self.guard.still_guessing():
            return self.guard.untrained_reason()
        point = "point" if s.in_steps else "epoch"
        return f"the last pruning {point} ended above it (no layer could give up another notch that saves cost)"

    def _cost_live(self) -> float:
        """The budget's measure of the model with its live units only (masked units counted as gone)."""
        shapes = self._shapes({g.name: int(self._live_units(g).sum()) for g in self.groups})
        return self._measure(shapes, params=self.live_params())

    def _nothing_pruned(self) -> str | None:
        """Why no unit and no connection was removed (None: something was)."""
        if self.masks.zeros() or self.widths() != self.widths_before:
            return None
        if not self.groups:
            return f"no channel can be pruned ({budgets.why_nothing_prunable(self._frozen_pairs())})"
        schedule = self._schedule_reason()
        if schedule is not None:
            return schedule
        s = self.schedule
        if s.in_steps and self.steps_done < s.points[0]:
            return f"no pruning step has come yet (the first is step {s.points[0]})"
        if not s.in_steps and self.epoch <= s.warmup_epochs + 1:
            return f"no pruning epoch has ended yet (the first is epoch {s.warmup_epochs + 1})"
        if self.guard is not None and self.guard.stopped:
            return self.guard.stop_reason()
        status = self.budget_status()
        if status is not None and status["reasons"]:
            return "; ".join(status["reasons"])
        return f"no unit or connection scored under --threshold {s.threshold:g} of its layer's average"

    def _choose_connections(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, sc in self.scores.connection_scores().items():
            live = self.masks.masks.get(name)
            norm = normalize(sc, live)
            keep = norm >= self.schedule.threshold
            out[name] = keep if live is None else keep & live
        return out

    def _zeros_in(self, removed) -> int:
        """Masked entries that lie inside the slices of `removed` units (they go with the units)."""
        unit_masks = param_masks_for_units(self.model, self.groups, removed)
        return sum(int((~unit_masks[k] & ~m).sum()) for k, m in self.masks.masks.items() if k in unit_masks)

    # --- compaction ---------------------------------------------------------------------------
    def _compact(self, removed) -> None:
        keeps = compact_(self.model, self.groups, removed, self.optimizer)
        self.masks.detach()
        self.masks = MaskSet(compact_masks(self.masks.masks, keeps))

    # --- bookkeeping ----------------------------------------------------------------------
    def live_params(self) -> int:
        """Parameters of the model as it is now, masked connections not counted."""
        return count_params(self.model) - self.masks.zeros()

    def latency_ms(self) -> float | None:
        """Predicted ms per call of the model as it is now (None without a latency model)."""
        return None if self.latency_model is None else self.latency_model.predict_shapes(self._shapes({}))

    def macs(self) -> int | None:
        """MACs per example of the model as it is now (masked units counted until compacted)."""
        return self.cost.macs(self._shapes({}))

    def connection_sparsity(self) -> float:
        """The share of connection weights (conv, Linear and RNN weights) masked at zero."""
        params = dict(self.model.named_parameters())
        names = set(connection_params(self.model))
        total = sum(params[n].numel() for n in names)
        # zeros of connection weights only (not a masked unit's bias or norm scale)
        zeros = sum(int((~m).sum()) for k, m in self.masks.masks.items() if k in names)
        return (zeros / total) if total else 0.0

    def widths(self, live: bool = True) -> dict[str, int]:
        """Channels (units, hidden units, rows) of every prunable layer (group) now: the live ones,
        or with live=False all the model holds (masked units included, until compacted)."""
        now = {
            g.name: (int(self._live_units(g).sum()) if live else g.width) * self._per_unit[g.name] for g in self.groups
        }
        gone = {k: 0 for k in getattr(self, "widths_before", {}) if k not in now}  # a group gone whole: none left
        return {**gone, **now}

    def summary(self) -> Summary:
        """What pruning did so far: widths, parameters, MACs and latency before and after, the budget
        and what ended pruning (printable; `.to_dict()` for JSON)."""
        return Summary(
            widths_before=dict(self.widths_before),
            widths_after=self.widths(),
            params_before=self.baseline_params,
            params_after=self.live_params(),
            macs_before=self.baseline_macs,
            macs_after=self.macs(),
            latency_ms_before=self.baseline_latency_ms,
            latency_ms_after=self.latency_ms(),
            frozen=list(self.frozen),
            budget=self.budget_status(),
            nothing_pruned=self._nothing_pruned(),
            ended_by=self.ended_by,
            guard=None if self.guard is None else self.guard.to_dict(),
        )

    def state_dict(self) -> dict:
        """Everything needed to resume exactly at this step (save it beside the model and optimizer;
        `load_state_dict` restores it)."""
        return {
            "baseline_params": self.baseline_params,
            "baseline_macs": self.baseline_macs,
            "baseline_latency_ms": self.baseline_latency_ms,
            "widths_before": dict(self.widths_before),
            "budget_reached": self.budget_reached,
            "epoch": self.epoch,
            "masks": self.masks.state_dict(),
            "removed": {k: v.clone() for k, v in self.removed.items()},
            # resume at any step: the step count, the scores gathered since the last pruning point
            # and the guard's reference and records
            "steps_done": self.steps_done,
            "scores": self.scores.state_dict(),
            "guard": None if self.guard is None else copy.deepcopy(self.guard.state_dict()),
            "guard_fresh": self._fresh,  # the guard's figure of these weights, when no training came since
            # the step under the guard's trial: its snapshot (weights, optimizer state, masks), the step and
            # when it is judged, so a checkpoint taken during its recovery steps resumes it exactly
            "guard_trial": copy.deepcopy(self._trial),
            "guard_deferred": copy.deepcopy(self._deferred),  # a pruning point carried forward, and when it prunes
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the model and optimizer given at construction must already
        hold the checkpoint's (compacted) weights and state."""
        self.baseline_params = int(state["baseline_params"])
        self.baseline_macs = state.get("baseline_macs", self.baseline_macs)
        self.baseline_latency_ms = state.get("baseline_latency_ms", self.baseline_latency_ms)
        self.widths_before = dict(state.get("widths_before", self.widths_before))
        self.budget_reached = bool(state["budget_reached"])
        self.epoch = int(state.get("epoch", self.epoch))
        self.masks = MaskSet(state["masks"])
        self.removed = dict(state["removed"])
        self.masks.apply(self.model, self.optimizer)
        self._bind()
        self.steps_done = int(state.get("steps_done", 0))
        saved = state.get("scores")
        if saved is not None:
            self.scores.load_state_dict(saved)
        if self.guard is not None and state.get("guard") is not None:
            self.guard.load_state_dict(copy.deepcopy(state["guard"]))
        self._fresh = state.get("guard_fresh")  # not a figure measured as this pruner was built
        self._trial = copy.deepcopy(state.get("guard_trial"))
        self._deferred = copy.deepcopy(state.get("guard_deferred"))
