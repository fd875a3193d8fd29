"""Masks hold pruned weights at exactly zero: in the weights, in their gradients and in Adam's
moments (with zero gradient and zero moments, Adam's update of a masked weight is exactly 0)."""

from __future__ import annotations

import torch
from torch import nn


class MaskSet:
    def __init__(self, masks: dict[str, torch.Tensor] | None = None):
        self.masks: dict[str, torch.Tensor] = dict(masks or {})
        self._handles: list = []

    def merge(self, other: dict[str, torch.Tensor]) -> None:
        for k, m in other.items():
            self.masks[k] = self.masks[k] & m if k in self.masks else m.clone()

    @torch.no_grad()
    def apply(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero masked weights (and their optimizer moments) and keep their gradients at zero."""
        self.detach()
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            p = params.get(name)
            if p is None:
                continue
            m = mask.to(device=p.device, dtype=p.dtype)
            p.mul_(m)
            if optimizer is not None and p in optimizer.state:
                for v in optimizer.state[p].values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        v.mul_(m)
            self._handles.append(p.register_hook(lambda g, m=m: g * m))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def zeros(self) -> int:
        return int(sum((~m).sum() for m in self.masks.values()))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.masks.items()}
