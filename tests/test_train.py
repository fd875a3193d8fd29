"""Training end to end on small local data: loss goes down, resume is exact, pruning shrinks."""

import json

import pytest
import torch
from interrupted import train_interrupted
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.config import resolve_train_config
from edgeprune.train import train_run

runner = CliRunner()


def cfg(data_root, tmp_path, name="run", **kw):
    base = dict(
        dataset="mnist",
        data_dir=data_root,
        out=tmp_path / name,
        epochs=3,
        batch_size=32,
        model_config={"channels": [8, 16], "hidden": [32]},
        threads=1,
        device="cpu",
    )  # exact on CPU
    base.update(kw)
    model_config = base.pop("model_config")
    c = resolve_train_config(**base)
    c.model_config = model_config
    return c


def history(run):
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_baseline_training_lowers_the_loss_and_writes_the_run(data_root, tmp_path):
    c = cfg(data_root, tmp_path, prune=False)
    metrics = train_run(c, quiet=True)
    h = history(tmp_path / "run")
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert h[-1]["train_loss"] < h[0]["train_loss"] * 0.7
    assert metrics["test_accuracy"] > 0.8 and metrics["test_n"] == 200
    assert set(metrics) >= {"test_loss", "test_accuracy", "test_f1", "params", "train_seconds"}
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["epochs"] == 3 and saved["config"]["lr"] == 1e-3
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert model["arch"]["name"] == "cnn" and model["input"]["task"] == "image"


@pytest.mark.parametrize("prune,distill", [(False, None), (True, None), (True, 0.5)])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(data_root, tmp_path, monkeypatch, prune, distill):
    kw = dict(prune=prune, epochs=4, warmup_epochs=1, target_params=0.3 if prune else None, round_to=1, min_width=2)
    kw["distill"] = distill  # the interruption falls after the teacher's outputs were taken
    train_run(cfg(data_root, tmp_path, "full", **kw), quiet=True)
    train_interrupted(monkeypatch, cfg(data_root, tmp_path, "cut", **kw), after_epochs=2)
    assert len(history(tmp_path / "cut")) == 2
    train_run(cfg(data_root, tmp_path, "cut", **kw), resume=True, quiet=True)

    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert a["arch"] == b["arch"]
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    assert [r["epoch"] for r in history(tmp_path / "cut")] == [1, 2, 3, 4]


def test_pruning_shrinks_the_model_and_keeps_its_accuracy(data_root, tmp_path):
    base = train_run(cfg(data_root, tmp_path, "base", prune=False, epochs=4), quiet=True)
    pruned = train_run(
        cfg(
            data_root,
            tmp_path,
            "pruned",
            epochs=4,
            warmup_epochs=1,
            prune_until=0.75,
            target_params=0.25,
            min_width=4,
            round_to=4,
        ),
        quiet=True,
    )
    assert pruned["params"] <= 0.25 * base["params"]
    assert pruned["test_accuracy"] >= base["test_accuracy"] - 0.05
    h = history(tmp_path / "pruned")
    assert [r["phase"] for r in h] == ["warmup", "prune", "prune", "finetune"]
    assert all(set(r) >= {"widths", "params_alive", "connection_sparsity", "removed"} for r in h)
    model = torch.load(tmp_path / "pruned" / "model.pt", weights_only=True)
    # counted a second way: removed connections are exactly zero in the saved weights
    assert pruned["params"] == sum(int(torch.count_nonzero(v)) for v in model["state_dict"].values())
    assert h[-1]["params_alive"] == pruned["params"]  # the last epoch's line tells the final size
    # the dense size from the widths alone: 3x3 convs on 1 channel, two 2x2 pools (28 -> 7), 10 classes
    c0, c1, f0 = (pruned["widths"][k] for k in ("conv0", "conv1", "fc0"))
    assert pruned["dense_params"] == (9 * c0 + c0) + (9 * c0 * c1 + c1) + (49 * c1 * f0 + f0) + (10 * f0 + 10)
    assert all(w % 4 == 0 and w >= 4 for w in pruned["widths"].values())


