"""A budget the run cannot meet is never silent: the API warns when it is known (a BudgetWarning at
Pruner construction), `summary()`, `train`'s output and metrics.json, the report and `experiment`
say whether it was met. Expected fractions are counted by hand from the layers' geometry here
(MACs = in x out x k x k x output positions), not with edgeprune's cost model. The nothing-prunable
error through the real CLI is a row of tests/test_cli_errors.py."""

from __future__ import annotations

import json
import textwrap
import warnings

import pytest
import torch
from interrupted import train_interrupted
from torch import nn

from edgeprune import BudgetWarning, Pruner
from edgeprune.config import resolve_train_config
from edgeprune.errors import UserError
from edgeprune.report import build_report
from edgeprune.train import train_run

# Two tiny CNNs for 1x28x28 inputs: conv 1->16 (28x28), conv 16->16 stride 2 (14x14), Linear 16->classes.
# In `frozen` a cumulative sum over the channels (an op the tracer does not follow) freezes conv1's
# 16 channels; conv2's are prunable either way.
FACTORIES = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes, cumsum):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.fc = nn.Linear(16, num_classes)
        self.cumsum = cumsum

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        if self.cumsum:
            x = torch.cumsum(x, 1)
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def frozen(num_classes):
    return Net(num_classes, True)


def traceable(num_classes):
    return Net(num_classes, False)
