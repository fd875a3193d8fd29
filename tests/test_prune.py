"""Pruning and compaction: coupling, exactness, masks, schedule, budget, optimizer slicing."""

import copy

import pytest
import torch
from compaction import compact_model

from edgeprune.errors import UserError
from edgeprune.metrics import distill_loss, loss_fn
from edgeprune.models import build_model
from edgeprune.prune.compact import zeroed_units
from edgeprune.prune.groups import expand, model_groups, param_masks_for_units, redirect_removed
from edgeprune.prune.importance import TaylorScores, normalize
from edgeprune.prune.masks import MaskSet
from edgeprune.prune.pruner import Pruner, count_params
from edgeprune.prune.schedule import PruneSchedule, round_keep

ATOL = 1e-5


def cnn(batchnorm=False, channels=(6, 10), hidden=(12, 9)):
    torch.manual_seed(0)
    m = build_model(
        {
            "name": "cnn",
            "config": {
                "in_channels": 1,
                "image_size": [12, 12],
                "channels": list(channels),
                "hidden": list(hidden),
                "num_classes": 4,
                "batchnorm": batchnorm,
            },
        }
    )
    if batchnorm:  # non-trivial running statistics
        for bn in m.norms:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def bilstm(layers=((6, 5), (4, 7)), outputs=1, vocab_rows=False):
    torch.manual_seed(0)
    config = {"vocab_size": 30, "embed_dim": 9, "hidden": [list(h) for h in layers], "num_outputs": outputs}
    if vocab_rows:  # a token map: vocabulary rows are units too
        config["source_vocab"] = 30
    return build_model({"name": "bilstm", "config": config}).eval()


MODELS = {
    "cnn": cnn,
    "cnn-bn": lambda: cnn(batchnorm=True),
    "cnn-nohidden": lambda: cnn(hidden=()),
    "bilstm": bilstm,
    "bilstm-1layer-softmax": lambda: bilstm(((5, 3),), outputs=3),
    "bilstm-vocab": lambda: bilstm(vocab_rows=True),
}


def inputs(model, batch, seq=13):
    g = torch.Generator().manual_seed(batch * 100 + seq)
    if model.arch_name == "cnn":
        return torch.randn(batch, 1, 12, 12, generator=g)
    return torch.randint(1, 30, (batch, seq), generator=g)


