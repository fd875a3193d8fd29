"""The public Python API: `edgeprune.Pruner` inside the user's own training loop.

The loop is the user's: their model, their optimizer, their loss; the pruner only reads gradients
(after_backward) and prunes + compacts in place at the end of an epoch (end_epoch). Checked: the
user's model and optimizer objects keep training the compacted model (a last `loss` of the epoch
is still alive when the next epoch starts, as in any loop), budgets in parameters and in MACs are
met, MACs are counted right (by formula, a second way), masks-until-the-end compacts exactly at
finalize(), and what cannot work is one clear error.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import edgeprune
from edgeprune.errors import UserError
from edgeprune.prune.cost import CostModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Net(nn.Module):
    """A user's own model: conv-BN stem, a residual block, a strided conv, global pool, classifier."""

    def __init__(self, c=16, classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b(F.relu(self.a(x))))
        x = F.relu(self.down(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def data(n=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 12, 12, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def user_loop(model, optimizer, pruner, epochs, batches):
    """The README's loop, word for word in structure: `loss` outlives each epoch."""
    losses = []
    for _ in range(epochs):
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            pruner.after_backward()
            optimizer.step()
        losses.append(float(loss))
        pruner.end_epoch()
    pruner.finalize()
    return losses


def batches_of(x, y, size=16):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


@pytest.mark.parametrize("budget", ["target_params", "target_macs"])
def test_a_users_loop_prunes_its_own_model_to_the_budget(budget):
    torch.manual_seed(0)
    model, (x, y) = Net(), data()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = edgeprune.Pruner(model, x[:2], optimizer, epochs=5, round_to=1, min_width=2, **{budget: 0.4})
    params0, macs0 = pruner.baseline_params, pruner.baseline_macs
    user_loop(model, optimizer, pruner, 5, batches_of(x, y))
    s = pruner.summary()
    # the model object itself shrank, and the user's optimizer trains exactly its parameters
    assert s.params_after == sum(p.numel() for p in model.parameters()) - pruner.masks.zeros()
    assert [p for g in optimizer.param_groups for p in g["params"]] == list(model.parameters())
    assert set(optimizer.state) <= set(model.parameters())
    fraction = (s.params_after / params0) if budget == "target_params" else (s.macs_after / macs0)
    assert fraction <= 0.4
    assert fraction > 0.2  # met, not overshot to the floor
    assert any(s.widths_after[k] < w for k, w in s.widths_before.items())
    assert "MACs per example" in str(s) and "stem.0" in str(s)
    # and it still trains: a step lowers the loss on a batch it was trained on
    model.train()
    xb, yb = x[:16], y[:16]
    before = float(F.cross_entropy(model(xb), yb))
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    assert float(F.cross_entropy(model(xb), yb)) < before


def test_masks_until_the_end_compact_exactly_at_finalize():
    torch.manual_seed(1)
    model, (x, y) = Net(), data(seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = edgeprune.Pruner(
        model, x[:2], optimizer, epochs=3, target_params=0.5, round_to=1, min_width=2, progressive=False
    )
    shapes = {k: p.shape for k, p in model.named_parameters()}
    for _ in range(3):
        for xb, yb in batches_of(x, y):
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            pruner.after_backward()
            optimizer.step()
        pruner.end_epoch()
    # masks only, so far: same shapes, removed units at zero
    assert {k: p.shape for k, p in model.named_parameters()} == shapes
    assert any(len(v) for v in pruner.removed.values())
    model.eval()
    masked = copy.deepcopy(model)
    pruner.finalize()
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in masked.parameters())
    with torch.no_grad():
        assert (model(x) - masked(x)).abs().max() <= 1e-5
    # momentum buffers were sliced with their parameters
    for p in model.parameters():
        if p in optimizer.state:
            assert optimizer.state[p]["momentum_buffer"].shape == p.shape


def test_torchvision_mobilenet_in_a_users_loop():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=3, width_mult=0.35)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pruner = edgeprune.Pruner(model, x[:2], optimizer, epochs=2, warmup_epochs=0, target_macs=0.6, prune_until=0.5)
    user_loop(model, optimizer, pruner, 2, [(x, y)])
    s = pruner.summary()
    assert s.macs_after <= 0.6 * s.macs_before
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (8, 3)


def test_macs_are_counted_per_example_as_the_formula_gives():
    model = Net(c=8, classes=5)
    macs = CostModel(model, torch.randn(3, 3, 12, 12)).macs({k: tuple(p.shape) for k, p in model.named_parameters()})
    # by hand: stem, a, b at 12x12 output positions; down at 6x6; the classifier once
    want = 12 * 12 * (8 * 3 * 9) + 2 * 12 * 12 * (8 * 8 * 9) + 6 * 6 * (16 * 8 * 9) + 16 * 5
    assert macs == want
    lstm = nn.LSTM(6, 4, batch_first=True)
    got = CostModel(lstm, torch.randn(2, 7, 6)).macs({k: tuple(p.shape) for k, p in lstm.named_parameters()})
    assert got == 7 * (16 * 6 + 16 * 4)  # seven steps of W_ih and W_hh


def test_bad_use_is_one_clear_error():
    model, (x, _) = Net(), data()
    with pytest.raises(UserError, match="epochs="):
        edgeprune.Pruner(model, x[:2], torch.optim.Adam(model.parameters()))
    with pytest.raises(UserError, match="cannot slice the state of a LBFGS optimizer; use one of SGD, Adam"):
        edgeprune.Pruner(model, x[:2], torch.optim.LBFGS(model.parameters()), epochs=3)
    with pytest.raises(UserError, match="needs example_inputs"):
        edgeprune.Pruner(model, None, epochs=3)
    with pytest.raises(UserError, match="one budget"):
        edgeprune.Pruner(model, x[:2], epochs=3, target_params=0.5, target_macs=0.5)
    with pytest.raises(UserError, match="target_macs= must be a fraction"):
        edgeprune.Pruner(model, x[:2], epochs=3, target_macs=2.0)
    ddp = nn.parallel.DistributedDataParallel.__new__(nn.parallel.DistributedDataParallel)
    with pytest.raises(UserError, match="ddp.module"):
        edgeprune.Pruner(ddp, x[:2], epochs=3)
