"""Pruning in short fine-tunes: schedules in steps (a one-epoch run prunes), and the accuracy guard
that rolls a pruning step back exactly, retries it smaller and stops pruning when nothing fits."""

from __future__ import annotations

import copy
import io
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from interrupted import train_interrupted
from test_cli_errors import EDGEPRUNE, run_cli
from test_crash import assert_same_run
from torch import nn

from edgeprune.config import resolve_train_config
from edgeprune.errors import GuardWarning, UserError
from edgeprune.metrics import f1_score
from edgeprune.prune import guard as guards
from edgeprune.prune.pruner import Pruner
from edgeprune.prune.schedule import PruneSchedule, default_warmup
from edgeprune.train import train_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- schedules in steps ------------------------------------------------------------------------


def test_a_run_too_short_for_a_pruning_epoch_prunes_at_steps_spread_over_its_window():
    s = PruneSchedule(epochs=2, warmup_epochs=1, prune_until=0.7, steps_per_epoch=100, target_params=0.5)
    # by epochs alone it would never prune (floor(0.7 * 2) = 1 = the warm-up)
    assert PruneSchedule(epochs=2, warmup_epochs=1, prune_until=0.7).prune_steps == 0
    # the window is steps 100 (end of warm-up) to floor(0.7 * 200) = 140: ten points, 4 steps apart
    assert s.in_steps and s.points == tuple(range(104, 141, 4))
    assert s.prune_steps == 10 and s.last_prune_epoch == 2
    assert [s.phase(e) for e in (1, 2)] == ["warmup", "prune"]
    assert s.ramp_at(10, 0.5) == pytest.approx(0.5) and s.ramp_at(1, 0.5) == pytest.approx(0.5 + 0.5 * 0.9**3)
    every = PruneSchedule(epochs=3, warmup_epochs=0, prune_until=0.5, steps_per_epoch=10, prune_every=4)
    assert every.points == (4, 8, 12) and every.last_prune_epoch == 2  # step 12 falls in epoch 2
    # a schedule with pruning epochs keeps them (the study's schedule), steps known or not
    study = PruneSchedule(epochs=10, warmup_epochs=2, prune_until=0.6, steps_per_epoch=50)
    assert not study.in_steps and study.points == () and study.prune_steps == 4
    assert default_warmup(50) == 5 and default_warmup(50, from_weights=True) == 0


class Net(nn.Module):
    """A small CNN with BatchNorm for 1x8x8 inputs."""

    def __init__(self, width=32, classes=4):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width)
        self.c2, self.b2 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        return self.fc(F.relu(self.b2(self.c2(x))).mean((2, 3)))


def toy_data(n, seed):
    """Four classes: which quadrant of an 8x8 image is brightest, under noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.8
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, 0, r * 4 : r * 4 + 4, col * 4 : col * 4 + 4] += 1.0
    return x, y


X, Y = toy_data(512, 0)
XV, YV = toy_data(400, 1)


@torch.no_grad()
def accuracy(model) -> float:
    was = model.training
    model.eval()
    out = float((model(XV).argmax(1) == YV).float().mean())
    model.train(was)
    return out


def batches(epoch, size=32):
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(epoch))
    return [order[i : i + size] for i in range(0, len(X), size)]


def train_step(model, opt, idx, pruner=None):
    loss = F.cross_entropy(model(X[idx]), Y[idx])
    opt.zero_grad()
    loss.backward()
    if pruner is not None:
        pruner.after_backward()
    opt.step()
    return pruner.step() if pruner is not None else None


def pretrained(epochs=3):
    """The user's trained model and its optimizer (Adam, with state): what a fine-tune starts from."""
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for e in range(epochs):
        for idx in batches(100 + e):
            train_step(model, opt, idx)
    return model, opt


def test_a_one_epoch_fine_tune_prunes_in_a_users_loop():
    model, opt = pretrained()
    steps = len(batches(0))
    pruner = Pruner(model, X[:2], opt, total_steps=steps, from_weights=True, target_params=0.3, round_to=1)
    assert pruner.schedule.warmup_epochs == 0 and pruner.schedule.in_steps
    reports = [r for idx in batches(0) if (r := train_step(model, opt, idx, pruner)) is not None]
    pruner.end_epoch()
    assert [r.at for r in reports] == [f"step {p}" for p in pruner.schedule.points]
    s = pruner.summary()
    assert s.params_after <= 0.3 * s.params_before and s.budget["met"] and s.ended_by == "budget"


def test_a_loop_that_forgets_step_is_told_so():
    model, opt = pretrained(epochs=0)
    pruner = Pruner(model, X[:2], opt, epochs=1, steps_per_epoch=16, target_params=0.5)
    for idx in batches(0):
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        pruner.after_backward()
        opt.step()
    with pytest.raises(UserError, match=r"call pruner.step\(\) after every optimizer.step\(\)"):
        pruner.end_epoch()


# --- the accuracy guard ------------------------------------------------------------------------


def state_of(model, opt):
    """Deep copies of the weights and buffers and of the optimizer's state."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def assert_same_state(a, b):
    (ma, oa), (mb, ob) = a, b
    assert ma.keys() == mb.keys()
    for k in ma:
        assert ma[k].shape == mb[k].shape and torch.equal(ma[k], mb[k]), k
    assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)


@pytest.mark.parametrize("recovery", [0, 3])
def test_a_step_the_guard_refuses_is_rolled_back_exactly_and_retried_smaller_then_pruning_stops(recovery):
    """Judged at once (0) or after 3 optimizer steps of training with its masks held: every try is
    refused, and the model and optimizer end exactly as they were just before the step, the training
    done during the tries discarded."""
    model, opt = pretrained()
    params = list(model.parameters())
    tries = []  # (masked weights, accuracy) the guard saw at each try

    def evaluate(m):
        if not tries:  # the first call, as the pruner is built
            tries.append((0, 1.0))
            return 1.0  # the dense reference, scripted so that every pruned try falls under it
        masked = sum(int((p == 0).sum()) for p in m.parameters())
        tries.append((masked, accuracy(m)))
        return tries[-1][1]

    steps = len(batches(0))
    pruner = Pruner(
        model, X[:2], opt, total_steps=steps, prune_every=8, from_weights=True, target_params=0.2, round_to=1,
        min_width=1, max_drop=0.01, evaluate=evaluate, val_size=len(YV), guard_recovery=recovery,
    )  # fmt: skip
    assert pruner.schedule.points == (8,) and pruner.guard.recovery_steps == recovery
    widths, reports, after = pruner.widths(), [], None
    for i, idx in enumerate(batches(0)):
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        pruner.after_backward()
        opt.step()
        if i + 1 == pruner.schedule.points[0]:
            before, accuracy_before = state_of(model, opt), accuracy(model)
        report = pruner.step()
        reports += [report] if report is not None else []
        if pruner.guard.stopped and after is None:  # the last try rolled back: nothing is under trial now
            after, accuracy_after, stopped_at = state_of(model, opt), accuracy(model), pruner.steps_done
    pruner.end_epoch()

    events = [e for r in reports for e in r.guard]
    actions = [e["action"] for e in events]
    assert actions == ["rolled back"] * (len(actions) - 1) + ["stopped"] and events == pruner.guard.events[1:]
    assert 2 <= len(actions) - 1 <= guards.MAX_HALVINGS + 1
    removed = [sum(e["removed_units"].values()) for e in events[:-1]]
    assert removed[0] > 0 and all(b <= a // 2 for a, b in zip(removed, removed[1:]))
    # each try trained `recovery` steps with its masks before it was judged (the run ends at step 16:
    # a try masked later is judged then), and those steps were thrown away
    for e in events[:-1]:
        assert e["recovery_steps"] == min(recovery, steps - (e["judged_at"] - e["recovery_steps"]))
    assert pruner.guard.discarded_steps == sum(e["recovery_steps"] for e in events[:-1])
    assert stopped_at == events[-1]["judged_at"] and (stopped_at > 8) == (recovery > 0)
    if recovery:
        assert pruner.guard.discarded_steps >= 2 * recovery
    # one pass of the model just before the step (dense: no zeros), then each try, a real masked
    # model with more zeros than the dense one had
    assert len(tries) == 2 + len(actions) - 1 and tries[1][0] == 0 and all(masked > 0 for masked, _ in tries[2:])
    assert all(e["before"] == tries[1][1] for e in events) and pruner.guard.before_passes == 1
    # ... and each was rolled back exactly: weights, buffers and Adam's moments (and step counts) as
    # before the step, the same parameter objects, and the model computes what it computed before
    assert_same_state(after, before)
    assert accuracy_after == accuracy_before
    assert all(p is q for p, q in zip(model.parameters(), params)) and len(list(model.parameters())) == len(params)
    # pruning stopped for good: no more scores, no more points, the widths untouched
    assert pruner.guard.stopped and pruner.ended_by == "guard" and pruner.widths() == widths
    assert pruner.scores.batches == 0 and pruner.trial is None
    status = pruner.budget_status()
    assert status["met"] is False and status["reasons"][0].startswith("the accuracy guard stopped pruning at step 8")
    assert "--max-accuracy-drop 0.01" in status["reasons"][0]
    assert pruner.guard.validations == len(tries)


def scripted(values):
    """An evaluation that answers `values` in order (the test supplies the accuracies) and records
    the number of zero weights of each model it was asked about (0: the unmasked model)."""
    seen = []

    def evaluate(m):
        seen.append(sum(int((p == 0).sum()) for p in m.parameters()))
        return values[len(seen) - 1]

    return evaluate, seen


def first_point(evaluate, **kw):
    """A fine-tune from weights in a user's loop up to its first guarded pruning point (step 8)."""
    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, total_steps=len(batches(0)), prune_every=8, from_weights=True, target_params=0.2,
        round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, **{"guard_recovery": 0, **kw},
    )  # fmt: skip
    assert pruner.schedule.points[0] == 8
    for idx in batches(0)[:8]:
        report = train_step(model, opt, idx, pruner)
    return pruner, report