def some_units(model, seed=0):
    """Remove about a third of every group's units, never all, never a protected one."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for grp in model_groups(model):
        order = [u for u in torch.randperm(grp.width, generator=g).tolist() if u not in grp.protected]
        out[grp.name] = torch.tensor(order[: grp.width // 3], dtype=torch.long)
    return out


def masked_copy(model, removed):
    m = copy.deepcopy(model)
    masks = param_masks_for_units(m, model_groups(m), removed)
    with torch.no_grad():
        state = m.state_dict()
        for k, mask in masks.items():
            state[k].mul_(mask.to(state[k].dtype))
    redirect_removed(m, model_groups(m), removed)  # a removed vocabulary row's tokens read <unk>
    return m


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("batch,seq", [(1, 13), (5, 13), (3, 7), (2, 1)])
def test_compact_model_computes_what_the_masked_model_computes(name, batch, seq):
    model = MODELS[name]()
    removed = some_units(model)
    masked = masked_copy(model, removed)
    small, _ = compact_model(masked, removed)
    assert count_params(small) < count_params(model)
    for grp in model_groups(small):
        assert grp.width == model.widths()[grp.name] - len(removed[grp.name])
    x = inputs(model, batch, seq)
    with torch.no_grad():
        diff = (small(x) - masked(x)).abs().max().item()
    assert diff <= ATOL


@pytest.mark.parametrize("name", sorted(MODELS))
def test_removing_a_unit_whose_mask_is_zero_does_not_change_the_output(name):
    model = MODELS[name]()
    removed = some_units(model, seed=3)
    masked = masked_copy(model, removed)
    found = zeroed_units(masked)
    for k, v in removed.items():
        assert sorted(found[k].tolist()) == sorted(v.tolist())
    x = inputs(model, 4)
    with torch.no_grad():
        before = masked(x)
        after = compact_model(masked, found)[0](x)
    assert (before - after).abs().max().item() <= ATOL


def test_cnn_coupled_slices():
    model = cnn()
    groups = {g.name: g for g in model_groups(model)}
    widths = model.widths()
    conv1 = groups["conv1"]
    assert [(s.name, s.dim, s.kind) for s in conv1.slices] == [
        ("convs.1.weight", 0, "plain"),
        ("convs.1.bias", 0, "plain"),
        ("fcs.0.weight", 1, "block"),
    ]
    block = conv1.slices[-1]
    assert block.block == 9  # 12x12 -> 6x6 -> 3x3 positions per channel after two pools
    assert expand(block, torch.tensor([2]), conv1.width, widths).tolist() == list(range(18, 27))
    assert [s.name for s in groups["fc1"].slices][-1] == "classifier.weight"
    bn = {g.name: g for g in model_groups(cnn(batchnorm=True))}["conv0"]
    assert {s.name for s in bn.slices} >= {"norms.0.running_mean", "norms.0.running_var", "norms.0.weight"}


def test_bilstm_coupled_slices():
    model = bilstm()
    groups = {g.name: g for g in model_groups(model)}
    widths = model.widths()
    bwd = groups["lstm0.bwd"]
    rows = [s for s in bwd.slices if s.name == "layers.0.bwd.weight_ih_l0"][0]
    assert expand(rows, torch.tensor([1]), bwd.width, widths).tolist() == [1, 6, 11, 16]  # four gates
    recurrent = [s for s in bwd.slices if s.name == "layers.0.bwd.weight_hh_l0" and s.dim == 1]
    assert len(recurrent) == 1
    consumer = [s for s in bwd.slices if s.name == "layers.1.fwd.weight_ih_l0"][0]
    assert expand(consumer, torch.tensor([0, 2]), bwd.width, widths).tolist() == [6, 8]  # after 6 fwd units
    last = groups["lstm1.bwd"]
    assert expand(
        [s for s in last.slices if s.name == "classifier.weight"][0], torch.tensor([0]), last.width, widths
    ).tolist() == [4]
    assert [s.name for s in groups["embed"].slices] == [
        "embedding.weight",
        "layers.0.fwd.weight_ih_l0",
        "layers.0.bwd.weight_ih_l0",
    ]


def test_classifier_outputs_are_never_units():
    for make in MODELS.values():
        assert all(not s.name.startswith("classifier") or s.dim == 1 for g in model_groups(make()) for s in g.slices)


def test_taylor_score_is_abs_sum_of_weight_times_grad_per_batch():
    model = cnn().train()
    groups = model_groups(model)
    scores = TaylorScores(groups, ["fcs.0.weight"])
    expected = torch.zeros(model.widths()["fc0"], dtype=torch.float64)
    conn = torch.zeros_like(model.fcs[0].weight)
    for seed in range(3):
        model.zero_grad()
        x = inputs(model, 4 + seed)
        loss_fn(model(x), torch.arange(4 + seed) % 4).backward()
        fc = model.fcs[0]
        expected += ((fc.weight * fc.weight.grad).sum(1) + fc.bias * fc.bias.grad).abs().double().detach()
        conn += (fc.weight * fc.weight.grad).abs().detach()
        scores.accumulate(model)
    torch.testing.assert_close(scores.unit_scores()["fc0"], expected / 3, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(scores.connection_scores()["fcs.0.weight"], conn / 3, rtol=1e-5, atol=1e-12)


def test_normalized_score_is_relative_to_the_layer_mean_of_live_units():
    s = torch.tensor([1.0, 3.0, 0.0, 100.0])
    live = torch.tensor([True, True, True, False])
    torch.testing.assert_close(normalize(s, live), s / (4 / 3))
    assert normalize(torch.zeros(3)).tolist() == [0, 0, 0]


def test_schedule_phases_and_cubic_budget():
    s = PruneSchedule(epochs=10, warmup_epochs=2, prune_until=0.6, target_params=0.1)
    assert [s.phase(e) for e in range(1, 11)] == ["warmup"] * 2 + ["prune"] * 4 + ["finetune"] * 4
    budgets = [s.budget(e) for e in range(3, 7)]
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == pytest.approx(0.1)
    assert budgets[0] == pytest.approx(0.1 + 0.9 * 0.75**3)
    assert s.budget(2) is None and s.budget(7) is None
    assert PruneSchedule(epochs=10, warmup_epochs=2, prune_until=0.6).budget(4) is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prune_until": 0}, "prune_until= must be a fraction"),
        ({"threshold": 1.5}, "threshold= must lie in"),
        ({"target_params": 1.0}, "target_params= must be a fraction"),
        ({"round_to": 0}, "round_to= must be 1"),
        ({"min_width": 0}, "min_width= must be at least 1"),
        ({"warmup_epochs": -1}, "warmup_epochs= must be 0 or more"),
        ({"target_macs": 0.5, "target_latency_ms": 1.0}, "target_params=, target_macs= or target_latency_ms="),
    ],
)
def test_bad_schedule_values(kwargs, match):
    """The library names its arguments (the command line's flags: tests/test_train.py)."""
    with pytest.raises(UserError, match=match) as e:
        PruneSchedule(**{"epochs": 5, "warmup_epochs": 1, "prune_until": 0.5, **kwargs})
    assert "--" not in str(e.value)


def test_round_keep():
    assert round_keep(11, 64, 8, 8) == 16
    assert round_keep(3, 64, 8, 8) == 8
    assert round_keep(3, 64, 1, 2) == 3
    assert round_keep(0, 64, 1, 2) == 2
    assert round_keep(61, 64, 8, 8) == 64
    assert round_keep(5, 6, 8, 1) == 6  # never above the current width


def scored_pruner(model, schedule, scores, **kw):
    """A pruner whose epoch of Taylor scores is `scores` (per group, per unit), as if accumulated."""
    p = Pruner(model, schedule=schedule, **kw)
    p.scores.unit = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in scores.items()}
    p.scores.batches = 1
    return p