"""

CONV1 = 1 * 16 * 9 * 28 * 28  # 112,896
CONV2 = 16 * 16 * 9 * 14 * 14  # 451,584 (its 16 output channels: 28,224 each)
FC = 16 * 10
DENSE = CONV1 + CONV2 + FC  # 564,640
# conv1 frozen (whole), conv2 at --min-width 8: the smallest model pruning can reach
FLOOR = (CONV1 + CONV2 // 2 + FC // 2) / DENSE  # 0.59997
FROZEN_SHARE = CONV1 / DENSE  # 19.99%: the MACs no prunable group resizes


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "budget_models.py"
    path.write_text(textwrap.dedent(FACTORIES))
    return path


def run_cfg(data_root, tmp_path, factories, factory, name="run", **kw):
    base = dict(
        dataset="mnist",
        data_dir=data_root,
        model=f"{factories}:{factory}",
        out=tmp_path / name,
        epochs=3,
        limit=200,
        batch_size=32,
        threads=1,
        device="cpu",
        round_to=8,
        min_width=8,
        max_accuracy_drop="none",  # budgets alone: the accuracy guard (on by default with a budget) has its own tests
    )
    return resolve_train_config(**{**base, **kw})


def metrics_of(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_an_unreachable_budget_warns_at_once_and_every_output_says_it_was_missed(
    data_root, tmp_path, factories, capsys
):
    c = run_cfg(data_root, tmp_path, factories, "frozen", target_macs=0.5)
    with pytest.warns(BudgetWarning) as caught:
        train_run(c)
    messages = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(messages) == 1, messages
    # the causes and the floor, in one sentence, before the first epoch
    assert messages[0].startswith("The MACs budget 0.50 cannot be met")
    assert f"keeps {FLOOR:.2f} of the dense model's MACs" in messages[0]
    assert "frozen: conv1 (torch.cumsum is not understood on a channel path)" in messages[0]
    assert f"{FROZEN_SHARE:.0%} of the MACs lie in layers no prunable group resizes" in messages[0]

    m = metrics_of(tmp_path / "run")
    assert m["baseline_macs"] == DENSE  # the hand count agrees with the cost model's
    assert m["budget_met"] is False and m["budget_measure"] == "macs"
    assert m["budget_target_fraction"] == 0.5
    # conv2 went down to its minimum width, so the run ends exactly at the floor
    assert m["budget_reached_fraction"] == pytest.approx(FLOOR, abs=1e-12)
    assert m["budget_reached_fraction"] == pytest.approx(m["macs"] / m["baseline_macs"], abs=1e-12)
    assert m["widths"]["conv2"] == 8
    # the frozen share is of the dense model's MACs, at the end as at the start
    assert any(r.startswith("frozen: conv1") and f"; {FROZEN_SHARE:.0%} of the MACs" in r for r in m["budget_reasons"])
    line = f"budget not met: MACs 0.50 asked, {FLOOR:.2f} reached — frozen: conv1"
    assert any(w.startswith(line) for w in m["warnings"]), m["warnings"]

    out = capsys.readouterr().out
    assert "done, budget not met" in out and line in " ".join(out.split())

    # the report: the run's line in the runs table and a note
    result, _ = build_report([tmp_path / "run"])
    assert result["runs"][0]["pruning"] == f"MACs x0.5 (preset compact), not met: {FLOOR:.2f} reached"
    assert any(n.startswith(f"run: {line}") for n in result["notes"]), result["notes"]


def test_a_met_budget_says_so(data_root, tmp_path, factories):
    c = run_cfg(data_root, tmp_path, factories, "traceable", target_macs=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)  # nothing to warn about
        m = train_run(c, quiet=True)
    assert m["budget_met"] is True and m["budget_reasons"] == []
    assert m["budget_reached_fraction"] == pytest.approx(m["macs"] / DENSE, abs=1e-12)
    assert m["budget_reached_fraction"] <= 0.7
    # counted a second way from the final widths
    c1, c2 = m["widths"]["conv1"], m["widths"]["conv2"]
    assert m["macs"] == c1 * 9 * 28 * 28 + c1 * c2 * 9 * 14 * 14 + c2 * 10
    assert not any("budget" in w for w in m["warnings"])
    result, _ = build_report([tmp_path / "run"])
    assert result["runs"][0]["pruning"] == "MACs x0.7 (preset compact)"
    assert not any("budget not met" in n for n in result["notes"])


def test_a_run_without_a_budget_has_no_budget_keys_set(data_root, tmp_path, factories):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        m = train_run(run_cfg(data_root, tmp_path, factories, "traceable", preset="study"), quiet=True)
    assert m["budget_met"] is None and m["budget_reached_fraction"] is None and m["budget_reasons"] is None


def test_a_schedule_with_no_pruning_epoch_warns_and_the_run_says_nothing_was_pruned(data_root, tmp_path, factories):
    # two epochs prune within the second one now; with --prune-until 0.5 the window ends where the warm-up does
    c = run_cfg(data_root, tmp_path, factories, "traceable", epochs=2, target_macs=0.5, prune_until=0.5)
    with pytest.warns(
        BudgetWarning, match=r"Nothing will be pruned: the schedule has no pruning step \(of 12 optimizer"
    ):
        m = train_run(c, quiet=True)
    assert m["budget_met"] is False and m["budget_reached_fraction"] == 1.0
    assert m["macs"] == DENSE
    assert [r.split(" (")[0] for r in m["budget_reasons"]] == ["the schedule has no pruning step"]


# --- the API ---------------------------------------------------------------------------------------


class Net(nn.Module):
    """The factories' model for 3x8x8 inputs, with a frozen first layer or not."""

    def __init__(self, cumsum=True, classes=10):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1)
        self.fc, self.cumsum = nn.Linear(32, classes), cumsum

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.cumsum(x, 1) if self.cumsum else x
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


X = torch.randn(2, 3, 8, 8)
SMALL = {"conv1": 3 * 16 * 9 * 64, "conv2": 16 * 32 * 9 * 64, "fc": 32 * 10}  # MACs per example


