"""What a budget is, whether it can be met, and the sentences that say so: never a silent miss.

`Budget` answers "how far, in what unit" (a predicted latency in ms, else a fraction of the dense
model's MACs, else of its parameters) for the pruner, the report and `experiment`: the precedence
of the three targets is written here once. The pruner computes the numbers (the cost of its model
with every prunable group at its minimum width, at one unit, and at none; see `Pruner._floors`);
this module holds the one rule that decides "met" and the words that every place showing a
budget (the API's warnings and `summary()`, `train`'s output and metrics.json, the report,
`experiment`) prints. Plain data in and out, no torch: the report reads these words from a run's
metrics.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LABELS = {"params": "parameters", "macs": "MACs", "latency": "predicted latency"}
FLAGS = {"params": "--target-params", "macs": "--target-macs", "latency": "--target-latency-ms"}
NAMED = 3  # frozen channel spaces named in a sentence; the rest are counted


@dataclass(frozen=True)
class Budget:
    """How far pruning goes, in what unit: `unit` is "latency" (`target` in ms per call, predicted at
    `threads` onnxruntime threads), "macs" or "params" (`target` the kept fraction of the dense
    model's MACs per example or parameters)."""

    unit: str
    target: float
    threads: int | None = None  # a latency budget's runtime threads, when known (None: the default, 1)

    @classmethod
    def from_targets(
        cls,
        target_params: float | None = None,
        target_macs: float | None = None,
        target_latency_ms: float | None = None,
        threads: int | None = None,
    ) -> Budget | None:
        """The budget these targets ask for (None: none, the threshold alone decides). The one
        precedence rule: a latency target wins over a MACs target, which wins over a parameter
        target (a run's configuration holds one; the schedule refuses two)."""
        if target_latency_ms is not None:
            return cls("latency", float(target_latency_ms), threads)
        if target_macs is not None:
            return cls("macs", float(target_macs))
        if target_params is not None:
            return cls("params", float(target_params))
        return None

    @classmethod
    def from_config(cls, config) -> Budget | None:
        """The budget of a run's configuration: a dict (config.json, the report) or an object with the
        same fields (a TrainConfig); a latency budget takes its `latency_threads`."""
        get = config.get if isinstance(config, Mapping) else (lambda k: getattr(config, k, None))
        return cls.from_targets(
            get("target_params"), get("target_macs"), get("target_latency_ms"), threads=get("latency_threads")
        )

    @property
    def label(self) -> str:
        """What the budget counts, in words ("parameters", "MACs", "predicted latency")."""
        return LABELS[self.unit]

    @property
    def per_cost(self) -> bool:
        """Whether notches are ranked by score per unit of cost saved (MACs, ms) rather than by score
        alone (parameters: a unit's cost is its parameters, so score alone ranks the same way)."""
        return self.unit in ("latency", "macs")

    def fraction(self, dense_cost: float) -> float:
        """The final fraction of the dense model's cost this budget allows (a latency budget's is
        target ms over the dense model's predicted ms, at most 1)."""
        if self.unit == "latency":
            return min(1.0, self.target / dense_cost)
        return self.target

    def measure(
        self,
        shapes: dict[str, tuple[int, ...]],
        macs: Callable[[dict], float],
        latency: Callable[[dict], float] | None,
        params: float | None = None,
    ) -> float:
        """This budget's cost of a model whose parameters have these shapes: `latency(shapes)` ms,
        `macs(shapes)` MACs per example, or its parameters (`params` when given, e.g. the live count
        with masked connections gone; else the shapes' sizes)."""
        if self.unit == "latency":
            return float(latency(shapes))
        if self.unit == "macs":
            return float(macs(shapes))
        return float(params if params is not None else sum(math.prod(s) for s in shapes.values()))

    def reached(self, cost: float, dense_cost: float) -> bool:
        """Whether a model costing `cost` meets this budget (the dense model's cost `dense_cost`)."""
        return meets(cost, self.fraction(dense_cost), dense_cost)

    def text(self) -> str:
        """The budget in words, e.g. "MACs budget 0.5", "latency budget 2 ms at 1 thread(s)"."""
        if self.unit == "latency":
            return f"latency budget {self.target:g} ms at {self.threads or 1} thread(s)"
        return f"{'MACs' if self.unit == 'macs' else 'parameter'} budget {self.target:g}"

    def short(self) -> str:
        """The budget in a few characters, for a table's column: "<= 2 ms", "MACs x0.5", "params x0.1"."""
        if self.unit == "latency":
            return f"<= {self.target:g} ms"
        return f"{'MACs' if self.unit == 'macs' else 'params'} x{self.target:g}"


@dataclass(frozen=True)
class Floors:
    """The budget's measure at the lowest widths pruning may reach, as fractions of the dense model."""

    min_width: float  # every prunable group at --min-width (its protected units kept), frozen parts whole
    one_unit: float  # every prunable group at one unit: what no --min-width can go below
    fixed: float  # the share, in `fixed_measure`, of the layers no prunable group resizes at all
    fixed_measure: str  # "macs" or "params" (a latency budget's fixed share is told in MACs)


def meets(cost: float, final: float, baseline: float) -> bool:
    """The budget rule: the cost is at most the final fraction of the dense model's (no tolerance;
    the pruner stops pruning by the same rule)."""
    return cost <= final * baseline


def frac(x: float) -> str:
    return f"{x:.2f}"


def frozen_names(frozen: list[tuple[str, str]]) -> str:
    """The first few frozen channel spaces with their reasons, the rest counted."""
    named = "; ".join(f"{space} ({reason})" for space, reason in frozen[:NAMED])
    more = len(frozen) - NAMED
    return named + (f"; and {more} more (pruner.frozen lists them)" if more > 0 else "")


def unreachable_reasons(
    floors: Floors, final: float, frozen: list[tuple[str, str]], min_width: int, measure: str
) -> list[str]:
    """Why no pruning can bring the model to `final` (empty: the floor is below it). Frozen channel
    spaces are a cause whenever there are any (they stay whole); --min-width is one when the model
    at one unit per group would meet the target."""
    if meets(floors.min_width, final, 1.0):
        return []
    reasons = []
    fixed = f"{floors.fixed:.0%} of the {LABELS[floors.fixed_measure]} lie in layers no prunable group resizes"
    if frozen:
        reasons.append(f"frozen: {frozen_names(frozen)}; {fixed}")
    elif not meets(floors.one_unit, final, 1.0):
        reasons.append(f"the model's input and output channels are never pruned and {fixed}")
    if meets(floors.one_unit, final, 1.0):
        reasons.append(
            f"--min-width {min_width} keeps every prunable layer at {min_width} channels or more, "
            f"{frac(floors.min_width)} of the {LABELS[measure]} at the least"
        )
    return reasons


def unreachable_sentence(measure: str, final: float, floors: Floors, reasons: list[str]) -> str:
    """The warning for a budget below the model's floor: one sentence naming the causes and the fix."""
    fixes = ["raise the target"]
    if any(r.startswith("--min-width") for r in reasons):
        fixes.append("lower --min-width")
    if any(r.startswith("frozen") for r in reasons):
        fixes.append("make the frozen layers traceable")
    fix = ", ".join(fixes[:-1]) + " or " + fixes[-1] if len(fixes) > 1 else fixes[0]
    return (
        f"The {LABELS[measure]} budget {frac(final)} cannot be met: the smallest model pruning can reach keeps "
        f"{frac(floors.min_width)} of the dense model's {LABELS[measure]} ({' — '.join(reasons)}); "
        f"{fix}."
    )


def no_pruning_epoch(epochs: int, warmup_epochs: int, prune_until: float, last_prune_epoch: int) -> str:
    """Why a schedule prunes at no epoch (the caller checks that it does not)."""
    return (
        f"the schedule has no pruning epoch (--epochs {epochs} with --warmup-epochs {warmup_epochs} and "
        f"--prune-until {prune_until:g} would prune from the end of epoch {warmup_epochs + 1} to epoch "
        f"{last_prune_epoch})"
    )


def no_pruning_step(total_steps: int, warmup_steps: int, prune_until: float) -> str:
    """Why a schedule in steps prunes at no step (the caller checks that it does not)."""
    return (
        f"the schedule has no pruning step (of {total_steps} optimizer steps, the warm-up takes {warmup_steps} "
        f"and --prune-until {prune_until:g} ends pruning at step {int(prune_until * total_steps + 1e-9)})"
    )


def no_pruning_sentence(reason: str) -> str:
    return (
        f"Nothing will be pruned: {reason}; raise --epochs or --prune-until, or lower --warmup-epochs "
        "(the default warm-up is a tenth of the epochs, at least one)."
    )


def why_nothing_prunable(frozen: list[tuple[str, str]]) -> str:
    return f"frozen: {frozen_names(frozen)}" if frozen else "its only channels are its inputs and outputs"


def nothing_prunable_sentence(model: str, measure: str, target: float, frozen: list[tuple[str, str]]) -> str:
    """The error for a budget on a model with no prunable channel at all."""
    return (
        f"{FLAGS[measure]} {target:g} cannot be met: no channel of this {model} can be pruned "
        f"({why_nothing_prunable(frozen)}); train it without a budget (--no-prune)"
        + (" or make those layers traceable." if frozen else ".")
    )


def status_line(budget: dict) -> str:
    """One line for a budget's outcome, e.g. "budget not met: MACs 0.70 asked, 1.00 reached — frozen: ..."."""
    target, reached = budget["target"], budget["reached"]
    t, r = frac(target), frac(reached)
    if t == r and not budget["met"]:  # a miss that two decimals would hide
        t, r = f"{target:.4f}", f"{reached:.4f}"
    head = f"budget {'met' if budget['met'] else 'not met'}: {LABELS[budget['measure']]} {t} asked, {r} reached"
    return head + "".join(f" — {r}" for r in budget.get("reasons") or ())


def to_metrics(status: dict | None) -> dict:
    """A budget's outcome as metrics.json keys (None values without a budget)."""
    status = status or {}
    return {
        "budget_met": status.get("met"),
        "budget_measure": status.get("measure"),
        "budget_target_fraction": status.get("target"),
        "budget_reached_fraction": status.get("reached"),
        "budget_reasons": status.get("reasons"),
    }


def from_metrics(metrics: dict) -> dict | None:
    """The outcome `to_metrics` wrote (None: no budget, or a run from before budgets were reported)."""
    if not isinstance(metrics.get("budget_met"), bool):
        return None
    return {
        "measure": metrics.get("budget_measure"),
        "target": metrics.get("budget_target_fraction"),
        "reached": metrics.get("budget_reached_fraction"),
        "met": metrics["budget_met"],
        "reasons": metrics.get("budget_reasons") or [],
    }
