"""The Pruner on the layers edge users bring (tests/ecosystem_models.py): a timm MobileNetV3 (BatchNormAct
+ SE), a 'same'-padding conv subclass with a custom autograd activation, re-parameterizable RepVGG
blocks, and a model torch.fx cannot trace.

Trained a few steps with masks until the end (progressive=False) to a MACs budget, the model
compacted by `finalize()` computes in eval mode what the masked model computed; a budget the model
cannot reach is warned of at once and reported as not met.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from ecosystem_models import LevitMlp, MixNetLike, RepBlockNet, SameSwishNet, ShapeBranch, timm_mobile

from edgeprune import BudgetWarning, Pruner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATOL = 1e-5  # compacted vs masked, relative to the output's scale when above 1
CASES = {
    "timm-mobilenetv3": (timm_mobile, 32),
    "same-pad-autograd": (SameSwishNet, 15),
    "rep-blocks": (RepBlockNet, 16),
    "fx-untraceable": (ShapeBranch, 10),
    "timm-mixconv": (MixNetLike, 16),
    "timm-mixconv-same": (lambda: MixNetLike(same=True), 15),
    "timm-levit-mlp": (LevitMlp, 12),
}


def images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def train(model, pruner, opt, size: int, epochs: int) -> None:
    g = torch.Generator().manual_seed(1)
    for epoch in range(1, epochs + 1):
        for step in range(2):
            x = images(4, size, seed=10 * epoch + step)
            y = torch.randint(0, 10, (4,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            pruner.after_backward()
            opt.step()
        pruner.end_epoch(epoch)


@pytest.mark.parametrize("name", CASES)
def test_masks_until_the_end_then_compacted_equals_masked(name):
    make, size = CASES[name]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pruner = Pruner(
        model,
        images(2, size),
        opt,
        epochs=3,
        warmup_epochs=0,
        target_macs=0.7,
        round_to=1,
        min_width=1,
        progressive=False,
        prune_connections=False,
    )
    params_before = sum(p.numel() for p in model.parameters())
    train(model, pruner, opt, size, epochs=3)
    masked = copy.deepcopy(model).eval()
    pruner.finalize()
    model.eval()
    x = images(3, size, seed=99)
    with torch.no_grad():
        want, got = masked(x), model(x)
    assert want.abs().max() > 1e-3
    assert float((want - got).abs().max()) <= ATOL * max(1.0, float(want.abs().max()))
    summary = pruner.summary()
    assert summary.budget["met"] is True
    assert summary.macs_after <= 0.7 * summary.macs_before
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert not pruner.frozen  # every channel space but the classifier's outputs was prunable


@pytest.mark.parametrize("name", CASES)
def test_unreachable_budget_is_warned_and_reported(name):
    """--min-width above every layer's width: these models cannot shrink, and the pruner says so."""
    make, size = CASES[name]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.warns(BudgetWarning, match="cannot be met"):
        pruner = Pruner(
            model, images(2, size), opt, epochs=2, warmup_epochs=0, target_macs=0.5, min_width=4096, progressive=False
        )
    train(model, pruner, opt, size, epochs=2)
    pruner.finalize()
    budget = pruner.summary().budget
    assert budget["met"] is False and budget["reached"] > 0.5
    assert "not met" in str(pruner.summary())
