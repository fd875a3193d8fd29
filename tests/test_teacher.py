"""--teacher: a pruned fine-tune distils from a finished run, from the first step and without a
warm-up; its outputs are the teacher's, taken once; a teacher that cannot serve is refused."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from interrupted import train_interrupted

from edgeprune.data.loader import load_data
from edgeprune.errors import UserError
from edgeprune.rundir import load_run_model
from edgeprune.train import logits_of, train_run
from tests.test_train import cfg, history

PRUNE = dict(epochs=3, warmup_epochs=0, target_params=0.3, round_to=1, min_width=2, max_accuracy_drop="none")


@pytest.fixture(scope="module")
def dense(data_root, tmp_path_factory):
    """A small CNN fine-tuned dense on the MNIST-like data: the teacher."""
    out = tmp_path_factory.mktemp("teacher")
    train_run(cfg(data_root, out, "dense", prune=False, epochs=2), quiet=True)
    return out / "dense"


def test_a_pruned_run_distils_from_the_teacher_from_its_first_step(data_root, tmp_path, dense):
    taught = train_run(cfg(data_root, tmp_path, "taught", teacher=str(dense), **PRUNE), quiet=True)
    train_run(cfg(data_root, tmp_path, "plain", **PRUNE), quiet=True)
    # the outputs it learned from are the teacher's on this run's training examples (a second way:
    # the teacher's model file loaded on its own)
    model, _ = load_run_model(dense / "model.pt")
    data = load_data("mnist", data_root, seed=0)
    kept = torch.load(tmp_path / "taught" / "checkpoint.pt", weights_only=True)["teacher_logits"]
    assert kept.shape == (len(data.train), 10)
    torch.testing.assert_close(kept, logits_of(model, data, data.train.x), rtol=0, atol=1e-5)
    # no warm-up: the distillation loss is in the first epoch already (the same seed, the same batches)
    ht, hp = history(tmp_path / "taught"), history(tmp_path / "plain")
    assert ht[0]["phase"] == hp[0]["phase"] == "prune"
    assert abs(ht[0]["train_loss"] - hp[0]["train_loss"]) > 1e-3
    assert taught["params"] <= 0.3 * taught["baseline_params"] and taught["budget_met"]
    saved = json.loads((tmp_path / "taught" / "config.json").read_text())["config"]
    assert saved["teacher"] == str((dense / "model.pt").resolve()) and saved["distill"] == 0.5
    assert any("distilling from the teacher" in n for n in taught["notes"])
    assert not any("another split" in n for n in taught["notes"])  # the same data, seed and split


def test_a_teacher_run_resumes_exactly_after_its_teacher_moved(data_root, tmp_path, dense, monkeypatch):
    teacher = tmp_path / "teacher"
    shutil.copytree(dense, teacher)
    kw = dict(PRUNE, epochs=3, teacher=str(teacher))
    train_run(cfg(data_root, tmp_path, "full", **kw), quiet=True)
    train_interrupted(monkeypatch, cfg(data_root, tmp_path, "cut", **kw), after_epochs=1)
    # the teacher moves away: the resumed run needs only its checkpoint's copy of the outputs
    teacher.rename(tmp_path / "moved")
    train_run(cfg(data_root, tmp_path, "cut", **kw), resume=True, quiet=True)
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_a_run_without_a_teacher_does_not_resume_with_one(data_root, tmp_path, dense, monkeypatch):
    kw = dict(PRUNE, epochs=3)
    train_interrupted(monkeypatch, cfg(data_root, tmp_path, "plain", **kw), after_epochs=1)
    with pytest.raises(UserError, match="teacher"):
        train_run(cfg(data_root, tmp_path, "plain", teacher=str(dense), **kw), resume=True, quiet=True)


def test_a_teacher_on_another_split_is_said(data_root, tmp_path, dense):
    c = cfg(data_root, tmp_path, "seed1", teacher=str(dense), seed=1, **PRUNE)
    assert any("the teacher trained on another split (seed 0, this run 1)" in n for n in c.notes)


def _train(data_root, out, *args):
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", "train", "--data-dir", str(data_root), "--out", str(out), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args,match",
    [
        (["--dataset", "mnist", "--teacher", "{missing}"], "has no model.pt; pass a finished run's directory"),
        (["--dataset", "mnist", "--teacher", "{dense}", "--distill", "0"], "--distill 0 turns that off"),
        (["--dataset", "sst2", "--teacher", "{dense}"], "reads other inputs than this run (task 'image' there"),
        (
            ["--dataset", "sst2", "--vocab-size", "20", "--teacher", "{text}"],
            "reads other inputs than this run (vocab_sha256",
        ),
    ],
)
def test_a_teacher_that_cannot_serve_is_refused(data_root, tmp_path, dense, text_teacher, args, match):
    args = [a.format(missing=tmp_path / "nowhere", dense=dense, text=text_teacher) for a in args]
    r = _train(data_root, tmp_path / "x", *args, "--epochs", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    said = " ".join((r.stdout + r.stderr).split())
    assert match in said and "Traceback" not in said
    assert not (tmp_path / "x").exists()  # nothing written


@pytest.fixture(scope="module")
def text_teacher(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    train_run(
        cfg(data_root, out, "t", dataset="sst2", prune=False, epochs=1, model="bilstm", model_config={}), quiet=True
    )
    return out / "t"
