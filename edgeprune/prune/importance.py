"""How much a unit or a connection is worth. `Importance` is the interface the pruner asks;
`TaylorScores`, the default, scores the first-order (Taylor) contribution to the loss, and
`MagnitudeScores` the weights' L1 norm.

For a unit u with parameters P(u) and a mini-batch b, the contribution is
    c_b(u) = | sum_{p in P(u)} w_p * dL_b/dw_p |
(the first-order change of the loss if the unit were removed). The raw score is the mean of
c_b(u) over the mini-batches of the epoch, taken from the gradients the training step has just
computed: no extra forward or backward pass. A connection (one weight) gets
c_b(w) = |w * dL_b/dw|, averaged the same way.

The *normalized* score divides a raw score by the mean raw score of the live units (or live
weights) of the same layer: 1.0 is an average unit of that layer, and a threshold of 0.01 removes
what contributes less than 1% of the layer's average. That makes one threshold mean the same in
every layer, whatever its size or scale.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from edgeprune.prune.groups import Group, unit_sums


class Importance(ABC):
    """What the pruner asks of an importance score; pass an instance as `Pruner(importance=...)`.

    The pruner holds one instance for the whole run and calls, in this order:
    - `bind(groups, connection_params)` at construction and after every compaction (the groups'
      widths change): the model's coupling groups as they are now, and the weights whose single
      entries are connections (empty when connections are not pruned); it starts fresh sums;
    - `accumulate(model)` after every backward inside the pruning window (gradients present);
    - at a pruning point, `batches` (0: nothing was gathered, the point is skipped), then
      `unit_scores()` and `connection_scores()`: raw scores, higher is worth more, one per unit of
      each group (shape (width,)) and one per entry of each connection weight. The pruner divides
      each by its layer's live mean (`normalize`), so one threshold means the same everywhere;
    - `reset()` after the decision (and between pruning points).
    `to(device)` moves the sums (decisions run on the CPU); `state_dict()` / `load_state_dict()`
    save and restore them exactly for a resumed run (plain tensors on the CPU). Under torchrun
    `edgeprune.distributed.all_reduce_scores` sums `tensors()` over the ranks and hands the sums
    back through `load_tensors()`, so every rank decides the same: scores must be sums (or a
    scale of them) over batches for that to hold.
    """

    batches: int  # accumulate() calls since the last bind() or reset()

    @abstractmethod
    def bind(self, groups: list[Group], connection_params: list[str]) -> None:
        """Score these groups' units and these weights' entries from now on, from zero."""

    @abstractmethod
    def accumulate(self, model: nn.Module) -> None:
        """Add this batch's |sum of contributions| per unit and |contribution| per connection."""
        """Add this batch's evidence (called after the backward, before the optimizer step)."""

    @abstractmethod
    def unit_scores(self) -> dict[str, torch.Tensor]:
        """{group name: one raw score per unit}."""

    @abstractmethod
    def connection_scores(self) -> dict[str, torch.Tensor]:
        """{parameter name: one raw score per entry} (empty: no connection is scored)."""

    @abstractmethod
    def reset(self) -> None:
        """Start the sums again from zero (same groups)."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Importance:
        """Move the sums to `device`; returns self."""

    @abstractmethod
    def state_dict(self) -> dict:
        """The sums, copied to the CPU, for a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` (after `bind` with the checkpoint's groups)."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every sum the ranks add up, by name, in the same order on every rank, each in the dtype
        it is summed in (tensors of one dtype are reduced in one collective)."""

    @abstractmethod
    def load_tensors(self, summed: dict[str, torch.Tensor]) -> None:
        """Take the sums over the ranks of `tensors()` (same names and shapes)."""


class TaylorScores(Importance):
    """Accumulates unit and connection contributions over an epoch's mini-batches (the default)."""

    def __init__(self, groups: list[Group] | None = None, connection_params: list[str] | None = None):
        self.bind(groups or [], connection_params or [])

    def bind(self, groups: list[Group], connection_params: list[str]) -> None:
        """Score these groups' units and these parameters' connections, from zero."""
        self.groups = groups
        self.connection_params = connection_params
        self.reset()

    def reset(self) -> None:
        """Zero the sums and the batch count (after a pruning point)."""
        self.unit = {g.name: torch.zeros(g.width, dtype=torch.float64) for g in self.groups}
        self.conn: dict[str, torch.Tensor] = {}
        self.batches = 0

    def to(self, device: torch.device | str) -> TaylorScores:
        """Move the sums (unit sums stay float64 except on MPS, which has no float64)."""
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.unit = {k: v.to(device, dtype) for k, v in self.unit.items()}
        self.conn = {k: v.to(device) for k, v in self.conn.items()}
        return self

    def contribution(self, p: nn.Parameter) -> torch.Tensor | None:
        """Each weight's part of a unit's score, summed over the unit's weights and then taken absolute:
        w * dL/dw, the first-order change of the loss (None: no gradient this batch)."""
        return None if p.grad is None else p.detach() * p.grad

    @torch.no_grad()
    def accumulate(self, model: nn.Module) -> None:
        """Add this batch's |sum of contributions| per unit and |contribution| per connection."""
        params = dict(model.named_parameters())
        products: dict[str, torch.Tensor] = {}
        device = next(iter(params.values())).device
        if any(v.device != device for v in self.unit.values()):
            self.to(device)  # sum where the gradients are: no copy to the host per batch

        def wg(name: str) -> torch.Tensor | None:
            if name not in products:
                p = params.get(name)
                products[name] = None if p is None else self.contribution(p)
            return products[name]

        widths = {g.name: g.width for g in self.groups}
        for g in self.groups:
            total = torch.zeros(g.width, device=device)
            for s in g.own():
                prod = wg(s.name)
                if prod is not None:
                    total += unit_sums(prod, s, g.width, widths)
            self.unit[g.name] += total.abs().to(self.unit[g.name].dtype)
        for name in self.connection_params:
            prod = wg(name)
            if prod is None:
                continue
            acc = self.conn.get(name)
            if acc is None:
                self.conn[name] = prod.abs()
            else:
                acc.add_(prod.abs())
        self.batches += 1

    def unit_scores(self) -> dict[str, torch.Tensor]:
        """Each group's unit scores, averaged over the batches since the last reset."""
        n = max(self.batches, 1)
        return {k: v / n for k, v in self.unit.items()}

    def connection_scores(self) -> dict[str, torch.Tensor]:
        """Each parameter's connection scores, averaged over the batches since the last reset."""
        n = max(self.batches, 1)
        return {k: v / n for k, v in self.conn.items()}

    def state_dict(self) -> dict:
        """The sums and the batch count, on the CPU (the checkpoint's copy)."""
        return {
            "unit": {k: v.detach().cpu().clone() for k, v in self.unit.items()},
            "conn": {k: v.detach().cpu().clone() for k, v in self.conn.items()},
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict) -> None:
        """Take the sums and the batch count back from `state_dict()`'s output."""
        self.unit = {k: v.clone() for k, v in state["unit"].items()}
        self.conn = {k: v.clone() for k, v in state["conn"].items()}
        self.batches = int(state["batches"])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The sums and the batch count by name, for the distributed reduction to add up."""
        # unit sums and the batch count in float64 (one collective), connection sums in their own dtype
        units, conns = sorted(self.unit), sorted(self.conn)
        out = {f"unit/{k}": self.unit[k].to(torch.float64) for k in units}
        out["batches"] = torch.tensor([float(self.batches)], dtype=torch.float64)
        out.update({f"conn/{k}": self.conn[k] for k in conns})
        return out

    def load_tensors(self, summed: dict[str, torch.Tensor]) -> None:
        """Take the reduction's sums back, in each tensor's own device and dtype."""
        for k, v in self.unit.items():
            self.unit[k] = summed[f"unit/{k}"].to(v.device, v.dtype).view_as(v)
        self.batches = round(float(summed["batches"]))
        for k, v in self.conn.items():
            self.conn[k] = summed[f"conn/{k}"].to(v.device).view_as(v)


class MagnitudeScores(TaylorScores):
    """A unit's L1 norm (the sum of its weights' magnitudes; Li et al., "Pruning Filters for Efficient
    ConvNets", 2017) and a connection's |w|, averaged over the steps since the last pruning point.
    Needs no gradient: the scores say what is large, not what the loss depends on."""

    def contribution(self, p: nn.Parameter) -> torch.Tensor:
        """|w|: each weight's magnitude, with or without a gradient."""
        return p.detach().abs()


def normalize(scores: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
    """Divide by the mean over live entries, so 1.0 is an average unit (or weight) of the layer."""
    ref = scores[live] if live is not None else scores
    mean = ref.mean() if ref.numel() else scores.new_tensor(0.0)
    if mean <= 0:
        return torch.zeros_like(scores)
    return scores / mean
