"""Connection pruning: single weights under the threshold are masked, stay at exactly zero under Adam
(weights, gradients, both moments), survive compaction sliced; the reported live-parameter count is the
number of nonzero weights actually saved in model.pt."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from edgeprune.config import resolve_train_config
from edgeprune.metrics import loss_fn
from edgeprune.models import build_model
from edgeprune.prune.pruner import Pruner, connection_params, count_params
from edgeprune.prune.schedule import PruneSchedule
from edgeprune.train import train_run

THRESHOLD = 0.3  # high enough that a sizeable share of single weights falls under it
SPATIAL = 9  # 12x12 input, two 2x2 pools: 3x3 positions per conv1 channel in the first Linear


def cnn():
    torch.manual_seed(0)
    return build_model(
        {
            "name": "cnn",
            "config": {"in_channels": 1, "image_size": [12, 12], "channels": [6, 10], "hidden": [12], "num_classes": 4},
        }
    ).train()


def batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 12, 12, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def step(model, opt, pruner, x, y, epoch, record=None):
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    if record is not None:  # |w * dL/dw| per weight, summed in float64 beside the pruner's own sums
        for name, p in model.named_parameters():
            if name in record:
                record[name] += (p.detach() * p.grad).abs().double()
    pruner.epoch = epoch
    pruner.after_backward()
    opt.step()


def connections_only():
    """Epochs 1 and 2 prune; no layer may shrink (min_width above every width): only connections go."""
    return PruneSchedule(epochs=2, warmup_epochs=0, prune_until=1.0, threshold=THRESHOLD, min_width=1000, round_to=1)


@pytest.fixture
def masked():
    """A CNN after one pruning epoch of connections only, with the Taylor sums computed a second way."""
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    pruner = Pruner(model, schedule=connections_only())
    names = connection_params(model)
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.named_parameters() if n in names}
    data = batches()
    for x, y in data:
        step(model, opt, pruner, x, y, 1, sums)
    moments = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in model.named_parameters()}
    widths = model.widths()
    pruner.optimizer = opt
    report = pruner.end_epoch(1)
    model2 = model
    opt2 = opt
    return dict(model=model2, opt=opt2, pruner=pruner, report=report, sums=sums, n=len(data), moments=moments,
                widths=widths)  # fmt: skip


def test_single_weights_under_the_threshold_are_masked(masked):
    pruner, model = masked["pruner"], masked["model"]
    assert model.widths() == masked["widths"]  # no unit removed
    assert set(pruner.masks.masks) == {"convs.0.weight", "convs.1.weight", "fcs.0.weight", "classifier.weight"}
    total = 0
    for name, s in masked["sums"].items():
        score = s / masked["n"]
        norm = score / score.mean()  # 1.0 is the layer's average weight
        expected = norm >= THRESHOLD
        got = pruner.masks.masks[name]
        near = (norm - THRESHOLD).abs() < 1e-6  # float32 vs float64 sums may disagree only on a tie
        assert torch.equal(got[~near], expected[~near]), name
        assert 0.05 < (~got).float().mean() < 0.9, name  # the threshold bites, but not everywhere
        total += int((~got).sum())
    assert masked["report"].removed_connections == total == pruner.masks.zeros()
    assert pruner.live_params() == count_params(model) - total


def test_masked_weights_their_gradients_and_both_adam_moments_stay_exactly_zero(masked):
    model, opt, pruner = masked["model"], masked["opt"], masked["pruner"]
    params = dict(model.named_parameters())
    for name, m in pruner.masks.masks.items():
        before = masked["moments"][name]
        assert (before["exp_avg"][~m] != 0).any() and (before["exp_avg_sq"][~m] != 0).any()  # zeroing has work
    start = {n: p.detach().clone() for n, p in params.items()}
    for x, y in batches(4):
        step(model, opt, pruner, x, y, 2)
        for name, m in pruner.masks.masks.items():
            p, st = params[name], opt.state[params[name]]
            assert (p.grad[~m] == 0).all() and (p[~m] == 0).all(), name
            assert (st["exp_avg"][~m] == 0).all() and (st["exp_avg_sq"][~m] == 0).all(), name
    for name, m in pruner.masks.masks.items():
        assert (params[name][m] != start[name][m]).float().mean() > 0.9, name  # the live weights do train


def test_compaction_keeps_the_masks_of_the_surviving_units_sliced(masked, monkeypatch):
    model, opt, pruner = masked["model"], masked["opt"], masked["pruner"]
    for x, y in batches(3):
        step(model, opt, pruner, x, y, 2)
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    old_masks = {n: m.clone() for n, m in pruner.masks.masks.items()}
    # Epoch 2 now removes units to a budget; threshold 0 adds no connection, so the masks only move.
    pruner.schedule = dataclasses.replace(pruner.schedule, threshold=0.0, target_params=0.5, min_width=2)
    chosen = {}
    real = pruner._choose_units
    monkeypatch.setattr(pruner, "_choose_units", lambda *a: chosen.setdefault("removed", real(*a)))
    pruner.optimizer = opt
    report = pruner.end_epoch(2)
    assert report.compacted and report.removed_connections == 0

    def kept(group, width):
        alive = torch.ones(width, dtype=torch.bool)
        alive[chosen["removed"][group]] = False
        return alive.nonzero().view(-1)

    c0, c1, f0 = kept("conv0", 6), kept("conv1", 10), kept("fc0", 12)
    assert min(len(c0), len(c1), len(f0)) >= 2 and len(c0) + len(c1) + len(f0) < 28
    blocks = (c1[:, None] * SPATIAL + torch.arange(SPATIAL)).reshape(-1)  # conv1 channel c: columns c*9 .. c*9+8
    slicing = {
        "convs.0.weight": lambda t: t[c0],
        "convs.1.weight": lambda t: t[c1][:, c0],
        "fcs.0.weight": lambda t: t[f0][:, blocks],
        "classifier.weight": lambda t: t[:, f0],
    }
    params = dict(model.named_parameters())
    for name, cut in slicing.items():
        m = pruner.masks.masks[name]
        assert torch.equal(m, cut(old_masks[name])), name
        assert torch.equal(params[name].detach(), cut(old[name])), name  # the same weights, fewer of them
        assert (params[name][~m] == 0).all(), name
        st = opt.state[params[name]]
        assert (st["exp_avg"][~m] == 0).all() and (st["exp_avg_sq"][~m] == 0).all(), name
    assert pruner.live_params() == count_params(model) - sum(int((~m).sum()) for m in pruner.masks.masks.values())
    for x, y in batches(2):  # and they keep holding on the compact model
        step(model, opt, pruner, x, y, 2)
    assert all((params[n][~m] == 0).all() for n, m in pruner.masks.masks.items())


@pytest.mark.parametrize("progressive", [True, False])
def test_reported_live_parameters_are_the_nonzero_weights_in_model_pt(data_root, tmp_path, progressive):
    c = resolve_train_config(
        dataset="mnist",
        data_dir=data_root,
        out=tmp_path / "run",
        epochs=3,
        batch_size=32,
        warmup_epochs=1,
        target_params=0.3,
        threshold=0.05,
        round_to=1,
        min_width=2,
        progressive=progressive,
        limit=300,
        threads=1,
        device="cpu",
    )
    c.model_config = {"channels": [8, 16], "hidden": [32]}
    metrics = train_run(c, quiet=True)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["state_dict"]
    nonzero = sum(int(torch.count_nonzero(v)) for v in saved.values())
    total = sum(v.numel() for v in saved.values())
    assert total == metrics["dense_params"] and nonzero < total
    # connections did go: each zero left in model.pt was counted by the step that masked it (one masked inside
    # a unit a later step removed went with that unit, so the steps' counts may be more, never fewer)
    gone = sum(h["removed"]["connections"] for h in history if "removed" in h)
    assert gone >= total - nonzero > 0
    # Exact: every zero in model.pt is a masked weight (a trained float is never exactly 0 by chance).
    assert metrics["params"] == history[-1]["params_alive"] == saved_params(tmp_path) == nonzero
    if progressive:  # the last checkpoint's masks are shaped like the final model: count them a second way
        masks = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["pruner"]["masks"]
        assert masks and all(masks[k].shape == saved[k].shape for k in masks)
        assert all((saved[k][~m] == 0).all() for k, m in masks.items())
        assert total - sum(int((~m).sum()) for m in masks.values()) == metrics["params"]


def saved_params(run) -> int:
    return torch.load(run / "run" / "model.pt", weights_only=True)["params"]
