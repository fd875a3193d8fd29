"""--keep-best: a run finishes with the weights of its best-validation epoch among those at the final
widths, and keeps that choice across a crash and --resume."""

from __future__ import annotations

import json

import pytest
import torch
from test_crash import assert_same_run, edgeprune

import edgeprune.train as train_mod
from edgeprune.config import resolve_train_config
from edgeprune.train import train_run

EPOCHS, LAST_PRUNE = 5, 2  # --prune-until 0.4 of 5 epochs: epoch 2 prunes last, 2..5 are at the final widths
# validation accuracy per epoch, scripted: epoch 1 (warm-up, wider than the final model) scores best
# but cannot be kept; epochs 3 and 5 tie for the best of the rest and the first of equals is kept
SCRIPTED_VAL = [0.9, 0.5, 0.7, 0.6, 0.7]


def config(data_root, out, keep_best: bool):
    c = resolve_train_config(
        dataset="mnist",
        data_dir=data_root,
        out=out,
        epochs=EPOCHS,
        batch_size=32,
        warmup_epochs=1,
        prune_until=0.4,
        target_params=0.5,
        round_to=1,
        min_width=2,
        limit=400,
        threads=1,
        device="cpu",
        keep_best=keep_best,
    )
    c.model_config = {"channels": [8, 16], "hidden": [32]}
    return c


def test_keep_best_finishes_with_the_best_validation_epoch_at_final_widths(data_root, tmp_path, monkeypatch):
    real = train_mod.evaluate

    def evaluate(model, data, split):  # the validation split scores as scripted; the test split is real
        out = real(model, data, split)
        if split is data.val:
            out = {**out, "accuracy": SCRIPTED_VAL[len(out_of_val)]}
            out_of_val.append(out["accuracy"])
        return out

    snapshots = {}  # every epoch's weights, taken as the epoch's checkpoint is written
    save_epoch = train_mod._Training.save_epoch

    def snapshot(self, partial):
        save_epoch(self, partial)
        snapshots[partial["epoch"]] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    monkeypatch.setattr(train_mod._Training, "save_epoch", snapshot)
    out_of_val = []
    best = train_run(config(data_root, tmp_path / "best", keep_best=True), quiet=True)
    kept = dict(snapshots)
    out_of_val, snapshots = [], {}
    last = train_run(config(data_root, tmp_path / "last", keep_best=False), quiet=True)

    assert best["kept_epoch"] == 3 and last["kept_epoch"] == EPOCHS
    assert best["kept_by"].startswith("best validation") and last["kept_by"] == "last epoch"
    assert best["widths"] == last["widths"]
    for epoch in range(1, EPOCHS + 1):  # the two runs trained alike; only the weights they finish with differ
        assert all(torch.equal(v, snapshots[epoch][k]) for k, v in kept[epoch].items()), epoch
    shipped = {
        name: torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"] for name in ("best", "last")
    }
    for k, v in shipped["best"].items():
        assert torch.equal(v, kept[3][k]), k
        assert torch.equal(shipped["last"][k], kept[EPOCHS][k]), k
    assert any(not torch.equal(v, shipped["last"][k]) for k, v in shipped["best"].items())
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["kept_epoch"] == 3
    assert best["test_accuracy"] == pytest.approx(real_test_accuracy(data_root, shipped["best"], tmp_path), abs=1e-12)


def real_test_accuracy(data_root, state, tmp_path) -> float:
    """The kept weights' test accuracy, computed a second way from model.pt."""
    from edgeprune.data.loader import load_data
    from edgeprune.models import build_model

    saved = torch.load(tmp_path / "best" / "model.pt", weights_only=True)
    model = build_model(saved["arch"]).eval()
    model.load_state_dict(state)
    data = load_data("mnist", data_root, seed=0, limit=400, val_fraction=0.1)
    return train_mod.evaluate(model, data, data.test)["accuracy"]


def test_keep_best_survives_a_crash_and_resume(data_root, tmp_path):
    args = [
        "train", "--dataset", "mnist", "--data-dir", str(data_root), "--epochs", "4", "--warmup-epochs", "1",
        "--prune-until", "0.5", "--target-params", "0.5", "--limit", "200", "--batch-size", "32",
        "--threads", "1", "--device", "cpu", "--keep-best",
    ]  # fmt: skip
    ref = edgeprune([*args, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    crashed = edgeprune([*args, "--out", str(tmp_path / "cut")], fault="before-checkpoint:4")
    assert crashed.returncode != 0
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["best"]["epoch"] >= 2
    resumed = edgeprune([*args, "--out", str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "ref", tmp_path / "cut")