@pytest.mark.parametrize("tries", [[0.86, 0.895], [0.86] * (guards.MAX_HALVINGS + 1)])
def test_a_step_within_the_dense_reference_but_costing_more_against_the_model_before_it_is_rolled_back(tries):
    # the dense reference 0.80; the model has learned to 0.90 by the pruning point; a try at 0.86 is
    # 6 points above the reference (a stale reference would keep it) but 4 under the model before it
    evaluate, seen = scripted([0.80, 0.90, *tries])
    pruner, report = first_point(evaluate)
    g = pruner.guard
    assert g.reference == 0.80 and seen[0] == 0 and seen[1] == 0  # the reference, then the model before the step
    assert all(z > 0 for z in seen[2:])  # each try: a masked model
    first = report.guard[0]
    assert first["action"] == "rolled back" and first["value"] == 0.86 and first["before"] == 0.90
    assert first["drop"] == pytest.approx(-6.0) and first["step_drop"] == pytest.approx(4.0)  # within the reference
    assert g.within(0.86) and not g.within(0.86, 0.90)  # the rule, asked both ways
    if tries[-1] == 0.895:  # the half step costs 0.5 point against the model before it: kept
        assert [e["action"] for e in report.guard] == ["rolled back", "kept"]
        kept = report.guard[1]
        assert kept["step_drop"] == pytest.approx(0.5) and kept["before"] == 0.90
        assert 0 < sum(kept["removed_units"].values()) <= sum(first["removed_units"].values()) // 2
        assert report.removed_units == kept["removed_units"] and not g.stopped
    else:  # every smaller step costs 4 points against the model before it: pruning stops, and says why
        assert [e["action"] for e in report.guard] == ["rolled back"] * len(tries) + ["stopped"]
        assert g.stopped["before"] == 0.90 and pruner.ended_by == "guard"
        reason = pruner.budget_status()["reasons"][0]
        assert "0.8600, which would put the pruned model an estimated 4.00 points under the dense one" in reason
        assert "(the steps kept so far cost 0.00;" in reason
    # the cost counts the extra pass: the reference, the model before the step, each try
    assert g.validations == len(seen) == 2 + len(tries) and g.before_passes == 1
    line = str(pruner.summary())
    assert f"{g.validations} validation pass(es) (1 of the model before a step)" in line
    assert "dense reference 0.8000 (each step judged at once; the kept steps cost " in line


@pytest.mark.parametrize("first_cost", [0.6, -0.5])
def test_the_kept_steps_costs_add_up_against_max_drop(first_cost):
    """Each step alone within max_drop is not enough: the kept steps' costs (each against the model just
    before it) add up to the estimated drop under the dense model, and a step that would take that sum
    over max_drop is rolled back. A first step that came back above its pre-step figure (a negative
    cost) gives that slack back."""
    ref, before1 = 0.88, 0.90  # the start (from weights), then the model before the first step
    first = before1 - first_cost / 100
    before2 = 0.92  # the model has learned by the second pruning point
    tries2 = [before2 - 0.006, before2 - 0.003]  # 0.6 and 0.3 points under the model before the step
    evaluate, seen = scripted([ref, before1, first, before2, *tries2])
    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, total_steps=len(batches(0)), prune_every=4, prune_until=0.6, from_weights=True,
        target_params=0.2, round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, guard_recovery=0,
    )  # fmt: skip
    assert pruner.schedule.points[:2] == (4, 8)
    events = []
    for idx in batches(0)[:8]:
        report = train_step(model, opt, idx, pruner)
        if report is not None:
            events += report.guard
    g = pruner.guard
    assert [e["action"] for e in events][:1] == ["kept"] and events[0]["step_drop"] == pytest.approx(first_cost)
    second = [e for e in events if e["at"] == "step 8"]
    if first_cost > 0:  # 0.6 + 0.6 = 1.2 > 1: rolled back, though 0.6 alone is within; the half: 0.6 + 0.3 kept
        assert [e["action"] for e in second] == ["rolled back", "kept"]
        assert second[0]["estimate"] == pytest.approx(1.2) and second[1]["estimate"] == pytest.approx(0.9)
    else:  # -0.5 + 0.6 = 0.1: kept at once
        assert [e["action"] for e in second] == ["kept"] and second[0]["estimate"] == pytest.approx(0.1)
    assert g.spent == pytest.approx(second[-1]["estimate"])  # the sum the next step is held to
    assert g.within(tries2[0], before2) == (first_cost < 0)  # the rule asked directly, with the sum as it was
    assert all(e["drop"] < 0 for e in second)  # above the stale dense reference all along: it alone kept them


# --- a model no better than guessing ------------------------------------------------------------


def test_the_summed_estimate_says_how_uncertain_many_kept_steps_leave_it():
    """Each kept step's cost is two validation passes; k of them added up carry up to sqrt(2k) passes'
    noise. Measured on Lite0 (benchmarks/README.md): 16 steps kept on 1,000 images summed to -2.00 points
    and the test lost 2.79."""
    g = guards.Guard(max_drop=1.0, n=1000, reference=0.87)
    assert g.spent_noise() is None and g.spent_warning() is None  # nothing kept yet
    g.events.append({"action": "kept", "value": 0.86})  # a first step judged against the reference alone
    assert g.spent_noise() is None
    g.events += [{"action": "kept", "before": 0.87, "value": 0.87}] * 16 + [{"action": "rolled back", "before": 0.9}]
    one_pass = 2 * 100 * math.sqrt(0.87 * 0.13 / 1000)  # two binomial standard errors, in points
    assert g.spent_noise() == pytest.approx(one_pass * math.sqrt(32))
    said = g.spent_warning()
    assert "the costs of 16 kept steps added up (0.00 points)" in said and "32 validation passes on n=1000" in said
    assert "--prune-every" in said and g.to_dict()["spent_noise_points"] == pytest.approx(g.spent_noise())
    big = guards.Guard(max_drop=1.0, n=100_000, reference=0.87, events=[{"action": "kept", "before": 0.87}])
    assert big.spent_noise() < 1.0 and big.spent_warning() is None  # one step on 100,000 examples: told apart


