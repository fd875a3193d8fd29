"""The machine says no: full disks, read-only folders, non-finite numbers, runaway workers, library errors
and refusals whose advice must never lose work, through the installed `edgeprune` entry point.

Every refusal is exactly one line on stderr ("error: ..."), exit code 2, no traceback, and the files
that were there before are byte-identical after. A full disk is a small tmpfs, a read-only folder a
tmpfs remounted read-only (root ignores chmod's bits) and an unchangeable one `chattr +i`; each is
skipped with the reason where the platform does not allow it. Then the advice of each refusal is
followed, and what was saved before is still there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from bundle_fixture import make_tiny_bundle
from own_datafiles import write_image_folder
from test_cli_errors import EDGEPRUNE, REPO, run_cli

TRAIN = ["train", "--dataset", "mnist", "--limit", "100", "--no-prune", "--threads", "1"]
FAST_BENCH = ["--runs", "5", "--rounds", "2", "--warmup", "1"]
CHECKPOINT_MB = 6  # the CNN's checkpoint.pt on these runs is about 5 MB (weights and Adam's two moments)


# --- the machine ----------------------------------------------------------------------------------


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(where: Path, size_mb: int):
    """A small file system of its own at `where`; skipped where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    r = _sh("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root in a VM or container")
    try:
        yield where
    finally:
        _sh("umount", "-l", str(where))


def remount(where: Path, mode: str) -> None:
    r = _sh("mount", "-o", f"remount,{mode}", str(where))
    if r.returncode != 0:
        pytest.skip(f"cannot remount {where} {mode} ({r.stderr.strip()})")


def fill(where: Path, leave_mb: float) -> Path:
    """A filler file that leaves about `leave_mb` free on the file system of `where`."""
    free = shutil.disk_usage(where).free - int(leave_mb * 2**20)
    filler = where / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free, 0))
    return filler


@contextlib.contextmanager
def immutable(path: Path):
    """`chattr +i`: nobody, root included, may add, remove or rename entries (EPERM)."""
    r = _sh("chattr", "+i", str(path))
    if r.returncode != 0:
        pytest.skip(f"chattr +i is not allowed on {path} ({r.stderr.strip()})")
    try:
        yield path
    finally:
        _sh("chattr", "-i", str(path))


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (hidden ones too), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "filler.bin"
    }


def one_sentence(r: subprocess.CompletedProcess, *says: str, code: int = 2) -> str:
    output = r.stdout + r.stderr
    assert "Traceback" not in output, output
    assert r.returncode == code, output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for phrase in says:
        assert phrase in lines[0], lines[0]
    return lines[0]