def test_threshold_removes_units_under_it_and_min_width_holds():
    model = cnn(channels=(6, 10), hidden=(12,))
    sched = PruneSchedule(
        epochs=4, warmup_epochs=0, prune_until=1.0, threshold=0.5, round_to=1, min_width=4, prune_connections=False
    )
    scores = {"conv0": [1, 1, 1, 1, 1, 0.1], "conv1": [1.0] * 9 + [0.2], "fc0": [0.0] * 10 + [5, 5]}
    pruner = scored_pruner(model, sched, scores)
    opt = torch.optim.Adam(model.parameters())
    pruner.optimizer = opt
    report = pruner.end_epoch(1)
    new = model
    # conv0: mean 5.1/6 -> 0.1 normalizes to ~0.12 < 0.5; conv1 one unit; fc0 ten zeros but min width 4
    assert new.widths() == {"conv0": 5, "conv1": 9, "fc0": 4}
    assert report.removed_units == {"conv0": 1, "conv1": 1, "fc0": 8}


def test_round_to_keeps_the_best_scored_units():
    model = cnn(channels=(16, 10), hidden=(12,))
    sched = PruneSchedule(
        epochs=4, warmup_epochs=0, prune_until=1.0, threshold=0.5, round_to=8, min_width=1, prune_connections=False
    )
    conv0 = [1.0] * 16
    conv0[3] = conv0[7] = conv0[9] = 0.0
    pruner = scored_pruner(model, sched, {"conv0": conv0, "conv1": [1.0] * 10, "fc0": [1.0] * 12})
    removed = pruner._choose_units(None)
    assert removed["conv0"].tolist() == []  # 13 survivors round up to 16: nothing goes
    conv0 = [0.01 * i for i in range(9)] + [10.0] * 7  # nine under the threshold
    pruner = scored_pruner(model, sched, {"conv0": conv0, "conv1": [1.0] * 10, "fc0": [1.0] * 12})
    removed = pruner._choose_units(None)
    assert sorted(removed["conv0"].tolist()) == list(range(8))  # 7 survivors round up to 8: unit 8 stays


def test_budget_is_met_by_removing_the_lowest_scored_units_across_layers():
    model = cnn(channels=(16, 16), hidden=(32,))
    base = count_params(model)
    sched = PruneSchedule(
        epochs=4,
        warmup_epochs=0,
        prune_until=0.25,
        threshold=0.0,
        target_params=0.3,
        round_to=1,
        min_width=2,
        prune_connections=False,
    )
    g = torch.Generator().manual_seed(0)
    scores = {k: torch.rand(w, generator=g).tolist() for k, w in model.widths().items()}
    pruner = scored_pruner(model, sched, scores)
    pruner.optimizer = torch.optim.Adam(model.parameters())
    report = pruner.end_epoch(1)
    new = model
    assert report.budget == pytest.approx(0.3)
    assert count_params(new) <= 0.3 * base
    assert pruner.budget_reached
    # removing one unit fewer (the best-scored of those removed) would not have fit: the search is tight
    assert count_params(new) > 0.3 * base * 0.8


def test_masks_hold_weights_and_gradients_at_exactly_zero_under_adam():
    model = cnn().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = inputs(model, 8), torch.arange(8) % 4
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    masks = MaskSet({"fcs.0.weight": torch.rand_like(model.fcs[0].weight) > 0.5})
    masks.apply(model, opt)
    m = masks.masks["fcs.0.weight"]
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        assert (model.fcs[0].weight.grad[~m] == 0).all()
        opt.step()
    assert (model.fcs[0].weight[~m] == 0).all()
    assert (model.fcs[0].weight[m] != 0).all()


