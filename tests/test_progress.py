"""Progress of a long epoch where rich's bar shows nothing (a log file, a pipe): plain lines, at most
every $EDGEPRUNE_LOG_EVERY seconds, through the real `edgeprune train` in a subprocess (whose
stdout is a pipe, not a terminal)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from test_cli_errors import run_cli

from edgeprune.progress import LOG_EVERY_ENV, duration

LINE = re.compile(
    r"^epoch 1/1 train: step (\d+)/(\d+) \((\d+)%\)  loss \d+\.\d{4} acc \d\.\d{4}  \d+s, about \d+s left$"
)


def train(data_root: Path, out: Path, every: str | None) -> subprocess.CompletedProcess:
    args = [
        "train", "--dataset", "mnist", "--data-dir", str(data_root), "--out", str(out), "--no-prune",
        "--epochs", "1", "--limit", "600", "--batch-size", "8", "--threads", "1", "--device", "cpu",
    ]  # fmt: skip
    return run_cli(args, out.parent, set_env={LOG_EVERY_ENV: every})


def test_duration_reads_as_hours_minutes_or_seconds():
    for seconds, text in ((0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (250, "4m10s"), (3599, "59m59s"), (3725, "1h02m")):
        assert duration(seconds) == text
        # read back a second way: the text's units add up to the rounded seconds (hours to the minute)
        h, m, s = (int(x) if x else 0 for x in re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text).groups())
        assert 3600 * h + 60 * m + s == (round(seconds) // 60 * 60 if h else round(seconds))


def test_an_epoch_in_a_log_prints_plain_progress_lines(data_root, tmp_path):
    """540 training examples in batches of 8 are 68 steps; the bar updates after steps 1, 26, 51 and 68,
    and with a line allowed at every update, one line follows each but the last (the epoch's own line
    comes then)."""
    r = train(data_root, tmp_path / "run", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch 1/1 train: step")]
    assert lines, r.stdout
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    steps = [(int(m[1]), int(m[2]), int(m[3])) for m in parsed]
    assert steps == [(done, 68, 100 * done // 68) for done in (1, 26, 51)], steps
    assert re.search(r"^epoch\s+1/1 ", r.stdout, re.M), r.stdout  # the epoch's own line still ends it


def test_progress_lines_wait_for_their_interval(data_root, tmp_path):
    """By default a line comes at most once a minute: a run of a few seconds prints none."""
    r = train(data_root, tmp_path / "run", None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "train: step" not in r.stdout, r.stdout


@pytest.mark.parametrize("bad", ["soon", "-1", "nan"])
def test_a_bad_interval_is_one_sentence_before_the_run_directory(data_root, tmp_path, bad):
    out = tmp_path / "run"
    r = train(data_root, out, bad)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and LOG_EVERY_ENV in r.stderr + r.stdout, r.stderr
    assert not out.exists()