def cli(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    with _env(**env):
        return run_cli([str(a) for a in args], cwd)


@contextlib.contextmanager
def _env(**env):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


# --- runs the cases start from --------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root) -> dict[str, Path]:
    """A run killed after epoch 1 of 2, and a finished one; both made by the real command."""
    w = tmp_path_factory.mktemp("machine")
    flags = [*TRAIN, "--data-dir", data_root, "--epochs", "2"]
    killed = cli([*flags, "--out", w / "killed"], w, EDGEPRUNE_FAULT="before-checkpoint:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = cli([*flags, "--out", w / "done"], w)
    assert done.returncode == 0, done.stderr
    return {"w": w, "killed": w / "killed", "done": w / "done", "flags": flags}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- 1. operating-system errors: one sentence, nothing changed ------------------------------------


def test_train_on_a_full_disk_keeps_the_checkpoint_and_resumes_once_space_is_freed(runs, tmp_path):
    with tmpfs(tmp_path / "disk", 4 * CHECKPOINT_MB) as disk:
        run = copy_run(runs["killed"], disk / "run")
        filler = fill(disk, leave_mb=CHECKPOINT_MB / 2)  # epoch 2's checkpoint does not fit
        before = snapshot(run)
        r = cli([*runs["flags"], "--out", run, "--resume"], tmp_path)
        one_sentence(r, "no space is left on the device holding", str(run / "checkpoint.pt"), "free some space")
        assert snapshot(run) == before  # no partial file left, the epoch-1 checkpoint untouched
        filler.unlink()  # the advice: free some space, then the same command continues
        r = cli([*runs["flags"], "--out", run, "--resume"], tmp_path)
        assert r.returncode == 0, r.stderr
        assert "resuming" in r.stdout and "at epoch 2/2" in r.stdout
        assert untimed(history(run)) == untimed(history(runs["done"]))  # as if never interrupted


def test_train_into_or_under_a_read_only_folder_is_one_sentence(runs, tmp_path):
    with tmpfs(tmp_path / "ro", 4 * CHECKPOINT_MB) as ro:
        run = copy_run(runs["killed"], ro / "run")
        remount(ro, "ro")
        before = snapshot(ro)
        for out, resume in ((ro / "new", []), (ro / "run" / "sub" / "new", []), (run, ["--resume"])):
            r = cli([*runs["flags"], "--out", out, *resume], tmp_path)
            one_sentence(r, "is on a read-only file system", "remount it read-write")
        assert snapshot(ro) == before
        remount(ro, "rw")  # the advice: remount it read-write; the killed run then continues
        r = cli([*runs["flags"], "--out", run, "--resume"], tmp_path)
        assert r.returncode == 0, r.stderr
        assert untimed(history(run)) == untimed(history(runs["done"]))


def test_export_on_a_full_disk_and_into_a_read_only_run_leaves_the_run_as_it_was(runs, tmp_path):
    with tmpfs(tmp_path / "disk", 4 * CHECKPOINT_MB) as disk:
        run = copy_run(runs["done"], disk / "run")
        filler = fill(disk, leave_mb=0.5)
        before = snapshot(run)
        r = cli(["export", run, "--quantize", "none"], tmp_path)
        one_sentence(r, "no space is left on the device holding", str(run), "free some space")
        assert snapshot(run) == before  # the staging folders were removed
        filler.unlink()
        remount(disk, "ro")
        r = cli(["export", run, "--quantize", "none"], tmp_path)
        one_sentence(r, f"{run / 'export'} is on a read-only file system")
        assert snapshot(run) == before
        remount(disk, "rw")  # the advice followed: the export is written
        r = cli(["export", run, "--quantize", "none"], tmp_path)
        assert r.returncode == 0, r.stderr
        assert (run / "bundle" / "model.onnx").is_file()
        assert {k: v for k, v in snapshot(run).items() if k in before} == before


def test_bench_into_a_read_only_run_prints_its_timings_then_one_sentence(tmp_path):
    with tmpfs(tmp_path / "ro", 8) as ro:
        (ro / "run").mkdir()
        (ro / "run" / "config.json").write_text("{}\n")  # bench sees a bundle inside a run directory
        make_tiny_bundle(ro / "run" / "bundle")
        remount(ro, "ro")
        before = snapshot(ro)
        r = cli(["bench", ro / "run" / "bundle", *FAST_BENCH], tmp_path)
        one_sentence(r, f"{ro / 'run' / 'bench'} is on a read-only file system")
        assert "run/float" in r.stdout and "p50" in r.stdout  # the timings were printed, not lost
        assert snapshot(ro) == before
        r = cli(["bench", ro / "run" / "bundle", *FAST_BENCH, "--json", tmp_path / "b.json"], tmp_path)
        assert r.returncode == 2 and json.loads((tmp_path / "b.json").read_text())["results"][0]["status"] == "ok"


def test_an_unchangeable_folder_and_a_too_long_name_are_one_sentence(runs, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    (parent / "keep.txt").write_text("kept\n")
    long_name = tmp_path / ("a" * 300)
    r = cli([*runs["flags"], "--out", long_name], tmp_path)
    one_sentence(r, "is too long for its file system", "choose a shorter path")
    with immutable(parent):
        before = snapshot(parent)
        r = cli([*runs["flags"], "--out", parent / "run"], tmp_path)
        one_sentence(r, f"changing {parent / 'run'}", "make", "writable")
        r = cli(["report", runs["done"], "--out", parent], tmp_path)
        one_sentence(r, f"changing {parent}/report", f"make {parent} writable")  # its first file, a figure
        assert snapshot(parent) == before


# --- 2. non-finite numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--dataset", "mnist", "--lr", "nan"],
        ["train", "--dataset", "mnist", "--lr", "inf"],
        ["train", "--dataset", "mnist", "--target-params", "-inf"],
        ["bench", "x.onnx", "--seconds", "inf"],
        ["bench", "x.onnx", "--timeout", "nan"],
        ["export", "run", "--max-acc-drop", "nan"],
        ["experiment", "-d", "mnist", "--target-macs", "nan"],
        ["datasets", "--test-fraction", "inf"],
    ],
    ids=lambda a: f"{a[0]}{a[-2]}-{a[-1]}",
)
def test_a_non_finite_number_is_refused_by_the_real_command(args, tmp_path):
    flag, value = args[-2], args[-1]
    one_sentence(cli(args, tmp_path), f"{flag} must be a finite number, not {value}", "See 'edgeprune")


def _float_options():
    """(command, flag) for every float option of every command, read from the app itself."""
    import typing

    import typer.main

    from edgeprune.cli import app

    out = []
    for name, command in typer.main.get_command(app).commands.items():
        for p in command.params:
            annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            kind = getattr(getattr(p, "type", None), "name", None)
            floats = annotation is float or float in typing.get_args(annotation) or kind == "float"
            if floats and p.opts and p.opts[0].startswith("--"):
                out.append((name, p.opts[0]))
    return out


def test_every_float_option_of_every_command_refuses_nan_and_infinity(tmp_path):
    from typer.testing import CliRunner

    from edgeprune.cli import app

    options = _float_options()
    assert {
        ("train", "--lr"),
        ("bench", "--seconds"),
        ("export", "--max-acc-drop"),
        ("datasets", "--test-fraction"),
    } <= set(options)
    for command, flag in options:
        for value in ("nan", "inf", "-inf"):
            r = CliRunner().invoke(app, [command, flag, value])
            assert r.exit_code == 2, (command, flag, r.output)
            assert f"{flag} must be a finite number, not {value}" in r.output, (command, flag, r.output)


# --- 3. workers that cannot outlive the command ---------------------------------------------------


def _workers_of(pid: int) -> list[psutil.Process]:
    return [
        c for c in psutil.Process(pid).children(recursive=True) if "edgeprune.bench.worker" in " ".join(c.cmdline())
    ]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE  # killed, waiting to be reaped by whoever adopted it
    except psutil.NoSuchProcess:
        return False


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_bench_worker_survives_the_command_being_killed(sig, tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle")
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    # --rounds 50: a round stops at MAX_RUNS_PER_ROUND calls (under a second for this tiny model on a fast
    # CPU), so many rounds keep the bench measuring well past the signal
    cmd = [str(EDGEPRUNE), "bench", str(bundle), "--seconds", "120", "--rounds", "50", "--warmup", "1"]
    # Ctrl-C needs SIGINT's default in the child: a suite started in the background by a shell without job
    # control inherits SIGINT ignored, and Python then keeps ignoring it (no KeyboardInterrupt at all)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default
    )
    try:
        deadline, workers = time.monotonic() + 60, []
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            workers = _workers_of(proc.pid)
            time.sleep(0.05)
        assert workers, "bench started no worker"
        time.sleep(1.0)  # the worker is loading or timing by now
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        time.sleep(1.0)
        assert not [w.pid for w in workers if _alive(w)], "a worker outlived its bench"
    finally:
        if proc.poll() is None:
            proc.kill()
    # killed outright; stopped through the handler (128 + signal); Ctrl-C's usual 130
    expected = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 130}
    assert proc.returncode == expected[sig]


