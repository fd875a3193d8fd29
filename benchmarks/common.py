"""Shared by the benchmark scripts: machine and versions, the command, an atomic JSON record."""

from __future__ import annotations

import datetime as _dt
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from edgeprune.bench.env import machine_info
from edgeprune.run import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in (
        "edgeprune",
        "torch",
        "torchvision",
        "onnx",
        "onnxruntime",
        "onnxsim",
        "onnxslim",
        "numpy",
        "torch-pruning",
        "openvino",
        "nncf",
        "ncnn",
        "pnnx",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _commit_now() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "edgeprune", "benchmarks/*.py"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# Taken when the script starts: a long benchmark runs the code it imported then, whatever is
# committed while it runs.
_STARTED_AT = _commit_now()


def source_commit() -> str | None:
    """The commit of the code that ran ("+dirty" when it had uncommitted changes), or None."""
    return _STARTED_AT


def record(name: str, payload: dict) -> Path:
    """Write benchmarks/results/<name>.json with the machine, versions and the command that made it."""
    path = RESULTS / f"{name}.json"
    atomic_write_json(
        path,
        {
            "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "versions": versions(),
            "commit": source_commit(),
            **payload,
        },
    )
    return path


def torch_latency(models: dict, example, batch: int, threads: int, rounds: int = 7, runs: int = 30) -> dict:
    """Median-of-round-medians latency (ms) of several torch models, interleaved in rounds (A B A B ...)."""
    import statistics
    import time

    import torch

    torch.set_num_threads(threads)
    x = example(batch)
    medians = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(5):
                m(x)
        for _ in range(rounds):
            for name, m in models.items():
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    m(x)
                    times.append(time.perf_counter() - t0)
                medians[name].append(statistics.median(times) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_round_ms": min(v)} for k, v in medians.items()}