def test_the_floor_is_what_always_guessing_the_most_common_class_scores():
    y = torch.tensor([2] * 6 + [0] * 3 + [1])
    guess = torch.full_like(y, 2)
    assert guards.chance_floor(y, "accuracy") == pytest.approx(float((guess == y).double().mean()))
    # macro-F1: guessing in the labels' proportions (a shuffle of them) scores 1/K, more than the constant guess
    y = torch.tensor([2] * 6000 + [0] * 3000 + [1] * 1000)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    assert guards.chance_floor(y.tolist(), "f1") == 1 / 3
    assert f1_score(shuffled, y, 3) == pytest.approx(1 / 3, abs=0.01)
    constant = f1_score(torch.full_like(y, 2), y, 3)  # always the most common class (share 0.6)
    assert constant == pytest.approx(2 * 0.6 / 1.6 / 3) and constant < 1 / 3
    with pytest.raises(UserError, match="val_labels= is empty"):
        guards.chance_floor([], "accuracy")


def guessing_run(values, points=2):
    """A fine-tune from weights in a user's loop with the validation labels given, up to its `points`-th
    pruning point (steps 4, 8), the guard answering `values`."""
    evaluate, seen = scripted(values)
    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, total_steps=len(batches(0)), prune_every=4, prune_until=0.6, from_weights=True,
        target_params=0.2, round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, guard_recovery=0,
        val_labels=YV,
    )  # fmt: skip
    assert pruner.schedule.points == (4, 8)
    for idx in batches(0)[: 4 * points]:
        train_step(model, opt, idx, pruner)
    return pruner, seen


def test_no_step_is_tried_while_the_model_is_no_better_than_guessing_and_the_reference_is_retaken_once_it_is():
    """A new classifier head sits at the majority share: every step would cost nothing measurable and be
    kept. The guard passes such a point, said, and retakes its chance-level reference once the model learns."""
    floor = guards.chance_floor(YV)
    noise = guards.noise_points(floor, len(YV)) / 100
    assert 0.2 < floor < 0.35 and 0.03 < noise < 0.06  # four classes, 400 labels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner, seen = guessing_run([floor + noise / 2, floor + noise / 2, 0.90, 0.895])
    g = pruner.guard
    # the noise warning waits for the retaken reference, and names the caller's line (here), not the
    # pruner's, though it is raised four calls deep inside pruner.step()
    noisy = [w for w in caught if w.category is GuardWarning]
    assert [str(w.message) for w in noisy] == [g.noise_warning()] and noisy[0].filename == __file__
    assert g.n == len(YV) and g.floor == pytest.approx(floor)
    assert [e["action"] for e in g.events] == ["reference", "passed", "reference", "kept"]
    passed, retaken, kept = g.events[1:]
    assert passed["at"] == "step 4" and passed["untrained"] and passed["value"] == floor + noise / 2
    assert "no better than always guessing the most common class" in passed["why"]
    assert seen[:3] == [0, 0, 0]  # the start, the point that passed, the model before step 8: all unmasked
    assert retaken["at"] == "step 8" and retaken["value"] == 0.90 and g.reference == 0.90
    assert kept["step_drop"] == pytest.approx(0.5) and kept["drop"] == pytest.approx(0.5)
    assert g.waited() == 1 and "1 point(s) passed while no better than guessing" in str(pruner.summary())
    # it learned by the last point: a missed budget is not blamed on the wait
    assert not g.still_guessing() and not any("tried no step" in r for r in pruner.budget_status()["reasons"])
    # just above the noise is learned: the point tries its step
    assert not g.learned(floor + noise) and g.learned(floor + noise + 1e-6)


def test_a_model_that_never_beats_guessing_is_not_pruned_and_the_missed_budget_says_why():
    floor = guards.chance_floor(YV)
    pruner, seen = guessing_run([floor] * 3)
    before = count(pruner.model)
    pruner.finalize()
    assert count(pruner.model) == before == pruner.baseline_params and max(seen) == 0  # nothing masked, ever
    status = pruner.budget_status()
    assert not status["met"] and pruner.guard.waited() == 2
    assert "the accuracy guard tried no step at 2 pruning point(s)" in status["reasons"][0]
    assert f"({floor:.4f})" in status["reasons"][0]


def test_val_labels_are_checked_against_val_size_and_need_the_guard():
    model, opt = pretrained(epochs=0)
    kw = dict(total_steps=16, target_params=0.5)
    with pytest.raises(UserError, match="val_size=3 but val_labels= has 400 labels"):
        Pruner(model, X[:2], opt, **kw, max_drop=1.0, evaluate=accuracy, val_size=3, val_labels=YV)
    with pytest.raises(UserError, match="give max_drop= with them"):
        Pruner(model, X[:2], opt, **kw, val_labels=YV)


@pytest.mark.parametrize("fresh", [False, True])
def test_when_the_model_before_the_step_is_the_reference_the_guard_decides_as_against_the_reference(fresh):
    """The pre-step figure equal to the reference: decisions are the dense reference's alone. Measured
    (a pass of its own), or fresh: the reference taken at this very point is reused, at no extra pass."""
    tries = [0.885, 0.895]  # 1.5 points under: rolled back; 0.5 under: kept
    if fresh:  # the guard added after the warm-up (a state without one): the reference is taken at the point
        evaluate, seen = scripted([0.90, *tries])
        model, opt = pretrained()
        kw = dict(epochs=2, steps_per_epoch=16, warmup_epochs=1, prune_every=4, target_params=0.2, round_to=1,
                  min_width=1)  # fmt: skip
        unguarded = Pruner(model, X[:2], opt, **kw)
        for idx in batches(0):  # the warm-up: steps 1 to 16
            train_step(model, opt, idx, unguarded)
        pruner = Pruner(model, X[:2], opt, **kw, max_drop=1.0, evaluate=evaluate, guard_recovery=0)
        pruner.load_state_dict(unguarded.state_dict())
        assert pruner.guard.reference is None and pruner.schedule.points == (20,)
        for idx in batches(1)[:4]:
            report = train_step(model, opt, idx, pruner)
        assert pruner.guard.events[0]["at"] == "step 20" and pruner.guard.before_passes == 0
    else:
        evaluate, seen = scripted([0.90, 0.90, *tries])
        pruner, report = first_point(evaluate)
        assert pruner.guard.before_passes == 1
    g = pruner.guard
    assert [e["action"] for e in report.guard] == ["rolled back", "kept"]
    for e in report.guard:  # a second way: the dense reference's rule alone
        assert e["before"] == g.reference == 0.90
        assert (e["action"] == "kept") == (100 * (0.90 - e["value"]) <= 1.0)
        assert e["step_drop"] == pytest.approx(e["drop"])
    assert g.validations == len(seen) == 1 + (not fresh) + len(tries)


# --- judged after a recovery interval ----------------------------------------------------------