def test_a_hung_worker_times_out_with_a_sentence_and_threads_beyond_the_cores_are_capped(tmp_path):
    from edgeprune.bench.env import usable_cores

    bundle = make_tiny_bundle(tmp_path / "bundle")
    r = cli(["bench", bundle, *FAST_BENCH, "--timeout", "0.001", "--json", tmp_path / "t.json"], tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    row = json.loads((tmp_path / "t.json").read_text())["results"][0]
    assert (
        row["status"] == "failed" and "no answer within 0.001 s" in row["error"] and "raise --timeout" in row["error"]
    )
    r = cli(["bench", bundle, *FAST_BENCH, "--threads", "1000", "--json", tmp_path / "c.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    cores = usable_cores()
    settings = json.loads((tmp_path / "c.json").read_text())["settings"]
    assert settings["threads"] == cores and settings["threads_requested"] == 1000
    assert settings["threads_source"] == f"--threads 1000 capped to the {cores} usable cores"
    assert f"warning: --threads 1000 capped to the {cores} usable cores" in r.stderr
    # the table's machine line says it too (wrapped where the table's width ends)
    assert f"(--threads 1000 capped to the {cores} usable cores)" in " ".join(r.stdout.split())


def test_bench_imports_no_torch():
    code = "import sys, edgeprune.bench.process, edgeprune.bench.worker, edgeprune.bench.runner\n"
    code += "print('torch' in sys.modules)"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO))
    )
    assert r.stdout.strip() == "False", r.stderr


