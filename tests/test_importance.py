"""The importance seam: `Pruner(importance=...)` takes any `Importance`; Taylor is the default.

Checked: an L1-magnitude importance scores each unit by the L1 norm of the weights it owns (computed a
second way here, from the layers' tensors), the pruner removes exactly the lowest-scored units of each
layer with it, and the compacted model computes what the masked one did (within 1e-5); Taylor is what
`importance=None` means, decision for decision; anything else is one clear error.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeprune
from edgeprune.errors import UserError
from edgeprune.prune.importance import Importance, MagnitudeScores, TaylorScores

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-5  # compacted vs masked outputs (float32 sums in a different order)


def net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 12, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 4),
    )


def data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def train(model, optimizer, pruner, x, y, epochs):
    for _ in range(epochs):
        for i in range(0, len(x), 16):
            loss = F.cross_entropy(model(x[i : i + 16]), y[i : i + 16])
            optimizer.zero_grad()
            loss.backward()
            pruner.after_backward()
            optimizer.step()
        pruner.end_epoch()


def l1_by_hand(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """Each prunable conv's output channel: the L1 norm of its filter and its bias (what it owns)."""
    return {
        name: model[int(name)].weight.detach().abs().sum(dim=(1, 2, 3)) + model[int(name)].bias.detach().abs()
        for name in ("0", "2")
    }


def test_magnitude_scores_are_the_units_l1_norms():
    torch.manual_seed(0)
    model, (x, y) = net(), data()
    scores = MagnitudeScores()
    pruner = edgeprune.Pruner(model, x[:2], epochs=3, importance=scores)
    assert pruner.scores is scores and {g.name for g in pruner.groups} == {"0", "2"}
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for _ in range(3):  # weights unchanged: the mean over three steps is the norm itself
        scores.accumulate(model)
    assert scores.batches == 3
    for name, want in l1_by_hand(model).items():
        torch.testing.assert_close(scores.unit_scores()[name], want.double(), rtol=1e-6, atol=1e-9)
    conn = scores.connection_scores()["2.weight"]
    torch.testing.assert_close(conn, model[2].weight.detach().abs(), rtol=1e-6, atol=1e-9)
    # resume: the sums round-trip exactly
    again = MagnitudeScores()
    again.bind(pruner.groups, ["2.weight"])
    again.load_state_dict(scores.state_dict())
    assert again.batches == 3 and all(torch.equal(again.unit[k], scores.unit[k]) for k in scores.unit)


def test_a_pruner_with_magnitude_scores_removes_the_smallest_units_and_compacts_exactly():
    torch.manual_seed(1)
    model, (x, y) = net(), data(seed=1)
    norms = l1_by_hand(model)
    # lr 0: the weights the scores average over are the initial ones, so the ranking is known here
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    pruner = edgeprune.Pruner(
        model,
        x[:2],
        optimizer,
        epochs=3,
        target_params=0.5,
        round_to=1,
        min_width=2,
        progressive=False,
        prune_connections=False,
        importance=MagnitudeScores(),
    )
    train(model, optimizer, pruner, x, y, epochs=3)
    removed = {k: v.tolist() for k, v in pruner.removed.items() if len(v)}
    assert removed, "the budget needs units removed"
    for name, gone in removed.items():
        want = torch.argsort(norms[name], stable=True)[: len(gone)].tolist()  # the lowest L1 norms
        assert sorted(gone) == sorted(want), name
    model.eval()
    masked = copy.deepcopy(model)
    pruner.finalize()
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in masked.parameters())
    with torch.no_grad():
        assert (model(x) - masked(x)).abs().max() <= TOL
    assert pruner.summary().budget["met"]


def test_taylor_is_the_default_decision_for_decision():
    def run(**kw):
        torch.manual_seed(2)
        model, (x, y) = net(), data(seed=2)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        pruner = edgeprune.Pruner(model, x[:2], optimizer, epochs=4, target_params=0.4, round_to=2, **kw)
        train(model, optimizer, pruner, x, y, epochs=4)
        return model, pruner

    default, p1 = run()
    explicit, p2 = run(importance=TaylorScores())
    assert isinstance(p1.scores, TaylorScores) and p1.widths() == p2.widths()
    assert p1.widths() != p1.widths_before  # it pruned
    a, b = default.state_dict(), explicit.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    magnitude, _ = run(importance=MagnitudeScores())  # another criterion, another model: the seam is used
    assert any(
        magnitude.state_dict()[k].shape != a[k].shape or not torch.equal(magnitude.state_dict()[k], a[k]) for k in a
    )


def test_an_importance_that_is_not_one_is_one_clear_error():
    model, (x, _) = net(), data()
    with pytest.raises(UserError, match=r"importance= must be an instance of .*Importance"):
        edgeprune.Pruner(model, x[:2], epochs=3, importance=MagnitudeScores)  # the class, not an instance
    assert issubclass(MagnitudeScores, Importance) and issubclass(TaylorScores, Importance)