def pruner(model, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = Pruner(model, X, **{"epochs": 10, **kw})
    return p, [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]


def test_min_width_alone_makes_a_budget_unreachable():
    dense = sum(SMALL.values())
    # everything prunable; at --min-width 16 conv1 keeps 16 (all), conv2 16 of 32
    floor = (SMALL["conv1"] + SMALL["conv2"] // 2 + SMALL["fc"] // 2) / dense
    p, said = pruner(Net(cumsum=False), target_macs=0.4, min_width=16)
    assert len(said) == 1 and f"keeps {floor:.2f} of the dense model's MACs" in said[0]
    assert "--min-width 16 keeps every prunable layer at 16 channels or more" in said[0]
    assert "lower --min-width" in said[0] and "frozen" not in said[0]
    # at --min-width 8 the same budget is within reach: no warning
    assert pruner(Net(cumsum=False), target_macs=0.4, min_width=8)[1] == []
    # a parameter budget counts parameters: conv2 at 16 of 32 outputs
    params = {"conv1": 3 * 16 * 9 + 16, "conv2": 16 * 32 * 9 + 32, "fc": 32 * 10 + 10}
    floor_p = (params["conv1"] + 16 * 16 * 9 + 16 + 16 * 10 + 10) / sum(params.values())
    _, said = pruner(Net(cumsum=False), target_params=0.4, min_width=16)
    assert len(said) == 1 and said[0].startswith("The parameters budget 0.40 cannot be met")
    assert f"keeps {floor_p:.2f} of the dense model's parameters" in said[0]


def test_summary_names_the_miss_and_what_was_not_pruned():
    p, said = pruner(Net(), target_macs=0.2, epochs=2)
    assert len(said) == 2 and said[1].startswith("Nothing will be pruned")
    s = p.summary()
    assert s.budget["met"] is False and s.budget["reached"] == 1.0 and s.budget["target"] == 0.2
    assert s.nothing_pruned.startswith("the schedule has no pruning epoch")
    text = str(s)
    assert text.startswith("nothing was pruned: the schedule has no pruning epoch")
    assert "fewer" not in text and "(unchanged)" in text  # not an empty table and "1.00x fewer"
    assert "budget not met: MACs 0.20 asked, 1.00 reached — frozen: conv1" in text
    assert s.to_dict()["budget"] == s.budget


def test_summary_after_pruning_to_the_floor():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    p, said = pruner(model, target_macs=0.1, optimizer=opt, epochs=2, warmup_epochs=0, prune_until=0.5)
    assert len(said) == 1
    model(X).sum().backward()
    p.after_backward()
    p.end_epoch()
    p.end_epoch()
    p.finalize()
    s = p.summary()
    floor = (SMALL["conv1"] + SMALL["conv2"] // 4 + SMALL["fc"] // 4) / sum(SMALL.values())
    assert s.nothing_pruned is None and s.widths_after == {"conv2": 8}
    assert s.budget == {
        "measure": "macs",
        "target": 0.1,
        "reached": pytest.approx(floor, abs=1e-12),
        "met": False,
        "reasons": s.budget["reasons"],
    }
    assert s.budget["reasons"][0].startswith("frozen: conv1")
    assert f"budget not met: MACs 0.10 asked, {floor:.2f} reached" in str(s)


def test_nothing_prunable_with_a_budget_is_one_sentence():
    with pytest.raises(UserError, match=r"^--target-params 0.5 cannot be met: no channel of this Linear can be pruned"):
        Pruner(nn.Linear(4, 3), torch.randn(2, 4), epochs=5, target_params=0.5)

    class AllFrozen(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.cumsum(self.conv(x), 1).mean((2, 3)))

    with pytest.raises(UserError, match=r"no channel of this AllFrozen can be pruned \(frozen: conv \(torch.cumsum"):
        Pruner(AllFrozen(), X, epochs=5, target_macs=0.5)
    # without a budget it is allowed, and the summary says why nothing was pruned
    p, _ = pruner(AllFrozen())
    assert str(p.summary()).startswith("nothing was pruned: no channel can be pruned (frozen: conv (torch.cumsum")


def test_the_cli_prints_the_warning_as_one_line_before_training_and_the_miss_at_the_end(data_root, tmp_path, factories):
    from test_cli_errors import run_cli

    run = tmp_path / "cli"
    args = ["train", "--dataset", "mnist", "--data-dir", str(data_root), "--model", f"{factories}:frozen"]
    args += ["--epochs", "3", "--limit", "200", "--threads", "1", "--out", str(run), "--target-macs", "0.5"]
    args += ["--max-accuracy-drop", "none"]  # the budget's lines alone (see run_cfg)
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: The MACs budget 0.50 cannot be met"), r.stderr
    assert "Traceback" not in r.stderr and "BudgetWarning" not in r.stderr  # not Python's two-line format
    out = [line for line in r.stdout.splitlines() if line.strip()]
    done = next(i for i, line in enumerate(out) if line.startswith("done"))
    assert out[done].startswith("done, budget not met: test accuracy"), out
    line = f"warning: budget not met: MACs 0.50 asked, {FLOOR:.2f} reached — frozen: conv1"
    assert any(x.startswith(line) for x in out[done + 1 :]), out  # the final lines, after "done"
    assert metrics_of(run)["budget_met"] is False


def test_a_resumed_pruner_judges_the_budget_against_the_dense_model():
    """Rebuilt on the compacted model, a pruner's costs are the small model's until load_state_dict
    restores the dense ones; `train` warns only then (warn_budget), so a met budget stays quiet."""
    torch.manual_seed(0)
    model = Net(cumsum=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kw = dict(target_macs=0.6, min_width=16, optimizer=opt, epochs=2, warmup_epochs=0, prune_until=0.5)
    p, said = pruner(model, **kw)
    assert said == []  # floor 0.54 (conv1 16, conv2 16 of 32) is below 0.6
    model(X).sum().backward()
    p.after_backward()
    p.end_epoch()
    assert p.budget_status()["met"] and p.budget_status()["reached"] <= 0.6
    state = p.state_dict()

    resumed, said = pruner(model, **kw)  # the pruned model: its floor is most of it
    assert said and "cannot be met" in said[0]
    resumed.load_state_dict(state)
    assert resumed.budget_warnings() == [] and resumed.budget_status() == p.budget_status()


def test_a_resumed_run_warns_again_once(data_root, tmp_path, factories, monkeypatch):
    c = run_cfg(data_root, tmp_path, factories, "frozen", target_macs=0.5)
    with pytest.warns(BudgetWarning):  # stopped after the pruning epoch: the checkpoint holds the compacted model
        train_interrupted(monkeypatch, c, after_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = train_run(c, resume=True, quiet=True)
    said = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(said) == 1 and f"keeps {FLOOR:.2f} of the dense model's MACs" in said[0], said
    assert m["budget_met"] is False and m["budget_reached_fraction"] == pytest.approx(FLOOR, abs=1e-12)


def test_experiments_training_stage_says_the_budget_was_missed(data_root, tmp_path, factories):
    from edgeprune.experiment import train_stage

    c = run_cfg(data_root, tmp_path, factories, "frozen", target_macs=0.5)
    with pytest.warns(BudgetWarning):
        stage = train_stage(c, quiet=True)
    assert stage["detail"].endswith(f"params; budget not met: MACs 0.50 asked, {FLOOR:.2f} reached"), stage


def test_one_budget_object_says_how_far_and_in_what_unit():
    """The precedence (latency, else MACs, else parameters) and the words, as the report and
    `experiment` print them; the rule "met" and the latency fraction, computed by hand."""
    from edgeprune.config import TrainConfig
    from edgeprune.prune.budget import Budget

    assert Budget.from_targets() is None
    assert Budget.from_targets(target_params=0.1, target_macs=0.5) == Budget("macs", 0.5)
    assert Budget.from_targets(0.1, 0.5, 2, threads=4) == Budget("latency", 2.0, 4)
    assert Budget.from_config({"target_params": 0.25}) == Budget("params", 0.25)
    cfg = TrainConfig(dataset="mnist", model="cnn", epochs=2, batch_size=8, target_latency_ms=0.5, latency_threads=3)
    assert Budget.from_config(cfg) == Budget.from_config(cfg.to_dict()) == Budget("latency", 0.5, 3)
    words = {
        Budget("latency", 2.0): ("latency budget 2 ms at 1 thread(s)", "<= 2 ms"),
        Budget("macs", 0.5): ("MACs budget 0.5", "MACs x0.5"),
        Budget("params", 0.1): ("parameter budget 0.1", "params x0.1"),
    }
    for budget, (text, short) in words.items():
        assert (budget.text(), budget.short()) == (text, short)
    latency = Budget("latency", 2.0)
    assert latency.fraction(8.0) == 0.25 and latency.fraction(1.0) == 1.0  # a target above the dense model: 1
    assert latency.reached(2.0, 8.0) and not latency.reached(2.0 + 1e-9, 8.0)
    assert Budget("macs", 0.5).reached(50, 100) and not Budget("macs", 0.5).reached(51, 100)
    shapes = {"w": (4, 3), "b": (4,)}
    assert Budget("params", 0.5).measure(shapes, macs=None, latency=None) == 16.0
    assert Budget("params", 0.5).measure(shapes, macs=None, latency=None, params=9) == 9.0  # the live count
    assert Budget("macs", 0.5).measure(shapes, macs=lambda s: 7 * len(s), latency=None) == 14.0
    assert Budget("latency", 1.0).measure(shapes, macs=None, latency=lambda s: 0.125) == 0.125