# --- 4. library errors edgeprune can foresee ------------------------------------------------------


def _manifest(root: Path) -> None:
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
        for p in sorted(root.iterdir())
        if p.is_file() and p.name != "MANIFEST.sha256"
    ]
    (root / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "x,says",
    [
        (
            np.array([np.zeros(3), np.zeros(2)], dtype=object),
            ("eval.npz holds x as an object array", "re-run `edgeprune export`"),
        ),
        (
            np.zeros((64, 1, 32, 32), np.float32),
            (
                "holds examples of shape 1x32x32 but model.onnx's input 'input' takes 1x28x28",
                "copy the whole bundle again",
            ),
        ),
    ],
    ids=["object-arrays", "other-shape"],
)
def test_a_bundle_whose_eval_data_cannot_serve_is_one_sentence_naming_the_file(x, says, tmp_path):
    good = make_tiny_bundle(tmp_path / "good")
    bad = shutil.copytree(good, tmp_path / "bad")
    np.savez(bad / "eval.npz", x=x, y=np.zeros(len(x), np.int64))
    _manifest(bad)  # made so by another tool, not damaged in transit
    before = snapshot(bad)
    line = one_sentence(cli(["bench", bad, *FAST_BENCH], tmp_path), *says)
    assert str(bad / "eval.npz") in line
    assert snapshot(bad) == before
    shutil.rmtree(bad)  # the advice: copy the bundle again
    shutil.copytree(good, bad)
    assert cli(["bench", bad, *FAST_BENCH], tmp_path).returncode == 0


FACTORY = """from torch import nn


def make(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, num_classes))
"""