def dip_then_recover(pruner_of, before=0.90, dip=0.85, recovered=0.895):
    """An evaluation scripted as validation behaves after a pruning step: the model before a step
    measures `before`; a masked step measures `dip` right after masking and `recovered` once it has
    trained at least one step with its masks. It also records the outputs of each model it judged."""
    outputs = []

    def evaluate(m):
        trial = pruner_of[0].trial if pruner_of else None
        if trial is None:
            return before  # the dense reference, or the model just before a step
        with torch.no_grad():
            was = m.training
            m.eval()
            outputs.append(m(XV).clone())
            m.train(was)
        return dip if pruner_of[0].steps_done == trial["masked_at"] else recovered

    return evaluate, outputs


@pytest.mark.parametrize("recovery", [0, 3])
def test_a_step_that_dips_then_recovers_is_refused_at_once_and_kept_after_its_recovery_steps(recovery):
    holder = []
    evaluate, outputs = dip_then_recover(holder)
    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, total_steps=len(batches(0)), prune_every=8, from_weights=True, target_params=0.2,
        round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, guard_recovery=recovery,
    )  # fmt: skip
    holder.append(pruner)
    widths, reports, compacted = pruner.widths(), {}, None
    for i, idx in enumerate(batches(0)):
        report = train_step(model, opt, idx, pruner)
        if report is not None:
            reports[i + 1] = report
            if report.compacted:  # what the compacted model computes, right after the decision
                model.eval()
                with torch.no_grad():
                    compacted = model(XV)
                model.train()
    g = pruner.guard
    events = g.events[1:]
    if recovery == 0:  # the dip is all the guard sees: every try refused, pruning stops at once
        assert [e["action"] for e in events] == ["rolled back"] * (len(events) - 1) + ["stopped"]
        assert all(e["value"] == 0.85 and e["recovery_steps"] == 0 for e in events)
        assert list(reports) == [8] and reports[8].guard == events and g.stopped
        assert pruner.widths() == widths and g.discarded_steps == 0
        return
    # masked at step 8, trained 3 steps with its masks, judged at step 11 and kept
    assert list(reports) == [8, 11] and reports[8].pending and reports[8].guard == [] and reports[8].at == "step 8"
    assert pruner.trial is None and not reports[11].pending and reports[11].at is None  # only a judgement
    (kept,) = reports[11].guard
    assert kept == {**kept, "action": "kept", "at": "step 8", "value": 0.895, "recovery_steps": 3, "judged_at": 11}
    assert kept["before"] == 0.90 and kept["step_drop"] == pytest.approx(0.5) and g.discarded_steps == 0
    assert reports[11].removed_units == kept["removed_units"] and reports[11].compacted
    assert sum(pruner.widths().values()) == sum(widths.values()) - sum(kept["removed_units"].values())
    # the compacted model computes what the masked one the guard judged did (within 1e-5)
    assert (compacted - outputs[-1]).abs().max() <= 1e-5
    assert g.validations == 3 and g.to_dict()["recovery_steps"] == 3  # the reference, the model before, the try


def test_auto_recovery_is_a_quarter_of_the_steps_between_pruning_points():
    model, opt = pretrained(epochs=0)
    kw = dict(max_drop=1.0, evaluate=accuracy)
    assert Pruner(model, X[:2], opt, total_steps=16, prune_every=8, **kw).guard.recovery_steps == 2
    assert Pruner(model, X[:2], opt, total_steps=16, prune_every=2, **kw).guard.recovery_steps == 1  # at least 1
    # an epoch schedule: a quarter of an epoch when the steps are known, else judged at once
    assert Pruner(model, X[:2], opt, epochs=10, steps_per_epoch=40, **kw).guard.recovery_steps == 10
    assert Pruner(model, X[:2], opt, epochs=10, **kw).guard.recovery_steps == 0
    assert guards.auto_recovery(None) == 0 and guards.auto_recovery(3) == 1 and guards.auto_recovery(400) == 100
    with pytest.warns(GuardWarning, match="guard_recovery=8 is not shorter than the 8 optimizer steps between"):
        Pruner(model, X[:2], opt, total_steps=16, prune_every=8, guard_recovery=8, **kw)


def test_an_epoch_loop_that_never_counts_steps_is_told_so():
    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, epochs=4, warmup_epochs=0, prune_until=0.5, target_params=0.3, round_to=1,
        max_drop=1.0, evaluate=accuracy, guard_recovery=5,
    )  # fmt: skip
    for epoch in range(2):
        for idx in batches(epoch):
            train_step(model, opt, idx)  # the user's step, without pruner.step()
            pruner.after_backward()
        if epoch == 0:
            assert pruner.end_epoch().pending  # masked at the end of epoch 1, to be judged 5 steps later
    with pytest.raises(UserError, match=r"none was counted during epoch 2: call pruner.step\(\) after every"):
        pruner.end_epoch()


