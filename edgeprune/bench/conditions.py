"""How busy the machine was while we measured: other processes' CPU, hypervisor steal, load.

Timings taken while something else used the cores are not the model's; the report says so
instead of leaving the reader to guess.
"""

from __future__ import annotations

import os
import resource
import time

import psutil

# Other processes using a quarter of a core on average already move latencies by several %.
BUSY_CORES = 0.25


def _own_cpu() -> float:
    """CPU seconds of this process and every child it has waited for (the workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _busy_and_steal() -> tuple[float, float]:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    steal = getattr(t, "steal", 0.0)
    return sum(t) - idle - steal - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0), steal


class Conditions:
    """Context manager; `result` is filled on exit. Workers must have been waited for."""

    def __enter__(self):
        self._t = time.monotonic()
        self._own = _own_cpu()
        self._busy, self._steal = _busy_and_steal()
        self._load = os.getloadavg()
        self.result: dict = {}
        return self

    def __exit__(self, *exc) -> None:
        elapsed = max(time.monotonic() - self._t, 1e-9)
        busy, steal = _busy_and_steal()
        others = (busy - self._busy) - (_own_cpu() - self._own)
        self.result = {
            "seconds": round(elapsed, 2),
            "loadavg_before": [round(x, 2) for x in self._load],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            # Average number of cores that other processes kept busy while we measured.
            "background_cpu_cores": round(max(0.0, others / elapsed), 3),
            "steal_cpu_cores": round(max(0.0, (steal - self._steal) / elapsed), 3),
        }
        self.result["busy"] = (self.result["background_cpu_cores"] + self.result["steal_cpu_cores"]) >= BUSY_CORES
