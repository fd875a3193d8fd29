"""The accuracy guard: pruning goes on only while the pruned model stays within `max_drop` points
of the dense model, as far as validation can tell during the run.

The dense model keeps learning after the guard's reference (its validation metric at the end of
the warm-up, or at the start when there is none, the default when training starts from trained
weights), so a stale reference lets every later step through. What the guard holds instead is
an estimate of the drop against the dense model as it would be now: the COSTS OF THE STEPS KEPT
SO FAR, ADDED UP. A step's cost is the model's validation right before the step minus its
validation after the step and R optimizer steps of training with its masks held; between steps
the pruned model learns what the dense one would have, so the costs add up to the gap (signed:
a step that comes back above its pre-step figure gives some slack back, and the noise of the
validation set does not pile up as it would if only losses were counted). A step is kept when
that sum with its own cost is at most `max_drop` points, and when validation is still within
`max_drop` of the reference (the first step's test). Measured on real Fashion-MNIST, a rule that
held each step alone to `max_drop` let five steps of 0.7-0.8 points through and ended 1.7 points
of validation under the dense twin; the sum said 1.75 (benchmarks/README.md, the guard's rows).

When: right after a step validation dips and recovers within a fraction of an epoch, so a step
judged at once is often refused for a dip training would have mended; R = 0 judges it at once.
By default (`auto_recovery`) R is a quarter of the optimizer steps between consecutive pruning
points (the shortest such gap; an epoch in epoch-end schedules), at least 1 (0 when the pruner does
not know the run's steps: a loop that never calls pruner.step()). Of the two ways to keep a step's
judgement before the next point (R from the gap that follows each point, or R at most gap // 2 of
every gap) this is the second: a quarter of the shortest gap is at most half of any gap of 2 steps
or more, so a step is judged before the next point comes. Only a gap of one step (short runs whose
points are spread unevenly, e.g. 20 steps: points 2, 3, 5, 6, ...) puts the judgement on the next
point itself. The judgement restarts the scores, so that point has nothing to choose by: it is
carried forward (deferred) and prunes once scores have been gathered for max(1, R) steps, unless a
later point of the schedule comes first and takes it up. A point that passes without trying a
step (deferred, taken up, or while a smaller retry is under trial) is recorded as "passed", with why.

At every pruning point the pruner measures the pre-step figure (one validation pass, skipped
when the same weights were measured with no training since: the reference taken at this point,
or the previous step's own pass), snapshots the model, its optimizer and its own state, masks the
units and connections it chose and trains on. R steps later it asks the caller's `evaluate(model)`
for the metric: a step within the rule is kept (compacted, in progressive mode); one that falls
further is rolled back exactly to the snapshot (weights, optimizer state, masks: the R steps of
training since are discarded) and retried with half of each layer's removal, at most MAX_HALVINGS
times. When no smaller step fits, pruning stops for good and the rest of the run fine-tunes.

A model no better than guessing: when the caller gives the validation labels, the guard knows the
FLOOR, the best a guess that never looks at the input scores (the majority share for accuracy; 1/K
for macro-F1 over K classes, what guessing in the labels' proportions scores). A model within the
set's noise of the floor has learned nothing a step could cost: every step scores a cost of zero
there and would be kept.
That happens from pretrained weights with a new classifier head, whose first epochs sit at the
majority share (measured: a one-epoch guarded MiniLM fine-tune on the tweets, 73.5% positive,
kept every step while validation sat at 0.735 and ended at the majority class). So a pruning point
where the model before the step is within noise of the floor tries no step; it passes, said as
such, and the next point asks again. The first point above it takes its figure as the dense
reference when the one taken earlier was at the floor too (a reference at chance level guards
nothing). A model that never rises above the floor is never pruned, and the missed budget says why.

What it costs: one validation pass per try, one per pruning point for the model before it (unless
fresh), one for the reference; and R optimizer steps thrown away per rolled-back try. The guard
counts both (`validations`, `seconds`, `discarded_steps`).

This module holds the rule, the records and the sentences; the pruner (prune/pruner.py) does
the masking, the waiting and the rollback. Plain data in and out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgeprune.errors import ArgumentError, UserError

DEFAULT_MAX_DROP = 1.0  # points: `edgeprune train` with a budget is guarded by this much by default
MAX_HALVINGS = 4  # a rolled-back step is retried at 1/2, 1/4, 1/8 and 1/16 of its removal, then pruning stops
NOISE_SE = 2.0  # a tolerance under two standard errors of the validation metric is within its noise
METRICS = ("accuracy", "f1")
DEFAULT_METRIC = "accuracy"  # what the guard compares unless told (Pruner, TrainConfig, the flags)
TIE = 1e-9  # a drop equal to max_drop (up to float error) is within it
DEFAULT_RECOVERY = "auto"  # optimizer steps of training before a step is judged (auto_recovery says how many)
RECOVERY_SHARE = 4  # auto: a quarter of the optimizer steps between consecutive pruning points


def parse_max_drop(value) -> float | None:
    """max_drop= (--max-accuracy-drop) as points (None: the guard is off, from "none")."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return None
    try:
        points = float(value)
    except (TypeError, ValueError):
        points = math.nan
    if not math.isfinite(points) or points < 0:
        raise ArgumentError(
            f"max_drop= must be a number of points of validation accuracy, 0 or more (e.g. 1.0), "
            f"or none to turn the guard off; got {value!r}.",
            "max_drop",
        )
    return points


