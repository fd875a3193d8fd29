"""A run directory survives any crash: a real `edgeprune train` killed with SIGKILL inside an epoch and
at each write resumes to the weights and history of an uninterrupted run; torn lines are tolerated."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgeprune import faults
from edgeprune.cli import app
from edgeprune.errors import UserError
from edgeprune.run import RunDir, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
EDGEPRUNE = Path(sys.executable).with_name("edgeprune")
TIMING = {"seconds", "train_seconds", "guard_seconds"}  # wall-clock fields: the only ones a resume may change
STEPS = 6  # per epoch: --limit 200 less the 10% validation share, in batches of 32


def train_args(data_root: Path, out: Path) -> list[str]:
    # the default CNN; epochs 2 and 3 prune (cubic ramp to 30%), epoch 4 fine-tunes
    return [
        "train", "--dataset", "mnist", "--data-dir", str(data_root), "--out", str(out),
        "--epochs", "4", "--warmup-epochs", "1", "--prune-until", "0.75", "--target-params", "0.3",
        "--limit", "200", "--batch-size", "32", "--threads", "1", "--device", "cpu",
    ]  # fmt: skip


def edgeprune(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh process, importing this checkout."""
    assert EDGEPRUNE.exists(), f"no {EDGEPRUNE}: install the package (pip install -e '.[train,dev]')"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    return subprocess.run([str(EDGEPRUNE), *args], env=env, capture_output=True, text=True, timeout=300)


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical final weights and the same history and metrics, timing aside."""
    ma, mb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    assert ma["arch"] == mb["arch"] and ma["params"] == mb["params"]
    assert ma["state_dict"].keys() == mb["state_dict"].keys()
    for k in ma["state_dict"]:
        assert torch.equal(ma["state_dict"][k], mb["state_dict"][k]), k
    assert untimed(read_jsonl(RunDir(a).history)) == untimed(read_jsonl(RunDir(b).history))
    assert untimed([json.loads((a / "metrics.json").read_text())]) == untimed(
        [json.loads((b / "metrics.json").read_text())]
    )


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory) -> Path:
    """The uninterrupted run (in this process: the same code and flags, one thread, so the same numbers)."""
    out = tmp_path_factory.mktemp("crash") / "reference"
    r = CliRunner().invoke(app, train_args(data_root, out))
    assert r.exit_code == 0, r.output
    return out


def checkpoint_epoch(run: RunDir) -> int:
    return torch.load(run.checkpoint, weights_only=True)["epoch"] if run.checkpoint.exists() else 0


def history_epochs(run: RunDir) -> list[int]:
    """Epochs of the complete lines of history.jsonl, read without the tolerant reader."""
    if not run.history.exists():
        return []
    return [json.loads(line)["epoch"] for line in run.history.read_text().splitlines(keepends=True) if "\n" in line]


# Each kill, in the order one run meets them, with what it leaves on disk: (checkpoint's epoch, complete
# history lines). Each run after the first resumes what the kill before it left, so every state below
# is also one that a resume starts from.
KILLS = [
    (f"step:{STEPS // 2}", 0, []),  # inside epoch 1, no checkpoint yet: the resume starts afresh
    ("before-checkpoint:2", 1, [1]),  # epoch 2 (pruning) scored, compacted and evaluated, none of it written
    ("mid-checkpoint:2", 1, [1]),  # half of the new checkpoint in a temporary file
    ("after-checkpoint:2", 2, [1]),  # the checkpoint is one epoch ahead of history.jsonl
    ("mid-history:3", 3, [1, 2]),  # a torn line for epoch 3
    ("before-model:4", 4, [1, 2, 3, 4]),  # trained to the end; model.pt and metrics.json not written
]


def test_a_run_killed_at_every_point_resumes_to_the_uninterrupted_result(data_root, tmp_path, reference):
    out = tmp_path / "killed"
    run = RunDir(out)
    args = train_args(data_root, out)
    previous = None
    for i, (fault, ckpt_epoch, lines) in enumerate(KILLS):
        p = edgeprune(args + (["--resume"] if i else []), fault=fault)
        assert p.returncode == -signal.SIGKILL, f"{fault}: exit {p.returncode}\n{p.stderr}"
        assert "Traceback" not in p.stdout + p.stderr, fault
        assert (checkpoint_epoch(run), history_epochs(run)) == (ckpt_epoch, lines), fault
        assert bool(run.partial_writes()) == fault.startswith("mid-checkpoint"), fault
        assert not run.model.exists() and not run.metrics.exists(), fault
        if fault.startswith("mid-history"):
            assert not run.history.read_text().endswith("\n")  # the torn line is there
        if previous == "mid-history:3":  # this run resumed from the torn line
            assert "dropped a torn last line" in p.stderr
        if previous == "after-checkpoint:2":
            assert "rewrote its 2 epoch(s) from the checkpoint" in p.stdout
        previous = fault

    # The torn-line case once more, by hand, then the last resume runs to the end.
    with open(run.history, "a") as f:
        f.write('{"epoch": 5, "phase": "fine')
    p = edgeprune(args + ["--resume"])
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert [line for line in p.stderr.splitlines() if line.strip()] == [
        f"warning: {run.history}: dropped a torn last line (a write cut short by a crash): "
        + repr('{"epoch": 5, "phase": "fine')
    ]
    assert not run.partial_writes()
    assert_same_run(reference, out)


def test_read_jsonl_drops_a_torn_last_line_with_a_warning(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert "dropped a torn last line" in capsys.readouterr().err
    path.write_text('{"epoch": 1}\n{"epoch": 2}')  # a last line missing only its newline is complete
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("text", ['{"epoch": 1}\n{"epo\n{"epoch": 3}\n', '{"epoch": 1}\n{"epo\n'])
def test_read_jsonl_refuses_a_corrupt_line_that_no_crash_leaves(tmp_path, text):
    path = tmp_path / "h.jsonl"
    path.write_text(text)  # a crash tears only the last line, and a torn line has no newline
    with pytest.raises(UserError, match="line 2 is not valid JSON .* delete that line"):
        read_jsonl(path)


def test_resume_rewrites_a_history_corrupt_in_the_middle_from_the_checkpoint(data_root, tmp_path, reference):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    lines = RunDir(out).history.read_text().splitlines()
    lines[1] = lines[1][:20]
    RunDir(out).history.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(app, train_args(data_root, out) + ["--resume"])
    assert r.exit_code == 0, r.output
    assert "rewrote its 4 epoch(s) from the checkpoint" in r.output
    assert_same_run(reference, out)


def test_a_checkpoint_without_history_resumes_from_the_history_file(data_root, tmp_path, reference):
    out = tmp_path / "old"
    shutil.copytree(reference, out)
    run = RunDir(out)
    ckpt = torch.load(run.checkpoint, weights_only=True)
    del ckpt["history"]  # as written before the history travelled inside the checkpoint
    torch.save(ckpt, run.checkpoint)
    run.metrics.unlink()
    r = CliRunner().invoke(app, train_args(data_root, out) + ["--resume"])
    assert r.exit_code == 0, r.output
    assert_same_run(reference, out)


def test_fault_points_are_named_and_checked(monkeypatch):
    monkeypatch.setenv(faults.ENV, "mid-history:3")
    assert faults.armed() == ("mid-history", 3)
    faults.crash("mid-history", 2)  # another epoch: nothing happens
    faults.crash("mid-checkpoint", 3)
    monkeypatch.setenv(faults.ENV, "torn:3")
    with pytest.raises(UserError, match="EDGEPRUNE_FAULT must be <point>:<n>"):
        faults.armed()


DROPPING = '{"embed_dim": 16, "hidden": [[8, 8]], "dropout": 0.3, "word_dropout": 0.3}'


def test_a_resumed_run_draws_the_same_dropout_as_an_uninterrupted_one(data_root, tmp_path):
    """Word dropout and dropout draw from torch's global generator; its state travels in the checkpoint."""
    args = [
        "train", "--dataset", "sst2", "--data-dir", str(data_root), "--epochs", "3", "--warmup-epochs", "1",
        "--target-params", "0.5", "--limit", "200", "--batch-size", "32", "--threads", "1", "--device", "cpu",
        "--vocab-size", "200", "--model-kwargs", DROPPING,
    ]  # fmt: skip
    ref = edgeprune([*args, "--out", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr
    crashed = edgeprune([*args, "--out", str(tmp_path / "cut")], fault="before-checkpoint:3")
    assert crashed.returncode != 0 and checkpoint_epoch(RunDir(tmp_path / "cut")) == 2
    resumed = edgeprune([*args, "--out", str(tmp_path / "cut"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "ref", tmp_path / "cut")
