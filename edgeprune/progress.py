"""How a long training epoch shows progress: a live bar on a terminal, plain lines anywhere else.

rich's bar draws nothing until it ends when the output is not a terminal (a file under `nohup`, a
pipe, CI's log, `docker logs`), so an epoch of a large run would be silent for as long as it takes.
There, a plain line is printed at most every `log_every()` seconds instead:

    epoch 1/3 prune: step 250/513 (49%)  loss 0.5495 acc 0.8826  4m10s, about 4m23s left
"""

from __future__ import annotations

import math
import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgeprune.errors import UserError

LOG_EVERY_ENV = "EDGEPRUNE_LOG_EVERY"  # seconds between plain progress lines (0: at every update)
LOG_EVERY = 60.0


def log_every() -> float:
    """Seconds between plain progress lines: $EDGEPRUNE_LOG_EVERY, else 60."""
    raw = os.environ.get(LOG_EVERY_ENV)
    if raw is None or raw == "":
        return LOG_EVERY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{LOG_EVERY_ENV}={raw!r} is not a number of seconds; set it to 0 or more, or unset it.")
    return value


def duration(seconds: float) -> str:
    """4m10s, 1h02m, 12s."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class EpochProgress:
    """The bar (rich, on a terminal) and the plain lines (elsewhere) of the epochs of one run."""

    def __init__(self, console: Console, quiet: bool):
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            disable=quiet,
            transient=True,
        )
        self.lines = not quiet and not console.is_terminal
        self.every = log_every()  # read once: a bad value is said before training starts
        self._task = None

    def __enter__(self) -> EpochProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, what: str, total: int) -> None:
        """An epoch of `total` steps begins (`what`: "epoch 2/5 prune")."""
        self._task = self.bar.add_task(what, total=total, stats="")
        self.what, self.total = what, total
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int, stats: str) -> None:
        """`done` steps of the epoch are over; `stats` is the running loss and accuracy."""
        self.bar.update(self._task, completed=done, stats=stats)
        now = time.perf_counter()
        if not self.lines or not 0 < done < self.total or now - self.last < self.every:
            return  # the epoch's own line follows its last step
        self.last = now
        spent = now - self.t0
        left = spent / done * (self.total - done)
        self.console.print(
            f"{self.what}: step {done}/{self.total} ({100 * done // self.total}%)  {stats}  {duration(spent)}, "
            f"about {duration(left)} left",
            highlight=False,
            soft_wrap=True,
        )

    def end(self) -> None:
        self.bar.remove_task(self._task)
        self._task = None