def test_max_drop_and_guard_recovery_in_a_users_own_loop():
    model, opt = pretrained()
    dense_accuracy = accuracy(model)
    seen = []

    def evaluate(m):  # the user's own validation, a fraction in [0, 1]
        seen.append(accuracy(m))
        return seen[-1]

    epochs, steps = 2, len(batches(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuardWarning)  # the noise of 400 examples (tested above)
        pruner = Pruner(
            model, X[:2], opt, epochs=epochs, steps_per_epoch=steps, prune_every=4, from_weights=True,
            target_params=0.05, round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, val_size=len(YV),
            guard_recovery=2,
        )  # fmt: skip
    for epoch in range(epochs):
        for idx in batches(epoch):
            report = train_step(model, opt, idx, pruner)
            for e in report.guard if report is not None else ():
                if e["action"] == "kept":  # judged after its 2 steps, then compacted: the same model
                    assert accuracy(model) == pytest.approx(e["value"], abs=1e-12)
        pruner.end_epoch()
    pruner.finalize()
    g = pruner.guard
    kept = [e for e in g.events if e["action"] == "kept"]
    rolled = [e for e in g.events if e["action"] == "rolled back"]
    assert kept and all(e["recovery_steps"] == 2 for e in kept + rolled)
    # the rule: validation after the recovery steps within 1 point of max(dense reference, the model before)
    assert all(100 * (max(dense_accuracy, e["before"]) - e["value"]) <= 1.0 + 1e-9 for e in kept)
    assert all(100 * (max(dense_accuracy, e["before"]) - e["value"]) > 1.0 for e in rolled)
    assert g.discarded_steps == 2 * len(rolled)
    assert g.validations == len(seen) == 1 + g.before_passes + len(kept + rolled)
    s = pruner.summary()
    assert s.params_after < s.params_before and s.ended_by in ("guard", "schedule") and pruner.trial is None
    assert s.guard["recovery_steps"] == 2 and s.guard["discarded_steps"] == g.discarded_steps
    assert "each step judged after 2 step(s) of training" in str(s)


def test_max_drop_in_a_users_own_loop_with_its_evaluation_judged_at_once():
    model, opt = pretrained()
    dense_accuracy = accuracy(model)
    seen = []

    def evaluate(m):  # the user's own validation: accuracy on their held-out set, a fraction in [0, 1]
        seen.append(accuracy(m))
        return seen[-1]

    epochs, steps = 2, len(batches(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner = Pruner(
            model, X[:2], opt, epochs=epochs, steps_per_epoch=steps, prune_every=4, from_weights=True,
            target_params=0.05, round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, val_size=len(YV),
            guard_recovery=0,
        )  # fmt: skip
        for epoch in range(epochs):
            for idx in batches(epoch):
                report = train_step(model, opt, idx, pruner)
                for e in report.guard if report is not None else ():
                    if e["action"] == "kept":  # the compacted model computes what the masked try did
                        assert accuracy(model) == pytest.approx(e["value"], abs=1e-12)
            pruner.end_epoch()
    pruner.finalize()
    g = pruner.guard
    # the reference is the dense model at the start (from weights: no warm-up), measured by the guard
    assert g.reference == dense_accuracy and g.events[0]["action"] == "reference" and g.events[0]["at"] == "the start"
    kept = [e for e in g.events if e["action"] == "kept"]
    rolled = [e for e in g.events if e["action"] == "rolled back"]
    assert kept and rolled  # this budget is beyond what 1 point allows: the guard both keeps and refuses
    # each step is held to the dense model or the model just before it, whichever is higher
    assert all(100 * (max(dense_accuracy, e["before"]) - e["value"]) <= 1.0 + 1e-9 for e in kept)
    assert all(100 * (max(dense_accuracy, e["before"]) - e["value"]) > 1.0 for e in rolled)
    # one pass for the reference, one for the model before each pruning point that tried a step, one per try
    points = {e["at"] for e in kept + rolled}
    assert g.before_passes == len(points) and g.validations == len(seen) == 1 + len(points) + len(kept) + len(rolled)
    s = pruner.summary()
    assert s.params_after < s.params_before  # it pruned, and stopped short of the 0.05 budget
    assert s.ended_by == "guard" and s.budget["met"] is False
    assert s.guard["kept"] == len(kept) and s.guard["n"] == len(YV)
    assert "pruning ended by the guard" in str(s) and "accuracy guard: max drop 1 points" in str(s)
    assert f"uncertain by up to {g.spent_noise():.1f}" in str(s)
    # n=400 at ~0.9: two standard errors are ~3 points, above the 1-point tolerance: said
    noise = 2 * 100 * math.sqrt(dense_accuracy * (1 - dense_accuracy) / len(YV))
    assert g.noise() == pytest.approx(noise)
    assert [str(w.message) for w in caught if w.category is GuardWarning] == [g.noise_warning()]


def test_a_guarded_pruner_resumes_at_any_step_exactly():
    """State saved in the middle of an epoch (between pruning points), loaded into fresh objects,
    continues as if never interrupted: the step count, the scores so far and the guard travel along."""

    whole, p1 = resumable_run(None)
    cut_points = [p for p in p1.schedule.points if p > 5]
    resumed, p2 = resumable_run(cut_points[0] + 2)  # between two pruning points, scores half gathered
    assert p1.guard.events and p2.guard.to_dict() | {"seconds": 0} == p1.guard.to_dict() | {"seconds": 0}
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("max_drop", [0.5, 0.0])
def test_a_pruner_saved_while_a_step_is_under_trial_resumes_exactly(max_drop):
    """Saved during a step's recovery steps (masked, not judged yet): the trial (its snapshot, the step,
    when it is judged) travels in state_dict, and the resumed run keeps or rolls it back as the
    uninterrupted one does, ending with the same weights."""
    kw = dict(guard_recovery=4, max_drop=max_drop)
    whole, p1 = resumable_run(None, **kw)
    first = p1.schedule.points[0]
    resumed, p2 = resumable_run(first + 2, **kw)  # 2 of the 4 recovery steps done
    assert p2.saved_trial is not None and p2.saved_trial["judge_at"] == first + 4
    judged = [e for e in p1.guard.events[1:] if e["action"] != "stopped"]
    assert judged[0]["at"] == f"step {first}" and judged[0]["judged_at"] == first + 4  # decided after the cut
    if max_drop == 0.0:  # nothing may cost anything: rolled back after the cut, so the snapshot was restored
        assert judged[0]["action"] == "rolled back" and p1.guard.discarded_steps >= 4
    assert p2.guard.to_dict() | {"seconds": 0} == p1.guard.to_dict() | {"seconds": 0}
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resumable_run(cut: int | None, **guard):
    """A guarded two-epoch fine-tune in a user's loop; at step `cut` everything is saved and the run goes
    on with new objects built from what was saved. Returns the model and the pruner (the resumed one's
    `saved_trial` is the trial its checkpoint held)."""
    model, opt = pretrained()
    kw = dict(
        epochs=2, steps_per_epoch=len(batches(0)), prune_every=5, from_weights=True, target_params=0.1,
        round_to=1, min_width=1, max_drop=1.0, evaluate=accuracy, val_size=len(YV),
    )  # fmt: skip
    kw.update(guard)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = Pruner(model, X[:2], opt, **kw)
    step = 0
    for epoch in range(2):
        for idx in batches(epoch):
            step += 1
            train_step(model, opt, idx, pruner)
            if step == cut:  # save, and go on with new objects built from what was saved
                buf = io.BytesIO()
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "pruner": pruner.state_dict()}, buf)
                buf.seek(0)
                saved = torch.load(buf, weights_only=True)
                model = copy.deepcopy(model)  # the architecture at its current widths
                model.load_state_dict(saved["model"])
                opt = torch.optim.Adam(model.parameters(), lr=3e-3)
                opt.load_state_dict(saved["opt"])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pruner = Pruner(model, X[:2], opt, **kw)
                pruner.load_state_dict(saved["pruner"])
                pruner.saved_trial = pruner.trial
        pruner.end_epoch()
    pruner.finalize()
    return model, pruner


def test_bad_guard_arguments_are_one_sentence():
    model, opt = pretrained(epochs=0)
    with pytest.raises(UserError, match="max_drop= needs evaluate="):
        Pruner(model, X[:2], opt, epochs=2, max_drop=1.0)
    with pytest.raises(UserError, match="give max_drop= "):
        Pruner(model, X[:2], opt, epochs=2, evaluate=accuracy)
    for bad in (-1, "nan", "abc", float("inf")):
        with pytest.raises(UserError, match="max_drop= must be a number of points"):
            Pruner(model, X[:2], opt, epochs=2, max_drop=bad, evaluate=accuracy)
    with pytest.raises(UserError, match="guard_metric= must be accuracy or f1"):
        Pruner(model, X[:2], opt, epochs=2, max_drop=1.0, evaluate=accuracy, guard_metric="top5")
    for bad in (-1, "x", float("nan"), 1.5, True):
        with pytest.raises(UserError, match="guard_recovery= must be a whole number of optimizer steps"):
            Pruner(model, X[:2], opt, epochs=2, max_drop=1.0, evaluate=accuracy, guard_recovery=bad)
    with pytest.raises(UserError, match="guard_recovery= says when the accuracy guard judges a step; give max_drop="):
        Pruner(model, X[:2], opt, epochs=2, guard_recovery=3)
    with pytest.raises(UserError, match="prune_every counts optimizer steps"):
        Pruner(model, X[:2], opt, epochs=2, prune_every=3)
    with pytest.raises(UserError, match=r"returned 91.2; .* fraction in \[0, 1\]"):
        Pruner(model, X[:2], opt, total_steps=8, max_drop=1.0, evaluate=lambda m: 91.2)


# --- edgeprune train ---------------------------------------------------------------------------


def cfg(data_root, tmp_path, name="run", **kw):
    base = dict(dataset="mnist", data_dir=data_root, out=tmp_path / name, batch_size=32, threads=1, device="cpu")
    c = resolve_train_config(**{**base, **kw})
    c.model_config = {"channels": [8, 16], "hidden": [32]}
    return c


def history(run):
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_train_with_a_budget_is_guarded_by_default_and_says_so(data_root, tmp_path):
    c = cfg(data_root, tmp_path, epochs=1)
    assert c.max_accuracy_drop == guards.DEFAULT_MAX_DROP and c.guard_by_default and c.target_params == 0.1
    # one flag away: the study's setting (no budget, no guard) and a budget without the guard
    assert cfg(data_root, tmp_path, epochs=1, preset="study").max_accuracy_drop is None
    off = cfg(data_root, tmp_path, epochs=1, max_accuracy_drop="none")
    assert off.max_accuracy_drop is None and not off.guard_by_default and off.target_params == 0.1
    assert cfg(data_root, tmp_path, epochs=1, prune=False).max_accuracy_drop is None
    assert cfg(data_root, tmp_path, epochs=1, max_accuracy_drop="0.5").guard_by_default is False


def test_a_one_epoch_train_run_prunes(data_root, tmp_path, capsys):
    m = train_run(cfg(data_root, tmp_path, epochs=1, target_params=0.3), resume=False, quiet=False)
    out = capsys.readouterr().out
    assert m["params"] < 0.9 * m["baseline_params"]  # it pruned (a one-epoch run pruned nothing before)
    (h,) = history(tmp_path / "run")
    assert h["pruning_points"][0].startswith("step ") and len(h["pruning_points"]) >= 2
    # guarded by default, and said: in the output, in metrics.json, in history.jsonl
    assert "on by default with a budget; --max-accuracy-drop none turns it off" in out
    assert m["guard"]["by_default"] is True and m["guard"]["max_drop"] == 1.0 and m["guard"]["n"] == 60
    # at most one pass before each point that tried a step (none when a step judged at that very step
    # left a fresh figure), one per try, one for the reference; a point where the untrained model was no
    # better than guessing measured the model before it and passed
    tried = {e["at"] for e in h["guard"] if e["action"] in ("kept", "rolled back")}
    before, waited = m["guard"]["before_passes"], m["guard"]["waited"]
    assert 1 <= before <= len(tried) + waited and "before" in h["guard"][-1]
    passed = [e for e in h["guard"] if e["action"] == "passed"]  # points that tried no step, each with why
    assert all(e["why"] for e in passed) and sum(e.get("untrained", False) for e in passed) == waited
    # records without a pass of their own: stops, passed points, a reference retaken from a point's figure
    said = sum(e["action"] in ("stopped", "passed") or "why" in e for e in h["guard"])
    assert m["guard"]["validations"] == len(h["guard"]) - said + before
    # judged after a quarter of the shortest gap between points, at least 1
    judged = [e for e in h["guard"] if e["action"] in ("kept", "rolled back")]
    assert m["guard"]["recovery_steps"] == 1 and all(e["recovery_steps"] <= 1 for e in judged)
    assert h["guard"][0]["action"] == "reference" and m["pruning_ended_by"] in ("budget", "guard", "schedule")
    assert f"pruning ended by the {m['pruning_ended_by']}" in out and "validation pass(es)" in out
    if m["pruning_ended_by"] == "guard":  # a stop short of the budget is said as a missed budget is
        assert m["budget_met"] is False and "accuracy guard stopped pruning" in m["budget_reasons"][0]


def test_a_guard_switched_off_for_want_of_validation_says_which_of_its_flags_go_unused(data_root, tmp_path, capsys):
    # a fraction above 0 that leaves no row of a small set: known once the data is read
    guard = {"guard_recovery": "3", "guard_metric": "f1"}
    c = cfg(data_root, tmp_path, epochs=1, target_params=0.5, val_fraction=0.0005, **guard)
    assert c.guard_by_default and c.guard_recovery == 3
    m = train_run(c, resume=False, quiet=False)
    said = "the accuracy guard is off: --val-fraction 0.0005 of"
    assert said in capsys.readouterr().out and m["guard"] is None
    assert m["guard_note"].startswith(said)
    assert m["guard_note"].endswith("examples, so --guard-recovery 3 and --guard-metric f1 go unused")


def test_an_epoch_that_ends_with_a_step_under_trial_says_so_in_history_and_its_line(data_root, tmp_path, capsys):
    """An epoch-end schedule: the step masked at epoch 2's end is judged R steps into epoch 3, so epoch 2's
    validation and live parameters are of the masked, not yet judged model: history and the line say so."""
    m = train_run(cfg(data_root, tmp_path, epochs=3, target_params=0.3), resume=False, quiet=False)
    out = capsys.readouterr().out
    h = history(tmp_path / "run")
    assert [r["phase"] for r in h] == ["warmup", "prune", "finetune"]
    pending = h[1]["guard_pending"]
    assert h[0]["guard_pending"] is None and h[2]["guard_pending"] is None and pending["at"] == "epoch 2"
    (judged,) = [e for e in h[2]["guard"] if e["action"] in ("kept", "rolled back")]  # decided in epoch 3
    r = m["guard"]["recovery_steps"]
    assert r >= 1 and judged["at"] == "epoch 2" and judged["judged_at"] == pending["judge_at"]
    assert judged["epoch"] == 2 and h[0]["guard"][0]["epoch"] == 1  # the epoch a record's point ends, not the next
    assert judged["recovery_steps"] == r
    assert h[1]["params_alive"] < h[0]["params_alive"]  # the masked step counts in epoch 2's figures
    line = next(x for x in out.splitlines() if x.startswith("epoch   2/3"))
    said = f"guard: step from epoch 2 under trial (masked in these figures), judged at step {pending['judge_at']}"
    assert said in line
    assert "under trial" not in next(x for x in out.splitlines() if x.startswith("epoch   3/3"))


def test_each_guarded_trial_re_estimates_batchnorm_and_history_counts_it(data_root, tmp_path):
    c = cfg(data_root, tmp_path, epochs=1, target_params=0.3)
    c.model_config = {"channels": [8, 16], "hidden": [32], "batchnorm": True}
    train_run(c, resume=False, quiet=True)
    (h,) = history(tmp_path / "run")
    trials = sum(e["action"] in ("kept", "rolled back") for e in h["guard"])
    assert trials >= 1 and h["bn_recalibrated_batches"] >= trials


def test_a_guard_that_stops_short_of_the_budget_says_so_as_a_missed_budget(data_root, tmp_path, capsys, monkeypatch):
    import edgeprune.train as t

    real, calls = t.evaluate, []

    def evaluate(model, data, split):  # the first validation (the guard's dense reference) says 1.0
        out = real(model, data, split)
        if split is data.val:
            calls.append(out["accuracy"])
            out = {**out, "accuracy": 1.0} if len(calls) == 1 else out
        return out

    monkeypatch.setattr(t, "evaluate", evaluate)
    m = train_run(cfg(data_root, tmp_path, epochs=2, target_params=0.2, round_to=1, min_width=1), quiet=False)
    out = capsys.readouterr().out
    h = history(tmp_path / "run")
    records = [e for r in h for e in r.get("guard", [])]
    # the points that came while a smaller retry was under trial passed, and say so
    passed = [e for e in records if e["action"] == "passed"]
    assert passed and all(e["why"] == "a smaller retry is under trial" and e["at"] != "step 18" for e in passed)
    events = [e for e in records if e["action"] != "passed"]
    assert events[0] == {**events[0], "action": "reference", "value": 1.0, "at": "step 17"}  # the end of the warm-up
    assert {e["action"] for e in events[1:-1]} == {"rolled back"} and events[-1]["action"] == "stopped"
    assert all(e["at"] == "step 18" for e in events[1:])  # the first pruning point, then nothing
    assert m["pruning_ended_by"] == "guard" and m["budget_met"] is False and m["params"] == m["baseline_params"]
    reason = m["budget_reasons"][0]
    assert reason.startswith("the accuracy guard stopped pruning at step 18") and "--max-accuracy-drop 1" in reason
    assert f"budget not met: parameters 0.20 asked, 1.00 reached — {reason}" in m["warnings"]
    assert "done, budget not met" in out and "pruning ended by the guard" in out
    assert m["guard"]["by_default"] is True and m["guard"]["rolled_back"] == len(events) - 2
    # the reference, the model just before the step (trained one step since), and each try: one pass each
    assert m["guard"]["validations"] == len(events) - 1 + 1 and m["guard"]["before_passes"] == 1
    # the report draws the guard's steps as a table, and its runs table says what ended pruning
    from edgeprune.report import build_report, to_markdown

    result, _ = build_report([tmp_path / "run"])
    (run,) = result["runs"]
    assert run["pruning"].endswith("not met: 1.00 reached, ended by the guard")
    said = [[e["at"], e["action"] + (f": {e['why']}" if e["action"] == "passed" else "")] for e in records]
    assert [row[:2] for row in run["guard"]] == said
    text = to_markdown(result)
    # each step judged after a quarter of the step between points (at least 1); the rollbacks' steps counted
    rolled = [e for e in events if e["action"] == "rolled back"]
    assert m["guard"]["recovery_steps"] == 1 and m["guard"]["discarded_steps"] >= 1
    assert m["guard"]["discarded_steps"] == sum(e["recovery_steps"] for e in rolled)
    assert (
        "accuracy guard, max drop 1 points of validation accuracy (n=60) (the default), each step judged after "
        f"1 step(s) of training ({m['guard']['discarded_steps']} discarded by rollbacks):" in text
    )
    assert "| step 17 | reference | 1.0000 | — | - | 26,698 |" in text  # the reference has no step before it
    before = f"{events[1]['before']:.4f}"
    assert f"| step 18 | rolled back | {events[1]['value']:.4f} | {before} | {events[1]['drop']:+.2f} |" in text


def test_resume_in_the_middle_of_a_guarded_run_ends_as_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
    # points at steps 21, 25, 29, 33, ...: the step masked at 33 is judged at 36, after the cut at 34
    kw = dict(epochs=4, warmup_epochs=1, target_params=0.2, round_to=1, min_width=2, prune_every=4)
    kw["max_accuracy_drop"] = "0.5"  # tight enough on 60 validation examples that some steps are refused
    kw["guard_recovery"] = "3"
    full = train_run(cfg(data_root, tmp_path, "full", **kw), quiet=True)

    # stopped after epoch 2, in the middle of the pruning window (steps 20 to 47)
    train_interrupted(monkeypatch, cfg(data_root, tmp_path, "cut", **kw), after_epochs=2)
    assert len(history(tmp_path / "cut")) == 2
    from edgeprune.rundir import RunDir, load_checkpoint

    trial = load_checkpoint(RunDir(tmp_path / "cut"))["pruner"]["guard_trial"]
    assert trial is not None and trial["masked_at"] == 33 and trial["judge_at"] == 36  # saved under trial
    resumed = train_run(cfg(data_root, tmp_path, "cut", **kw), resume=True, quiet=True)

    events = [e for r in history(tmp_path / "full") for e in r.get("guard", [])]
    assert {"reference", "kept"} <= {e["action"] for e in events}  # the guard was at work
    assert any(e["epoch"] >= 3 and e["action"] != "reference" for e in events)  # also after the cut
    assert any(e["at"] == "step 33" and e["judged_at"] == 36 for e in events)  # the trial the checkpoint held
    assert full["guard"]["recovery_steps"] == 3
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    assert full["guard"] == resumed["guard"] and full["test_accuracy"] == resumed["test_accuracy"]
    # many steps kept on 60 validation examples: the summed estimate says how little it knows
    g = full["guard"]
    k = sum(e["action"] == "kept" and e.get("before") is not None for e in events)
    assert k >= 2 and g["spent_noise_points"] == pytest.approx(g["noise_points"] * math.sqrt(2 * k))
    assert any(w.startswith("the accuracy guard's estimate of the drop") for w in full["warnings"])


@pytest.mark.parametrize(
    "flags,says",
    [
        (["--max-accuracy-drop", "-1"], "--max-accuracy-drop must be a number of points"),
        (["--max-accuracy-drop", "nan"], "--max-accuracy-drop must be a number of points"),
        (["--max-accuracy-drop", "abc"], "or none to turn the guard off; got 'abc'"),
        (["--guard-metric", "top5"], "--guard-metric must be accuracy or f1"),
        (["--max-accuracy-drop", "1", "--no-prune"], "a --no-prune run prunes nothing; leave it out"),
        (["--max-accuracy-drop", "1", "--val-fraction", "0"], "set --val-fraction above 0"),
        (["--prune-every", "0"], "--prune-every must be a number of optimizer steps"),
        (["--guard-recovery", "-1"], "--guard-recovery must be a whole number of optimizer steps"),
        (["--guard-recovery", "nan"], "--guard-recovery must be a whole number of optimizer steps"),
        (["--guard-recovery", "x"], "0 judges it at once), or auto; got 'x'"),
        (["--guard-recovery", "2.5"], "--guard-recovery must be a whole number of optimizer steps"),
        (["--guard-recovery", "4", "--max-accuracy-drop", "none"], "this run has no guard"),
        (["--guard-metric", "f1", "--val-fraction", "0"], "--guard-metric f1 says what the accuracy guard compares"),
    ],
)
def test_bad_guard_flags_are_one_line_and_exit_2(data_root, tmp_path, flags, says):
    assert EDGEPRUNE.is_file(), f"{EDGEPRUNE} is missing: pip install -e '.[dev]' into this environment"
    r = run_cli(["train", "--dataset", "mnist", "--data-dir", str(data_root), "--out", str(tmp_path / "x"), *flags],
                cwd=tmp_path)  # fmt: skip
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was written


# --- live parameters while units are only masked -------------------------------------------------


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_masked_units_count_as_the_parameters_compaction_removes_in_masks_until_the_end_mode():
    """progressive=False: units stay masked until finalize(); the live count while masked is the
    parameter count after compaction (a BatchNorm channel's running statistics are buffers: no
    parameter to subtract), so the budget is judged on the model the run ends with."""
    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, total_steps=len(batches(0)), prune_every=4, from_weights=True, target_params=0.3,
        round_to=1, progressive=False,
    )  # fmt: skip
    lives = []
    for idx in batches(0):
        if train_step(model, opt, idx, pruner) is not None:
            lives.append(pruner.live_params())
            assert sum(len(v) for v in pruner.removed.values()) > 0  # masked, not compacted
    pruner.end_epoch()
    assert len(lives) >= 2 and lives[-1] < count(model)  # the model still holds the masked units
    status, masked_live = pruner.budget_status(), pruner.live_params()
    # the share of connection weights at zero, a second way: the conv and Linear weights themselves (a
    # masked unit's bias and BatchNorm scale are zero too, and are not connections)
    weights = [model.c1.weight, model.c2.weight, model.fc.weight]
    share = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert pruner.connection_sparsity() == pytest.approx(share, abs=1e-12) and share > 0
    pruner.finalize()
    # exact: the parameters compaction left, less the connections still masked among them (zeros in
    # the weights), counted a second way from the model itself
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert zeros == pruner.masks.zeros() and count(model) - zeros == masked_live == lives[-1]
    assert pruner.live_params() == masked_live
    after = pruner.budget_status()
    assert status["met"] == after["met"] and status["reached"] == pytest.approx(after["reached"], abs=1e-12)
    assert pruner.summary().params_after == masked_live


