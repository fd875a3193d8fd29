"""The parent's side of a worker: start it, send a request, wait for its one-line reply."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile


class WorkerError(Exception):
    """The worker died, hung or answered nonsense; the message is the row's failure reason."""


class WorkerProcess:
    def __init__(self) -> None:
        # stderr goes to a file: a chatty library cannot fill a pipe and block the worker.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the worker
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeprune.bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )

    def request(self, req: dict, timeout: float) -> dict:
        """Send one request; return the reply (ok or not), or raise WorkerError."""
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._death()) from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"no answer within {timeout:.0f} s; the worker was stopped")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(self._death())
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"unreadable answer from the worker: {line[:200]!r}") from None

    def _death(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().splitlines() if ln.strip()]
        last = f": {lines[-1][:300]}" if lines else ""
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return f"the worker process {how}{last}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
