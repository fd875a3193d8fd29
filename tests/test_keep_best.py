"""--keep-best: a run finishes with the weights of its best-validation epoch among those at the final
widths, and keeps that choice across a crash and --resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_crash import assert_same_run, edgeprune

import edgeprune.train as train_mod
from edgeprune.config import resolve_train_config
from edgeprune.data.loader import load_data
from edgeprune.export.onnx_export import load_run_model
from edgeprune.train import train_run

EPOCHS, LAST_PRUNE = 5, 2  # --prune-until 0.4 of 5 epochs: epoch 2 prunes last, 2..5 are at the final widths
# validation accuracy and loss per epoch, scripted: epoch 1 (warm-up, wider than the final model)
# scores best but cannot be kept; epochs 3 and 5 tie on accuracy and epoch 3's lower loss wins
SCRIPTED_VAL = [0.9, 0.5, 0.7, 0.6, 0.7]
SCRIPTED_LOSS = [0.1, 0.9, 0.4, 0.5, 0.6]


def config(data_root, out, keep_best: bool, progressive: bool = True):
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
        progressive=progressive,
        max_accuracy_drop="none",  # the validation figures are scripted for --keep-best; no guard reads them
    )
    c.model_config = {"channels": [8, 16], "hidden": [32]}
    return c


@pytest.mark.parametrize("progressive", [True, False])
def test_keep_best_finishes_with_the_best_validation_epoch_at_final_widths(
    data_root, tmp_path, monkeypatch, progressive
):
    real = train_mod.evaluate

    def evaluate(model, data, split):  # the validation split scores as scripted; the test split is real
        out = real(model, data, split)
        if split is data.val:
            out = {**out, "accuracy": SCRIPTED_VAL[len(out_of_val)], "loss": SCRIPTED_LOSS[len(out_of_val)]}
            out_of_val.append(out["accuracy"])
        return out

    snapshots = {}  # every epoch's weights, taken as the epoch's checkpoint is written
    save_epoch = train_mod._Training.save_epoch

    def snapshot(self, partial):
        save_epoch(self, partial)
        snapshots[partial["epoch"]] = copy.deepcopy(self.model).eval()

    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    monkeypatch.setattr(train_mod._Training, "save_epoch", snapshot)
    out_of_val = []
    best = train_run(config(data_root, tmp_path / "best", keep_best=True, progressive=progressive), quiet=True)
    kept = dict(snapshots)
    out_of_val, snapshots = [], {}
    last = train_run(config(data_root, tmp_path / "last", keep_best=False, progressive=progressive), quiet=True)

    assert best["kept_epoch"] == 3 and last["kept_epoch"] == EPOCHS
    assert best["kept_by"].startswith("best validation") and last["kept_by"] == "last epoch"
    assert best["widths"] == last["widths"]
    for epoch in range(1, EPOCHS + 1):  # the two runs trained alike; only the weights they finish with differ
        a, b = kept[epoch].state_dict(), snapshots[epoch].state_dict()
        assert all(torch.equal(v, b[k]) for k, v in a.items()), epoch
    shipped = {name: load_run_model(tmp_path / name / "model.pt")[0] for name in ("best", "last")}
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # the shipped model computes what epoch 3's model computed (masked, when compaction waits for the end)
        torch.testing.assert_close(shipped["best"](x), kept[3](x), rtol=0, atol=1e-5)
        torch.testing.assert_close(shipped["last"](x), kept[EPOCHS](x), rtol=0, atol=1e-5)
        assert (shipped["best"](x) - shipped["last"](x)).abs().max() > 1e-3
    assert json.loads((tmp_path / "best" / "metrics.json").read_text())["kept_epoch"] == 3
    data = load_data("mnist", data_root, seed=0, limit=400, val_fraction=0.1)
    assert best["test_accuracy"] == pytest.approx(real(shipped["best"], data, data.test)["accuracy"], abs=1e-12)


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