def test_masks_until_end_compacts_once_at_the_end(data_root, tmp_path):
    m = train_run(
        cfg(
            data_root,
            tmp_path,
            "masks",
            epochs=3,
            warmup_epochs=1,
            prune_until=0.7,
            target_params=0.3,
            progressive=False,
            min_width=2,
            round_to=1,
        ),
        quiet=True,
    )
    h = history(tmp_path / "masks")
    assert h[-1]["widths"] == {"conv0": 8, "conv1": 16, "fc0": 32}  # still masked while training
    assert sum(m["widths"].values()) < 56  # physically smaller at the end
    assert m["params"] <= 0.3 * m["baseline_params"]


def test_epoch_lines_show_the_widths_and_a_missing_validation_split(data_root, tmp_path, capsys):
    metrics = train_run(cfg(data_root, tmp_path, limit=1, epochs=1, prune=False))  # 1 train, 0 validation
    assert metrics["test_n"] == 200 and history(tmp_path / "run")[0]["val_accuracy"] is None
    out = capsys.readouterr().out
    assert "val acc - macro-F1 -" in out and "[conv0=8 conv1=16 fc0=32]" in out


def test_bilstm_prunes_hidden_units_per_direction(data_root, tmp_path):
    c = resolve_train_config(
        dataset="sst2",
        data_dir=data_root,
        out=tmp_path / "lstm",
        epochs=4,
        batch_size=32,
        lr=0.01,
        vocab_size=200,
        max_len=24,
        target_params=0.25,
        warmup_epochs=1,
        round_to=1,
        min_width=2,
        threads=1,
        device="cpu",
        max_accuracy_drop="none",  # the budget alone, as before the guard was the default
    )
    c.model_config = {"embed_dim": 16, "hidden": [[16, 16]]}
    m = train_run(c, quiet=True)
    assert m["params"] <= 0.25 * m["baseline_params"]
    assert m["test_accuracy"] > 0.9
    assert m["widths"]["lstm0.fwd"] < 16 or m["widths"]["lstm0.bwd"] < 16
    assert (tmp_path / "lstm" / "vocab.json").exists()


def test_self_distillation_learns_from_the_model_at_the_end_of_the_warmup(data_root, tmp_path):
    from edgeprune.data.loader import load_data
    from edgeprune.models import build_model
    from edgeprune.train import logits_of

    kw = dict(epochs=3, warmup_epochs=1, target_params=0.3, round_to=1, min_width=2)
    distilled = train_run(cfg(data_root, tmp_path, "kd", distill=0.5, **kw), quiet=True)
    train_run(cfg(data_root, tmp_path, "plain", preset="study", **kw), quiet=True)
    warm = cfg(data_root, tmp_path, "warm", prune=False, epochs=1)  # the same first epoch
    train_run(warm, quiet=True)
    saved = torch.load(tmp_path / "warm" / "model.pt", weights_only=True)
    model = build_model(saved["arch"])
    model.load_state_dict(saved["state_dict"])
    data = load_data("mnist", data_root, seed=0)
    teacher = torch.load(tmp_path / "kd" / "checkpoint.pt", weights_only=True)["teacher_logits"]
    assert teacher.shape == (len(data.train), 10)
    torch.testing.assert_close(teacher, logits_of(model, data, data.train.x), rtol=0, atol=1e-5)
    assert torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["teacher_logits"] is None
    # the warm-up is shared; the distillation loss changes what the pruned run learns after it
    hk, hp = history(tmp_path / "kd"), history(tmp_path / "plain")
    assert hk[0]["train_loss"] == hp[0]["train_loss"] and hk[1]["train_loss"] != hp[1]["train_loss"]
    assert distilled["params"] <= 0.3 * distilled["baseline_params"]


