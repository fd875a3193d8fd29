"""BatchNorm statistics re-estimated after a pruning step: the running mean and variance become
the plain average of the batch statistics of the calibration batches (computed here a second way,
from the BatchNorm's inputs), weights stay untouched, and the mode and momentum come back."""

import pytest
import torch
from torch import nn

from edgeprune.prune.bn import recalibrate_batchnorm

TOL = 1e-5


def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 5),
        nn.BatchNorm1d(5),
    )


def test_running_stats_are_the_average_of_the_calibration_batches():
    model = net().eval()
    batches = [torch.randn(4, 3, 8, 8) * (i + 1) + i for i in range(3)]
    seen = {}
    hooks = [
        bn.register_forward_pre_hook(lambda m, inp, k=k: seen.setdefault(k, []).append(inp[0].detach().clone()))
        for k, bn in ((1, model[1]), (5, model[5]))
    ]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "tracked" not in k}
    n = recalibrate_batchnorm(model, batches)
    for h in hooks:
        h.remove()
    assert n == 3 and not model.training
    for k, dims in ((1, (0, 2, 3)), (5, (0,))):
        xs = seen[k]
        mean = torch.stack([x.mean(dims) for x in xs]).mean(0)
        var = torch.stack([x.var(dims, unbiased=True) for x in xs]).mean(0)
        assert torch.allclose(model[k].running_mean, mean, atol=TOL)
        assert torch.allclose(model[k].running_var, var, rtol=TOL, atol=TOL)
        assert model[k].momentum == pytest.approx(0.1) and int(model[k].num_batches_tracked) == 3
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_nothing_to_recalibrate_leaves_the_model_alone():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batchnorm(model, []) == 0  # no batches: the old statistics stay
    assert recalibrate_batchnorm(nn.Linear(3, 2), [torch.randn(2, 3)]) == 0  # no BatchNorm
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
