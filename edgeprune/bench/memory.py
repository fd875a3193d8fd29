"""Resident memory of this process: point readings and a background peak sampler."""

from __future__ import annotations

import resource
import sys
import threading

import psutil

MB = 1024 * 1024  # figures are MiB


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / MB


def ru_maxrss_mb() -> float:
    """Lifetime peak RSS from the kernel (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


class PeakSampler:
    """Samples RSS every `interval` seconds on a thread until stopped; `peak_mb` is the maximum.

    onnxruntime releases the GIL inside run(), so the thread keeps sampling during inference.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.peak_mb = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, proc.memory_info().rss / MB)
            self._stop.wait(self.interval)

    def note(self, value_mb: float) -> None:
        """Fold in a reading taken elsewhere, so the peak never misses a point sample."""
        self.peak_mb = max(self.peak_mb, value_mb)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.note(rss_mb())