def parse_recovery(value) -> int | None:
    """guard_recovery= (--guard-recovery) as optimizer steps, 0 or more (None: auto, from "auto")."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    steps = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isfinite(number) and number >= 0 and number == int(number):
            steps = int(number)
    if steps is None:
        raise ArgumentError(
            "guard_recovery= must be a whole number of optimizer steps of training before a pruning step is "
            f"judged, 0 or more (0 judges it at once), or auto; got {value!r}.",
            "guard_recovery",
        )
    return steps


def auto_recovery(gap: int | None) -> int:
    """R when none is given: a quarter of the `gap` optimizer steps between consecutive pruning points, at
    least 1; 0 (judge at once) when the steps are not known (the loop may never call pruner.step())."""
    return 0 if gap is None else max(1, gap // RECOVERY_SHARE)


def chance_floor(labels, metric: str = DEFAULT_METRIC) -> float:
    """The best a guess that never looks at the input scores on `labels` (class ids): for accuracy,
    always the most common class (its share p; guessing in the labels' proportions scores the sum of
    their squares, less); for macro-F1, 1/K over the K classes present, which guessing in the labels'
    proportions scores (each class's F1 is at most the mean of its share and its guess rate, so no
    guess does better; always the most common class scores 2p / (1 + p) / K, less)."""
    counts: dict[int, int] = {}
    for y in labels:
        counts[int(y)] = counts.get(int(y), 0) + 1
    if not counts:
        raise UserError("val_labels= is empty; give the validation set's class ids, or leave it out.")
    if check_metric(metric) == "accuracy":
        return max(counts.values()) / sum(counts.values())
    return 1 / len(counts)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ArgumentError(f"guard_metric= must be accuracy or f1 (macro-F1), got {metric!r}.", "guard_metric")
    return metric


def noise_points(p: float, n: int) -> float:
    """NOISE_SE binomial standard errors of a metric near `p` measured on `n` examples, in points."""
    return NOISE_SE * 100 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


@dataclass
class Guard:
    """What the guard knows and did; `events` is every reference, kept, rolled-back and stopping step, and
    every pruning point that passed without trying one ("passed", with "why")."""

    max_drop: float  # points
    metric: str = DEFAULT_METRIC
    n: int | None = None  # validation examples, when the caller says
    reference: float | None = None
    stopped: dict | None = None  # {"at", "value", "drop", "recovery_steps", ...}: the failed step that ended pruning
    events: list[dict] = field(default_factory=list)
    validations: int = 0  # every pass: the reference, the models before steps and each try
    seconds: float = 0.0
    before_passes: int = 0  # of `validations`: the model just before a step, when no fresh figure existed
    spent: float = 0.0  # points: the kept steps' costs added up, the estimated drop against the dense model
    by_default: bool = False  # on because it is the default (said by whoever set it), not asked for
    recovery_steps: int = 0  # R: optimizer steps of training between masking a step and judging it
    discarded_steps: int = 0  # optimizer steps of training thrown away by rollbacks (the guard's cost in training)
    floor: float | None = None  # the metric of always guessing the most common class (None: labels not given)

    def check_value(self, value) -> float:
        """The caller's metric as a float in [0, 1], or one sentence naming the fix."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise UserError(
                f"evaluate(model) returned {value!r}; the accuracy guard needs the validation {self.metric} "
                "as a fraction in [0, 1] (0.91 for 91%)."
            )
        return v

    def drop(self, value: float) -> float:
        """Points under the dense reference (negative: above it): what the guard records and says."""
        return 100.0 * (self.reference - value)

    def cost(self, value: float, before: float) -> float:
        """A step's cost in points: the model just before it (`before`) minus the model after it and its
        recovery steps (`value`); negative when it came back above its pre-step figure."""
        return 100.0 * (before - value)

    def estimate(self, value: float, before: float | None = None) -> float:
        """The drop against the dense model, in points, if a step that left validation at `value` (from
        `before` just before it) is kept: the kept steps' costs so far plus this one's, and at least the
        drop under the dense reference."""
        if before is None:
            return self.drop(value)
        return max(self.drop(value), self.spent + self.cost(value, before))

    def within(self, value: float, before: float | None = None) -> bool:
        """Whether a step that left validation at `value` (judged after the guard's recovery steps of
        training with its masks held), `before` the model's validation just before it, is kept."""
        return self.estimate(value, before) <= self.max_drop + TIE

    def keep(self, value: float, before: float | None = None) -> None:
        """A kept step's cost joins the sum the next steps are held to."""
        if before is not None:
            self.spent += self.cost(value, before)

    def learned(self, value: float) -> bool:
        """Whether validation at `value` is above the floor by more than the set's noise (NOISE_SE standard
        errors when n is known): only then can a step's cost be told. True when the floor is not known."""
        if self.floor is None:
            return True
        margin = noise_points(self.floor, self.n) / 100 if self.n else 0.0
        return value > self.floor + margin + TIE

    def floor_text(self, value: float) -> str:
        """Why a point passed at `value`: the model is no better than guessing (see learned())."""
        noise = f" plus the set's noise, {noise_points(self.floor, self.n):.1f} points" if self.n else ""
        return (
            f"validation {self.metric} {value:.4f} is no better than {self.guess_text()} ({self.floor:.4f}{noise}): "
            "the model has not learned yet, so a step's cost cannot be told"
        )

    def guess_text(self) -> str:
        """The guess the floor stands for, in words."""
        return (
            "always guessing the most common class"
            if self.metric == "accuracy"
            else "guessing in the classes' proportions"
        )

    def waited(self) -> int:
        """Pruning points that passed because the model was no better than guessing."""
        return sum(e["action"] == "passed" and e.get("untrained", False) for e in self.events)

    def still_guessing(self) -> bool:
        """Whether the last pruning point passed because the model was no better than guessing."""
        last = [e for e in self.events if e["action"] != "reference"][-1:]
        return bool(last) and last[0]["action"] == "passed" and last[0].get("untrained", False)

    def untrained_reason(self) -> str:
        """Why a budget was missed when validation stayed at the floor up to the last pruning point."""
        hint = ""
        if self.metric == "accuracy" and self.floor > 0.5:  # one class is most of the set
            hint = "; on a set this unbalanced --guard-metric f1 tells a learning model from a guess sooner"
        return (
            f"the accuracy guard tried no step at {self.waited()} pruning point(s), the last among them: validation "
            f"{self.metric} was within the noise of {self.guess_text()} ({self.floor:.4f}), so a step's cost could "
            "not be told (train longer or warm up with --warmup-epochs; --max-accuracy-drop none prunes regardless"
            f"{hint})"
        )

    def noise(self) -> float | None:
        """The validation metric's noise in points (NOISE_SE standard errors), when n is known."""
        if self.n is None or self.reference is None:
            return None
        return noise_points(self.reference, self.n)

    def noise_warning(self) -> str | None:
        """A sentence when max_drop is below the validation set's noise (steps kept or rolled back by chance)."""
        noise = self.noise()
        if noise is None or self.max_drop >= noise:
            return None
        return (
            f"--max-accuracy-drop {self.max_drop:g} is below the noise of the validation set "
            f"(n={self.n}: {NOISE_SE:g} standard errors are {noise:.1f} points at {self.metric} "
            f"{self.reference:.3f}), so steps may be kept or rolled back by chance; raise it, or hold out "
            "more validation examples (--val-fraction)."
        )

    def kept_with_cost(self) -> int:
        """Kept steps judged against the model just before them: the costs `spent` adds up."""
        return sum(e["action"] == "kept" and e.get("before") is not None for e in self.events)

    def spent_noise(self) -> float | None:
        """How uncertain `spent` is, in points (NOISE_SE standard errors), when n is known: each kept step's
        cost is the difference of two validation passes, each with the set's binomial noise, so k costs
        added up carry up to sqrt(2k) times one pass's noise. Many small steps on a small validation set
        leave the sum with little to say."""
        k, noise = self.kept_with_cost(), self.noise()
        return None if noise is None or not k else noise * math.sqrt(2 * k)

    def spent_warning(self) -> str | None:
        """A sentence when the kept steps' summed cost is more uncertain than max_drop (see spent_noise)."""
        noise = self.spent_noise()
        if noise is None or noise <= self.max_drop:
            return None
        k = self.kept_with_cost()
        return (
            f"the accuracy guard's estimate of the drop, the costs of {k} kept steps added up ({self.spent:.2f} "
            f"points), is uncertain by up to {noise:.1f} points ({NOISE_SE:g} standard errors of {2 * k} "
            f"validation passes on n={self.n}), more than --max-accuracy-drop {self.max_drop:g}: the pruned model "
            "may be further under the dense one than the guard could tell; compare them on the test split, and "
            "prune at fewer points (a larger --prune-every) or hold out more validation examples (--val-fraction)."
        )

    def stop_reason(self) -> str:
        """Why a budget was missed when the guard ended pruning (see prune/budget.py)."""
        s = self.stopped
        # the steps that try really trained (fewer than R when judged at the run's end, at a pruning point
        # or by finalize()); records from before they were kept say R
        steps = s.get("recovery_steps", self.recovery_steps)
        after = f" after {steps} step(s) of training" if steps else ""
        estimate = s.get("estimate", s["drop"])
        return (
            f"the accuracy guard stopped pruning at {s['at']}: the smallest step tried left validation "
            f"{self.metric} {s['value']:.4f}{after}, which would put the pruned model an estimated {estimate:.2f} "
            f"points under the dense one (the steps kept so far cost {self.spent:.2f}; --max-accuracy-drop "
            f"{self.max_drop:g}; none turns the guard off)"
        )

    def shrunk_reason(self) -> str:
        """Why a budget was missed when the guard kept only smaller steps and the schedule ran out."""
        return (
            f"the accuracy guard rolled back {self.counts()['rolled_back']} step(s) that would have put the pruned "
            f"model more than {self.max_drop:g} point(s) of validation {self.metric} under the dense one (the kept "
            "steps' costs added up) and kept smaller ones, so the last pruning point passed above the budget "
            "(--max-accuracy-drop none turns the guard off)"
        )

    def shortened(self) -> int:
        """Tries judged after fewer than `recovery_steps` steps of training (the run's end, a pruning
        point, finalize())."""
        r = self.recovery_steps
        return sum(e["action"] in ("kept", "rolled back") and e.get("recovery_steps", r) < r for e in self.events)

    def counts(self) -> dict:
        kept = sum(e["action"] == "kept" for e in self.events)
        rolled = sum(e["action"] == "rolled back" for e in self.events)
        return {"kept": kept, "rolled_back": rolled}

    def to_dict(self) -> dict:
        """The guard's outcome as plain data (metrics.json's `guard`, Summary.guard)."""
        extra = {
            "shortened": self.shortened(),
            "waited": self.waited(),
            "noise_points": self.noise(),
            "spent_noise_points": self.spent_noise(),
        }
        return {**asdict(self), **self.counts(), **extra}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
