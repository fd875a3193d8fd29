"""How much a unit or a connection is worth: its first-order (Taylor) contribution to the loss.

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

import torch
from torch import nn

from edgeprune.prune.groups import Group, unit_sums


class TaylorScores:
    """Accumulates unit and connection contributions over an epoch's mini-batches."""

    def __init__(self, groups: list[Group], connection_params: list[str]):
        self.groups = groups
        self.connection_params = connection_params
        self.reset()

    def reset(self) -> None:
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

    @torch.no_grad()
    def accumulate(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        products: dict[str, torch.Tensor] = {}
        device = next(iter(params.values())).device
        if any(v.device != device for v in self.unit.values()):
            self.to(device)  # sum where the gradients are: no copy to the host per batch

        def wg(name: str) -> torch.Tensor | None:
            if name not in products:
                p = params.get(name)
                products[name] = None if p is None or p.grad is None else p.detach() * p.grad
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
        n = max(self.batches, 1)
        return {k: v / n for k, v in self.unit.items()}

    def connection_scores(self) -> dict[str, torch.Tensor]:
        n = max(self.batches, 1)
        return {k: v / n for k, v in self.conn.items()}


def normalize(scores: torch.Tensor, live: torch.Tensor | None = None) -> torch.Tensor:
    """Divide by the mean over live entries, so 1.0 is an average unit (or weight) of the layer."""
    ref = scores[live] if live is not None else scores
    mean = ref.mean() if ref.numel() else scores.new_tensor(0.0)
    if mean <= 0:
        return torch.zeros_like(scores)
    return scores / mean
