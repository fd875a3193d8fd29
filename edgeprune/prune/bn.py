"""BatchNorm running statistics after a pruning step.

Removing channels changes what every later layer sees, but a BatchNorm's running mean and
variance are those of the model before the cut: in eval mode a pruned ResNet can fall to chance
until training has averaged the stale statistics away (seen in a ResNet-20 run on
Fashion-MNIST). Training itself is untouched (train mode normalizes with the batch's own
statistics); what recalibration fixes is every eval-mode number between a pruning step and the
end of the next epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over `batches` (model
    inputs) in train mode, without gradients and without touching any weight; returns the number
    of batches used (0: the model has no BatchNorm that tracks statistics)."""
    bns = batchnorms(model)
    batches = list(batches)
    if not bns or not batches:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(batches)
