"""The parent's side of a worker: start it, send a request, wait for its one-line reply.

A worker cannot outlive the command: it runs in a session (and process group) of its own, which is
killed whenever the parent stops with it, by an exception, Ctrl-C, SIGTERM or SIGHUP (`signals_stop`);
a parent killed outright (SIGKILL) takes it along through the worker's own guard (worker.die_with_parent);
and a request that gets no answer within its timeout kills it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading

PARENT_ENV = "EDGEPRUNE_BENCH_PARENT"  # the parent's pid: a worker whose parent is gone exits


class WorkerError(Exception):
    """The worker died, hung or answered nonsense; the message is the row's failure reason."""


class WorkerProcess:
    def __init__(self) -> None:
        # stderr goes to a file: a chatty library cannot fill a pipe and block the worker.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the worker
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_ENV: str(os.getpid())})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeprune.bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            # its own session: a terminal's Ctrl-C reaches the parent only (which then kills it), and
            # killing the group takes anything the worker started too
            start_new_session=True,
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
            raise WorkerError(
                f"no answer within {timeout:g} s, so the worker was stopped; raise --timeout if the model is that slow"
            )
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
        """Stop the worker's whole process group now (SIGKILL) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session's group: the worker and any child
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


class Stopped(SystemExit):
    """The command was asked to stop (SIGTERM, SIGHUP); raised so that `finally` blocks kill the workers."""


@contextlib.contextmanager
def signals_stop():
    """While inside, SIGTERM and SIGHUP raise Stopped (exit code 128 + the signal) instead of ending the
    process on the spot, so the workers are killed on the way out. Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        name = signal.Signals(signum).name
        sys.stderr.write(f"stopped by {name}; the benchmark's worker processes were stopped too\n")
        raise Stopped(128 + signum)

    wanted = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    before = {s: signal.signal(getattr(signal, s), stop) for s in wanted}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(getattr(signal, s), handler)