@pytest.mark.parametrize("mode", ["progressive", "masks until the end", "guarded"])
def test_a_steps_removed_connections_are_the_zeros_compaction_leaves(mode):
    """A step that removes units and masks connections: the connections it reports are the zero weights
    left once its units are gone (one masked inside a removed unit goes with the unit), counted a second
    way from the compacted model's weights."""
    model, opt = pretrained()
    kw = dict(total_steps=len(batches(0)), prune_every=8, prune_until=0.6, from_weights=True, target_params=0.5)
    kw |= dict(round_to=1, threshold=0.5, progressive=mode != "masks until the end")
    if mode == "guarded":
        kw |= dict(max_drop=1.0, evaluate=lambda m: 0.9, guard_recovery=0)
    pruner = Pruner(model, X[:2], opt, **kw)
    assert pruner.schedule.points == (8,) and pruner.masks.zeros() == 0
    reports = [r for idx in batches(0) if (r := train_step(model, opt, idx, pruner)) is not None]
    (report,) = [r for r in reports if r.removed_units]
    pruner.finalize()
    weights = [model.c1.weight, model.c2.weight, model.fc.weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert report.removed_connections == zeros == pruner.masks.zeros() > 0


def test_a_step_under_the_guards_trial_counts_the_parameters_its_compaction_leaves():
    evaluate, _ = scripted([0.90, 0.90, 0.90])  # the reference, the model before the step, the try: kept
    pruner, report = first_point(evaluate, guard_recovery=2)
    assert pruner.trial is not None and pruner.removed  # masked, training on
    masked_live = pruner.live_params()
    model, opt = pruner.model, pruner.optimizer
    for idx in batches(0)[8:10]:
        train_step(model, opt, idx, pruner)
    assert pruner.trial is None and pruner.guard.events[-1]["action"] == "kept" and not pruner.removed
    zeros = sum(int((p == 0).sum()) for p in model.parameters())  # the connections still masked
    assert zeros == pruner.masks.zeros() and count(model) - zeros == masked_live == pruner.live_params()
    assert pruner.guard.events[-1]["params_alive"] == masked_live


def test_the_stop_sentence_says_how_many_steps_the_last_try_really_trained():
    """R = 3, one pruning point at step 8 of 16: the tries are judged at 11, 14, then 16 (the run's end:
    2 steps) and at once; the stop sentence says the last try's steps, not R."""
    calls = []

    def evaluate(m):  # the reference 1.0, then every model scores 0.5: each try is refused
        calls.append(m)
        return 1.0 if len(calls) == 1 else 0.5

    model, opt = pretrained()
    pruner = Pruner(
        model, X[:2], opt, total_steps=len(batches(0)), prune_every=8, from_weights=True, target_params=0.2,
        round_to=1, min_width=1, max_drop=1.0, evaluate=evaluate, guard_recovery=3,
    )  # fmt: skip
    for idx in batches(0):
        train_step(model, opt, idx, pruner)
    pruner.end_epoch()
    pruner.finalize()
    g = pruner.guard
    tries = [e for e in g.events if e["action"] == "rolled back"]
    assert g.stopped and [e["recovery_steps"] for e in tries][:3] == [3, 3, 2]  # the third clamped at step 16
    last = tries[-1]["recovery_steps"]
    assert last < 3 and g.stopped["recovery_steps"] == last
    reason = pruner.budget_status()["reasons"][0]
    said = f" after {last} step(s) of training" if last else ""
    assert f"left validation accuracy 0.5000{said}," in reason and "after 3 step(s)" not in reason
    assert g.to_dict()["shortened"] == sum(e["recovery_steps"] < 3 for e in tries) >= 2
    line = str(pruner.summary())
    assert f"pruning stopped at step 8 (its last try judged after {last} step(s) of training)" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_trials_snapshot_is_held_on_the_cpu_and_restores_exactly_on_the_device():
    model, opt = pretrained()
    model.cuda()
    opt.load_state_dict(opt.state_dict())  # Adam's moments follow the parameters to the device
    pruner = Pruner(model, X[:2].cuda(), opt, total_steps=16, prune_every=8, max_drop=1.0, evaluate=lambda m: 0.9)
    before = state_of(model, opt)
    snap = pruner._snapshot()
    opt_tensors = [v for s in snap["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v)]
    assert opt_tensors and all(t.device.type == "cpu" for t in [*snap["model"].values(), *opt_tensors])
    for idx in batches(0)[:2]:  # training changes the weights and the moments on the device
        loss = F.cross_entropy(model(X[idx].cuda()), Y[idx].cuda())
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruner._restore(snap)
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(v.device.type == "cuda" for s in opt.state.values() for k, v in s.items() if k != "step")
    assert_same_state(state_of(model, opt), before)


# --- pruning points that a judgement falls on ----------------------------------------------------


def twenty_steps(cut: int | None = None, evaluate=None, **kw):
    """A guarded 20-step fine-tune in a user's loop (auto R); points 2, 3, 5, 6, 7, 9, 10, 12, 13, 14 (gaps
    of 1 step put a judgement on the next point). At step `cut` everything is saved and the run goes on
    with new objects built from it. Returns the model and the pruner."""
    model, opt = pretrained()
    kw = dict(
        total_steps=20, from_weights=True, target_params=0.05, round_to=1, min_width=1, max_drop=100.0,
        evaluate=evaluate or accuracy, **kw,
    )  # fmt: skip
    pruner = Pruner(model, X[:2], opt, **kw)
    for step, idx in enumerate(batches(0) + batches(1)[:4], start=1):
        train_step(model, opt, idx, pruner)
        if step == cut:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "pruner": pruner.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=True)
            model = copy.deepcopy(model)
            model.load_state_dict(saved["model"])
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            opt.load_state_dict(saved["opt"])
            pruner = Pruner(model, X[:2], opt, **kw)
            pruner.load_state_dict(saved["pruner"])
            pruner.saved_deferred = pruner._deferred
    pruner.end_epoch()
    pruner.finalize()
    return model, pruner


def point_of(event) -> str:
    """The schedule's point an event belongs to ("step 4 (deferred from step 3)" belongs to step 3's)."""
    at = event["at"]
    return at.split("(deferred from ")[1].rstrip(")") if "deferred from" in at else at


def test_no_pruning_point_is_lost_to_a_judgement_that_falls_on_it():
    model, pruner = twenty_steps()
    s, g = pruner.schedule, pruner.guard
    assert s.points == (2, 3, 5, 6, 7, 9, 10, 12, 13, 14) and g.recovery_steps == 1
    events = g.events[1:]
    # every point of the schedule, up to the one whose step met the budget, tried a step or says why not
    met_at = int(point_of([e for e in events if e["action"] == "kept"][-1]).split()[1])
    assert pruner.budget_reached and met_at >= 10
    assert {point_of(e) for e in events} == {f"step {p}" for p in s.points if p <= met_at}
    passed = [e for e in events if e["action"] == "passed"]
    deferred = [e for e in passed if e["why"].startswith("deferred: scores restart after the step judged here")]
    assert passed and deferred and all(e["why"] for e in passed)
    # a point a judgement fell on prunes one step later (after max(1, R) steps of scores), unless the next
    # point comes first and takes it up
    tried = [e for e in events if e["action"] in ("kept", "rolled back")]
    later = [e for e in tried if "deferred from" in e["at"]]
    assert later, [e["at"] for e in events]
    for e in later:
        point = int(point_of(e).split()[1])
        assert e["at"].startswith(f"step {point + 1} ") and point + 1 not in s.points
    for e in passed:
        if e["why"].startswith("deferred, then taken up"):
            assert int(e["why"].split("at step ")[1]) in s.points
    assert pruner.ended_by is not None and pruner.trial is None and pruner._deferred is None
    assert g.counts()["kept"] == len([e for e in tried if e["action"] == "kept"])


def test_a_run_saved_while_a_point_is_carried_forward_resumes_exactly():
    whole, p1 = twenty_steps()
    resumed, p2 = twenty_steps(cut=3)  # point 3: the step from point 2 judged there, point 3 carried forward
    assert p2.saved_deferred is not None and p2.saved_deferred["at"] == "step 3" and p2.saved_deferred["due"] == 4
    assert p2.guard.to_dict() | {"seconds": 0} == p1.guard.to_dict() | {"seconds": 0}
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_auto_recovery_judges_a_step_before_the_next_point_whenever_the_gap_allows():
    for gap in range(2, 50):
        assert 1 <= guards.auto_recovery(gap) <= gap // 2  # at most half of the shortest gap, so of every gap
    # epoch-end schedules keep a quarter of an epoch
    assert guards.auto_recovery(PruneSchedule(epochs=10, warmup_epochs=2, steps_per_epoch=40).point_gap) == 10
