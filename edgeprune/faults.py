"""Fault injection for the crash tests: EDGEPRUNE_FAULT=<point>:<n> kills the process with SIGKILL when
training reaches that point, as a power cut or the OOM killer would. Unset, it does nothing.

Points, with n the epoch unless said otherwise:
  step               after the n-th optimizer step of the run (counted over all epochs, from 1)
  before-checkpoint  the epoch is trained, pruned and evaluated; nothing of it written yet
  mid-checkpoint     half of checkpoint.pt's temporary file written
  after-checkpoint   checkpoint.pt written, the epoch's history line not yet
  mid-history        half of the epoch's history line written (a torn line)
  before-model       all n epochs done, model.pt and metrics.json not written yet
"""

from __future__ import annotations

import os
import signal

from edgeprune.errors import UserError

ENV = "EDGEPRUNE_FAULT"
POINTS = (
    "step",
    "before-checkpoint",
    "mid-checkpoint",
    "after-checkpoint",
    "mid-history",
    "before-model",
)


def armed() -> tuple[str, int] | None:
    """The (point, n) that $EDGEPRUNE_FAULT names, or None."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in POINTS or not n.isdigit():
        raise UserError(f"${ENV} must be <point>:<n> with a point among {', '.join(POINTS)}; got {spec!r}.")
    return point, int(n)


def crash(point: str, n: int) -> None:
    """SIGKILL this process if $EDGEPRUNE_FAULT names `point` at `n`: no cleanup, no flush, no finally."""
    if armed() == (point, n):
        os.kill(os.getpid(), signal.SIGKILL)


def crasher(point: str, n: int):
    """`crash(point, n)` as a callback, for the writes that call back halfway (edgeprune.run)."""
    return lambda: crash(point, n)
