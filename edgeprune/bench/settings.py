"""Benchmark settings from command-line values, checked once, with one-sentence errors."""

from __future__ import annotations

import os
import re
import socket
import warnings
from dataclasses import asdict, dataclass

from edgeprune.bench.env import usable_cores
from edgeprune.errors import UserError, check_finite
from edgeprune.targets import get_target


@dataclass(frozen=True)
class Settings:
    threads: int
    threads_source: str  # "--threads", "--target <name>" or "all usable cores"
    batches: tuple[int, ...]
    warmup: int
    runs: int | None  # timed runs per round, or
    seconds: float | None  # total timed seconds per batch size, split over the rounds
    rounds: int
    arena: bool
    mem_pattern: bool
    target: str | None
    label: str
    seq_len: int | None = None  # text models: tokens per timed example (None: as the eval rows are)
    timeout: float = 600.0  # seconds a worker may take to answer one request (load, a round, finish)
    threads_requested: int | None = None  # --threads as given, when it was capped to the usable cores
    runtimes: tuple[str, ...] | None = None  # --runtime: None = what each bundle lists, onnxruntime for files
    max_acc_drop: float = 1.0  # accuracy points a variant may lose and still be the one to ship

    def as_dict(self) -> dict:
        d = asdict(self)
        d["batches"] = list(self.batches)
        d["runtimes"] = list(self.runtimes) if self.runtimes is not None else None
        return d


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,8,64' -> (1, 8, 64); anything but positive integers is a UserError."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or not all(re.fullmatch(r"[0-9]+", p) and int(p) > 0 for p in parts):
        raise UserError(f"--batch must be positive integers separated by commas, e.g. 1,8,64; got {text!r}.")
    return tuple(dict.fromkeys(int(p) for p in parts))  # keep order, drop repeats


def safe_label(text: str) -> str:
    """A string usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "host"


def make_settings(
    threads: int | None = None,
    batch: str = "1",
    warmup: int = 10,
    runs: int | None = None,
    seconds: float | None = None,
    rounds: int = 5,
    target: str | None = None,
    arena: bool = True,
    mem_pattern: bool = True,
    label: str | None = None,
    seq_len: int | None = None,
    timeout: float = 600.0,
    runtime: str | None = None,
    max_acc_drop: float = 1.0,
) -> Settings:
    """Checked settings; a UserError naming the flag for a bad value. More --threads than usable cores
    are capped to the cores (a warning, and `threads_source` says so in the table and the JSON)."""
    check_finite("--seconds", seconds)  # the CLI checks its flags; this is the same rule for API callers
    check_finite("--timeout", timeout)
    check_finite("--max-acc-drop", max_acc_drop)
    if not max_acc_drop >= 0:
        raise UserError(f"--max-acc-drop must be zero or more accuracy points; got {max_acc_drop}.")
    from edgeprune.bench.runtimes import parse as parse_runtimes

    runtimes = parse_runtimes(runtime)
    if not timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds; got {timeout}.")
    if runs is not None and seconds is not None:
        raise UserError("give either --runs or --seconds, not both.")
    if runs is not None and runs < 1:
        raise UserError(f"--runs must be at least 1; got {runs}.")
    if seconds is not None and not seconds > 0:
        raise UserError(f"--seconds must be a positive number; got {seconds}.")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1; got {rounds}.")
    if warmup < 0:
        raise UserError(f"--warmup cannot be negative; got {warmup}.")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1; got {threads}.")
    if seq_len is not None and seq_len < 1:
        raise UserError(f"--seq-len must be at least 1 token; got {seq_len}.")
    cores = usable_cores()
    preset = get_target(target) if target else None
    requested = None
    if threads is not None and threads > cores:
        # Threads beyond the cores wait on each other: the timings would be noise, and a thousand
        # spinning threads hold the machine for minutes.
        n_threads, requested = cores, threads
        source = f"--threads {threads} capped to the {cores} usable cores"
        warnings.warn(f"{source}: more threads than cores only wait on each other.", stacklevel=2)
    elif threads is not None:
        n_threads, source = threads, "--threads"
    elif preset and preset.threads:
        # More threads than cores makes threads wait on each other; the numbers would be noise.
        n_threads = min(preset.threads, cores)
        source = f"--target {preset.name}" + (f" (capped to {cores} cores)" if preset.threads > cores else "")
    else:
        n_threads, source = cores, "all usable cores"
    return Settings(
        threads=n_threads,
        threads_source=source,
        batches=parse_batches(batch),
        warmup=warmup,
        runs=None if seconds is not None else (runs or 100),
        seconds=seconds,
        rounds=rounds,
        arena=arena,
        mem_pattern=mem_pattern,
        target=preset.name if preset else None,
        label=safe_label(label or os.environ.get("EDGEPRUNE_DEVICE") or socket.gethostname()),
        seq_len=seq_len,
        timeout=float(timeout),
        threads_requested=requested,
        runtimes=runtimes,
        max_acc_drop=float(max_acc_drop),
    )