def test_export_after_the_data_or_the_factory_moved_gives_advice_export_can_follow(tmp_path):
    images = write_image_folder(tmp_path / "images", n=12, size=(16, 16))
    (tmp_path / "mine.py").write_text(FACTORY)
    run = tmp_path / "run"
    flags = ["train", "-d", images, "--model", f"{tmp_path / 'mine.py'}:make", "--epochs", "1", "--no-prune"]
    assert cli([*flags, "--threads", "1", "--out", run], tmp_path).returncode == 0
    before = snapshot(run)
    images.rename(tmp_path / "moved")
    r = cli(["export", run, "--quantize", "none"], tmp_path)
    one_sentence(
        r,
        f"{images}, is no longer there",
        "put it back at that path",
        f'set "dataset" under "config" in {run / "config.json"}',
    )
    assert snapshot(run) == before
    saved = json.loads((run / "config.json").read_text())  # the advice: point config.json at the data
    saved["config"]["dataset"] = str(tmp_path / "moved")
    (run / "config.json").write_text(json.dumps(saved, indent=2))
    (tmp_path / "mine.py").rename(tmp_path / "elsewhere.py")
    r = cli(["export", run, "--quantize", "none"], tmp_path)
    one_sentence(r, f"built by make() in {tmp_path / 'mine.py'}, which is no longer there", "put that file back")
    shutil.copy(tmp_path / "elsewhere.py", tmp_path / "mine.py")  # the advice: the file back (a copy)
    r = cli(["export", run, "--quantize", "none"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (run / "bundle" / "model.onnx").is_file()
    assert {k: v for k, v in snapshot(run).items() if k in before and k != "config.json"} == {
        k: v for k, v in before.items() if k != "config.json"
    }


# --- 5. refusals whose advice loses nothing -------------------------------------------------------


def test_a_corrupt_config_beside_a_checkpoint_is_rebuilt_from_it_not_replaced(runs, tmp_path):
    run = copy_run(runs["killed"], tmp_path / "run")
    config = (run / "config.json").read_bytes()
    (run / "config.json").write_text("{oops")
    before = snapshot(run)
    # without --resume: refused, and the advice is --resume (rebuild) or --restart (discard: said so)
    line = one_sentence(cli([*runs["flags"], "--out", run], tmp_path), "pass --resume to rebuild config.json")
    assert "delete" not in line
    assert snapshot(run) == before
    # what report and export say about it points at the same rebuild, not at deleting it
    one_sentence(cli(["report", run], tmp_path), "rebuild it from the checkpoint with edgeprune train --resume")
    r = cli([*runs["flags"], "--out", run, "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rebuilt it from" in r.stdout and "at epoch 2/2" in r.stdout
    assert json.loads((run / "config.json").read_bytes()) == json.loads(config)
    assert untimed(history(run)) == untimed(history(runs["done"]))  # epoch 1 kept, not trained again


def test_a_missing_config_beside_a_checkpoint_is_refused_until_resume_rebuilds_it(runs, tmp_path):
    run = copy_run(runs["killed"], tmp_path / "run")
    (run / "config.json").unlink()
    before = snapshot(run)
    one_sentence(cli([*runs["flags"], "--out", run], tmp_path), "config.json is missing", "pass --resume")
    assert snapshot(run) == before
    r = cli([*runs["flags"], "--out", run, "--resume"], tmp_path)
    assert r.returncode == 0 and "at epoch 2/2" in r.stdout, r.stderr


def test_resume_into_a_folder_that_does_not_exist_is_refused_and_dropping_resume_starts_the_run(runs, tmp_path):
    out = tmp_path / "typo"
    one_sentence(cli([*runs["flags"], "--out", out, "--resume"], tmp_path), "does not exist", "drop --resume")
    assert not out.exists()
    r = cli([*runs["flags"], "--out", out], tmp_path)
    assert r.returncode == 0 and (out / "model.pt").is_file(), r.stderr


@pytest.mark.parametrize("damage", ["other-configuration", "corrupt-checkpoint"])
def test_restart_is_the_only_way_to_discard_a_run_and_says_so(damage, runs, tmp_path):
    run = copy_run(runs["done"], tmp_path / "run")
    flags = [*runs["flags"], "--out", run]
    if damage == "corrupt-checkpoint":
        (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
        (run / "metrics.json").unlink()
        flags.append("--resume")
    else:
        flags += ["--lr", "0.002"]
    before = snapshot(run)
    line = one_sentence(cli(flags, tmp_path), "pass --restart to discard it and start over")
    assert "delete" not in line
    assert snapshot(run) == before
    if "--resume" in flags:
        one_sentence(cli([*flags, "--restart"], tmp_path), "--resume continues a run and --restart discards it")
        flags.remove("--resume")
    r = cli([*flags, "--restart"], tmp_path)  # the user's explicit word: start over
    assert r.returncode == 0, r.stderr
    assert [h["epoch"] for h in history(run)] == [1, 2]