@pytest.mark.parametrize("name", ["cnn", "bilstm", "bilstm-vocab"])
def test_a_step_on_the_compact_model_equals_the_step_on_the_masked_model(name):
    torch.manual_seed(0)
    model = MODELS[name]().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = inputs(model, 6)
    y = torch.arange(6) % (4 if name == "cnn" else 2)
    for _ in range(2):  # build up Adam moments
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    removed = some_units(model, seed=5)
    masked, masked_opt = copy.deepcopy(model), None
    masked_opt = torch.optim.Adam(masked.parameters(), lr=1e-2)
    masked_opt.load_state_dict(opt.state_dict())
    masks = MaskSet(param_masks_for_units(masked, model_groups(masked), removed))
    masks.apply(masked, masked_opt)
    redirect_removed(masked, model_groups(masked), removed)
    small, keeps, small_opt = compact_model(masked, removed, masked_opt)
    for m, o in ((masked, masked_opt), (small, small_opt)):
        o.zero_grad()
        loss_fn(m(x), y).backward()
        o.step()
    with torch.no_grad():
        assert (small(x) - masked(x)).abs().max().item() <= ATOL
    small_state = small.state_dict()
    from edgeprune.prune.compact import slice_like

    for k, v in masked.state_dict().items():
        if k != "token_map":  # renumbered, not sliced (test_vocabulary_rows_are_renumbered)
            torch.testing.assert_close(slice_like(k, v, keeps), small_state[k], rtol=0, atol=ATOL)
    p_small = dict(small.named_parameters())
    p_masked = dict(masked.named_parameters())
    for k in p_small:
        st_s, st_m = small_opt.state[p_small[k]], masked_opt.state[p_masked[k]]
        assert float(st_s["step"]) == float(st_m["step"]) == 3
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(st_s[moment], slice_like(k, st_m[moment], keeps), rtol=0, atol=1e-7)


def test_cosine_finetune_learning_rate():
    s = PruneSchedule(epochs=10, warmup_epochs=2, prune_until=0.6, finetune_lr="cosine")
    scales = [s.lr_scale(e) for e in range(1, 11)]
    assert scales[:6] == [1.0] * 6  # warm-up and pruning epochs keep the rate
    assert scales[6] == 1.0 and scales[6:] == sorted(scales[6:], reverse=True) and 0.01 < scales[-1] < 0.2
    assert PruneSchedule(epochs=10, warmup_epochs=2, prune_until=0.6).lr_scale(9) == 1.0
    with pytest.raises(UserError, match="finetune_lr= must be constant or cosine"):
        PruneSchedule(epochs=10, warmup_epochs=2, prune_until=0.6, finetune_lr="step")


@pytest.mark.parametrize(
    "final,expected", [(0.7, {"conv0": 8, "conv1": 16, "fc0": 16}), (0.8, {"conv0": 8, "conv1": 16, "fc0": 16})]
)
def test_budget_step_does_not_cross_the_final_target_when_another_notch_fits(final, expected):
    # 4,828 parameters; a conv1 notch (16 -> 8) frees 2,312, an fc0 notch (24 -> 16) 1,192.
    model = cnn(channels=(8, 16), hidden=(24,))
    base = count_params(model)
    assert base == 4828
    sched = PruneSchedule(
        epochs=4,
        warmup_epochs=0,
        prune_until=1.0,
        threshold=0.0,
        target_params=final,
        round_to=8,
        min_width=8,
        prune_connections=False,
    )
    scores = {"conv0": [1.0] * 8, "conv1": [0.1] * 8 + [1.0] * 8, "fc0": [0.5] * 8 + [1.0] * 16}
    pruner = scored_pruner(model, sched, scores)
    keep = {"conv0": 8, "conv1": 16, "fc0": 24}
    live = {g.name: pruner._live_units(g) for g in pruner.groups}
    norm = {k: normalize(torch.tensor(v, dtype=torch.float64)).float() for k, v in scores.items()}
    raw = {k: torch.tensor(v, dtype=torch.float64) for k, v in scores.items()}
    pruner._fit_budget(keep, norm, live, (base - 500) / base, raw)
    # conv1's notch scores lowest but would cross the final target (0.7: 3,380; 0.8: 3,862);
    # fc0's notch fits the step without crossing (0.7), or overshoots least when both cross (0.8)
    assert keep == expected


def test_distill_loss_is_the_softened_kl_for_both_heads():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5)
    T = 3.0
    p, q = torch.softmax(t / T, -1), torch.softmax(s / T, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * T * T
    torch.testing.assert_close(distill_loss(s, t, T), expected, rtol=1e-5, atol=1e-6)
    assert float(distill_loss(t, t, T)) == pytest.approx(0.0, abs=1e-6)
    # one logit (sigmoid) is the two-class softmax over [0, logit]
    s1, t1 = torch.randn(6, 1), torch.randn(6, 1)
    two = distill_loss(torch.cat([torch.zeros(6, 1), s1], 1), torch.cat([torch.zeros(6, 1), t1], 1), T)
    torch.testing.assert_close(distill_loss(s1, t1, T), two, rtol=1e-5, atol=1e-6)