def test_a_baseline_can_follow_the_pruned_runs_recipe(data_root, tmp_path):
    plain = cfg(data_root, tmp_path, "plain", prune=False, epochs=4, warmup_epochs=1)
    recipe = cfg(data_root, tmp_path, "recipe", prune=False, epochs=4, warmup_epochs=1, distill=0.5)
    recipe.finetune_lr = "cosine"
    a, b = train_run(plain, quiet=True), train_run(recipe, quiet=True)
    assert a["params"] == b["params"] == a["baseline_params"]  # nothing pruned
    ca = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "recipe" / "checkpoint.pt", weights_only=True)
    assert ca["teacher_logits"] is None and cb["teacher_logits"].shape[1] == 10
    assert ca["optimizer"]["param_groups"][0]["lr"] == 1e-3  # the study's constant rate
    from edgeprune.config import schedule_of

    expected = 1e-3 * schedule_of(recipe).lr_scale(4)
    assert cb["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected) and expected < 1e-3
    assert [r["phase"] for r in history(tmp_path / "recipe")] == ["train"] * 4


def test_a_preset_drops_its_distillation_where_it_cannot_apply(data_root, tmp_path):
    base = cfg(data_root, tmp_path, prune=False, preset="compact")  # a preset configures pruning only
    assert base.distill == 0.0 and base.finetune_lr == "constant" and base.target_params is None
    no_warmup = cfg(data_root, tmp_path, preset="compact", warmup_epochs=0)
    assert no_warmup.distill == 0.0 and no_warmup.target_params == 0.1
    assert cfg(data_root, tmp_path, preset="compact").distill == 0.5


@pytest.mark.parametrize(
    "args,match",
    [
        (["--epochs", "-1"], "--epochs must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--model", "bilstm"], "use --model cnn"),
        (["--model", "resnet"], "Unknown model 'resnet'"),
        (["--threshold", "2"], "--threshold must lie in"),
        (["--target-params", "3"], "--target-params must be a fraction"),
        (["--round-to", "0"], "--round-to must be 1"),
        (["--prune-until", "0"], "--prune-until must be a fraction"),
        (["--min-width", "0"], "--min-width must be at least 1"),
        (["--warmup-epochs", "-1"], "--warmup-epochs must be 0 or more"),
        (["--finetune-lr", "step"], "--finetune-lr must be constant or cosine"),
        (["--target-params", "0.2", "--target-macs", "0.5"], "Give one budget: --target-params, --target-macs or"),
        (["--preset", "tiny"], "Unknown preset"),
        (["--distill", "1.5"], "--distill must be a weight in [0, 1]"),
        (["--distill-temperature", "0"], "--distill-temperature must be positive"),
        (["--distill", "0.5", "--warmup-epochs", "0"], "use --warmup-epochs 1 or more"),
    ],
)
def test_bad_flags_get_one_clear_sentence(data_root, tmp_path, args, match):
    r = runner.invoke(
        app, ["train", "--dataset", "mnist", "--data-dir", str(data_root), "--out", str(tmp_path / "x"), *args]
    )
    assert r.exit_code == 2, r.output  # an exception under CliRunner would be exit code 1
    assert match in r.output


def test_unknown_dataset_and_offline_text_dataset(tmp_path):
    r = runner.invoke(app, ["train", "--dataset", "mnits", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "Did you mean 'mnist'" in r.output
    r = runner.invoke(app, ["train", "--dataset", "imdb", "--data-dir", str(tmp_path), "--out", str(tmp_path / "y")])
    assert r.exit_code == 3 and "was not found locally" in r.output


def test_run_directory_with_another_configuration(data_root, tmp_path):
    args = [
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(data_root),
        "--out",
        str(tmp_path / "r"),
        "--epochs",
        "1",
        "--limit",
        "100",
        "--no-prune",
        "--threads",
        "1",
    ]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args + ["--lr", "0.01"])
    assert r.exit_code == 2 and "different configuration (lr differ)" in r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--resume" in r.output
    config = tmp_path / "r" / "config.json"
    saved = json.loads(config.read_text())
    saved["run_format"] = 99
    config.write_text(json.dumps(saved))
    r = runner.invoke(app, args + ["--resume"])
    assert r.exit_code == 2 and "another edgeprune version" in r.output
