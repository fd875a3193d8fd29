"""When to prune and how much: warm-up, pruning points, frozen fine-tuning, optional cubic budget.

Pruning happens at *points* of the run. With epochs alone, a point is the end of each epoch from
warmup+1 to floor(prune_until * epochs) (the study's schedule). When the run's steps are known
(`steps_per_epoch`), the points can lie within epochs: every `prune_every` optimizer steps, or,
when no epoch end falls in the pruning window (a run of one or two epochs), AUTO_POINTS points
spread evenly over it, so that a short fine-tune prunes too. Either way the budget follows the
same cubic ramp over the points, and the window is the same: from the end of the warm-up to
prune_until of the run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from edgeprune.errors import ArgumentError, UserError
from edgeprune.prune.budget import Budget

AUTO_POINTS = 10  # pruning points spread over a window no epoch end falls in (see the module docstring)


@dataclass(frozen=True)
class PruneSchedule:
    """When to prune and how far: warm-up, pruning window and fine-tuning (in epochs, or in optimizer
    steps within them), the threshold, at most one budget, and the width rounding. Bad values raise a
    UserError of one sentence."""

    epochs: int
    warmup_epochs: int
    # The defaults below are the library's and the command line's (Pruner, TrainConfig and the
    # flags refer to them): each is written here only.
    prune_until: float = 0.7  # fraction of the epochs after which the structure is frozen
    threshold: float = 0.01
    target_params: Optional[float] = None  # keep at most this fraction of the baseline's parameters
    target_macs: Optional[float] = None  # or at most this fraction of its MACs per example
    target_latency_ms: Optional[float] = None  # or at most this predicted latency (a latency table)
    round_to: int = 8
    min_width: int = 8
    prune_connections: bool = True
    progressive: bool = True  # compact after every pruning step (else masks until the end)
    finetune_lr: str = "constant"  # or "cosine": decay the learning rate over the fine-tuning epochs
    steps_per_epoch: Optional[int] = None  # optimizer steps per epoch, when known (pruning within epochs)
    prune_every: Optional[int] = None  # prune every N optimizer steps (needs steps_per_epoch)

    def __post_init__(self):
        # errors name the arguments (threshold=); a command line reports them with its flags
        # (ArgumentError.in_flags, see config.schedule_of)
        if self.warmup_epochs < 0:
            raise ArgumentError(f"warmup_epochs= must be 0 or more, got {self.warmup_epochs}.", "warmup_epochs")
        if not 0 < self.prune_until <= 1:
            raise ArgumentError(f"prune_until= must be a fraction in (0, 1], got {self.prune_until}.", "prune_until")
        if not 0 <= self.threshold < 1:
            raise ArgumentError(f"threshold= must lie in [0, 1), got {self.threshold}.", "threshold")
        if self.target_params is not None and not 0 < self.target_params < 1:
            raise ArgumentError(
                f"target_params= must be a fraction in (0, 1), e.g. 0.1, got {self.target_params}.", "target_params"
            )
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise ArgumentError(
                f"target_macs= must be a fraction in (0, 1), e.g. 0.5, got {self.target_macs}.", "target_macs"
            )
        if self.target_latency_ms is not None and not self.target_latency_ms > 0:
            raise ArgumentError(
                f"target_latency_ms= must be a positive time in ms, got {self.target_latency_ms}.", "target_latency_ms"
            )
        given = [t for t in (self.target_params, self.target_macs, self.target_latency_ms) if t is not None]
        if len(given) > 1:
            raise ArgumentError(
                "Give one budget: target_params=, target_macs= or target_latency_ms=, not two.",
                "target_params",
                "target_macs",
                "target_latency_ms",
            )
        if self.round_to < 1:
            raise ArgumentError(f"round_to= must be 1 (off) or more, got {self.round_to}.", "round_to")
        if self.min_width < 1:
            raise ArgumentError(f"min_width= must be at least 1, got {self.min_width}.", "min_width")
        if self.finetune_lr not in ("constant", "cosine"):
            raise ArgumentError(f"finetune_lr= must be constant or cosine, got {self.finetune_lr!r}.", "finetune_lr")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise UserError(f"steps_per_epoch must be at least 1, got {self.steps_per_epoch}.")
        if self.prune_every is not None and self.prune_every < 1:
            raise ArgumentError(
                f"prune_every= must be a number of optimizer steps, 1 or more, got {self.prune_every}.", "prune_every"
            )

    @property
    def cost_budget(self) -> Optional[Budget]:
        """The budget: how far pruning goes, in what unit (None: the threshold alone decides)."""
        return Budget.from_targets(self.target_params, self.target_macs, self.target_latency_ms)

    @property
    def target(self) -> Optional[float]:
        """The budget's final fraction, of parameters or of MACs (None: no such budget; a latency
        budget's fraction is the pruner's: target_latency_ms over the dense model's prediction)."""
        b = self.cost_budget
        return None if b is None or b.unit == "latency" else b.target

    @property
    def measure(self) -> Optional[str]:
        """What the budget counts: "params", "macs", "latency" or None (the threshold alone)."""
        b = self.cost_budget
        return None if b is None else b.unit

    @property
    def _epoch_points(self) -> int:
        return max(0, int(math.floor(self.prune_until * self.epochs + 1e-9)) - self.warmup_epochs)

    @property
    def in_steps(self) -> bool:
        """True: pruning happens at optimizer steps within epochs (`Pruner.step()`); False: at epoch
        ends (`Pruner.end_epoch()`)."""
        return self.steps_per_epoch is not None and (self.prune_every is not None or self._epoch_points == 0)

    @property
    def warmup_steps(self) -> int:
        """Optimizer steps of the warm-up (0 when steps per epoch are not known)."""
        return self.warmup_epochs * (self.steps_per_epoch or 0)

    @property
    def total_steps(self) -> Optional[int]:
        """Optimizer steps of the whole run (None when steps per epoch are not known)."""
        return None if self.steps_per_epoch is None else self.epochs * self.steps_per_epoch

    @property
    def points(self) -> tuple[int, ...]:
        """The optimizer steps (counted from 1) after which pruning happens, in step mode (else ())."""
        if not self.in_steps:
            return ()
        first, last = self.warmup_steps, int(math.floor(self.prune_until * self.total_steps + 1e-9))
        if last <= first:
            return ()
        if self.prune_every is not None:
            return tuple(range(first + self.prune_every, last + 1, self.prune_every))
        k = min(AUTO_POINTS, last - first)
        return tuple(first + math.ceil(i * (last - first) / k) for i in range(1, k + 1))

    @property
    def point_gap(self) -> Optional[int]:
        """Optimizer steps between consecutive pruning points (the shortest such gap, the first point
        counted from the end of the warm-up); None when the run's steps are not known."""
        if self.steps_per_epoch is None:
            return None
        if not self.in_steps:
            return self.steps_per_epoch  # one epoch between epoch ends
        edges = (self.warmup_steps, *self.points)
        return min((b - a for a, b in zip(edges, edges[1:])), default=None)

    @property
    def last_prune_epoch(self) -> int:
        """Epochs are numbered from 1; pruning happens at the end of epochs warmup+1 .. this (in
        step mode: within them, the last point falling in this epoch)."""
        if self.in_steps:
            points = self.points
            return math.ceil(points[-1] / self.steps_per_epoch) if points else self.warmup_epochs
        return int(math.floor(self.prune_until * self.epochs + 1e-9))

    @property
    def prune_steps(self) -> int:
        """How many pruning points the schedule has (epoch ends, or steps in step mode)."""
        return len(self.points) if self.in_steps else self._epoch_points

    def phase(self, epoch: int) -> str:
        """ "warmup", "prune" or "finetune": what epoch `epoch` (numbered from 1) is for."""
        if epoch <= self.warmup_epochs:
            return "warmup"
        return "prune" if epoch <= self.last_prune_epoch else "finetune"

    def budget(self, epoch: int) -> Optional[float]:
        """Fraction of the baseline's parameters (or MACs) allowed after pruning at the end of `epoch`:
        R + (1 - R) * (1 - t)^3 with t the share of pruning steps done (cubic ramp, Zhu & Gupta)."""
        return None if self.target is None else self.ramp(epoch, self.target)

    def ramp(self, epoch: int, final: float) -> Optional[float]:
        """The cubic ramp toward the fraction `final` at the end of `epoch` (None outside pruning)."""
        if self.phase(epoch) != "prune":
            return None
        return self.ramp_at(epoch - self.warmup_epochs, final)

    def ramp_at(self, k: int, final: float) -> float:
        """The cubic ramp toward `final` at the k-th pruning point (1 .. prune_steps)."""
        t = k / self.prune_steps
        return final + (1 - final) * (1 - t) ** 3

    def lr_scale(self, epoch: int, floor: float = 0.01) -> float:
        """Learning-rate factor for `epoch`: 1 outside fine-tuning; with "cosine", from 1 at the first
        fine-tuning epoch down toward `floor` at the last."""
        if self.finetune_lr != "cosine" or self.phase(epoch) != "finetune":
            return 1.0
        t = (epoch - self.last_prune_epoch - 1) / max(1, self.epochs - self.last_prune_epoch)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    def to_dict(self) -> dict:
        """The schedule as a plain dict (for config.json)."""
        return asdict(self)


def default_warmup(epochs: int, from_weights: bool = False) -> int:
    """Warm-up epochs when none are given: none when training starts from trained weights (the
    model is already what the warm-up would make it); else a tenth of the run, at least one (none
    for a 1-epoch run)."""
    if from_weights:
        return 0
    return max(1, epochs // 10) if epochs > 1 else 0


def round_keep(n_keep: int, width: int, round_to: int, min_width: int) -> int:
    """Survivor count rounded up to a multiple of `round_to`, within [min_width, width]."""
    if round_to > 1:
        n_keep = int(math.ceil(n_keep / round_to) * round_to)
    return max(min(n_keep, width), min(min_width, width))
