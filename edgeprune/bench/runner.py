"""Measure several models fairly: one worker process each, timed in interleaved rounds.

For each batch size, round r asks worker A for N timed runs, then B, then C, and repeats, so a
slow spell of the machine (another process, thermal throttling) hits every model alike.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable
from pathlib import Path

from edgeprune.bench.discover import Model
from edgeprune.bench.metrics import latency_stats
from edgeprune.bench.onnxfile import count_initializer_elements
from edgeprune.bench.process import WorkerError, WorkerProcess, signals_stop
from edgeprune.bench.runtimes import companion
from edgeprune.bench.settings import Settings, safe_label

Progress = Callable[[str], None]


def _row(model: Model) -> dict:
    data = model.path.read_bytes() if model.path.is_file() and not model.skip else None
    weights = model.path.with_name(companion(model.path.name))
    if data is not None and weights != model.path and weights.is_file():
        data += weights.read_bytes()  # an ncnn or IR model is its graph file and its weights
    return {
        "name": model.name,
        "variant": model.variant,
        "runtime": model.runtime,
        "runtime_version": None,
        "path": str(model.path),
        "status": "ok",
        "error": None,
        "params": None,
        "params_source": None,
        "file_bytes": len(data) if data is not None else None,
        "file_bytes_gz": len(gzip.compress(data, compresslevel=9, mtime=0)) if data else None,
        "accuracy": None,
        "f1": None,
        "eval_n": None,
        "task": (model.meta or {}).get("task"),
        "inputs": None,
        "latency": {},
        "memory": None,
        "session_options": None,
        "precision": None,  # the float precision the runtime computed in (runtimes.Session.precision)
        "worker_modules": None,
    }


def _fail(row: dict, reason: str, status: str = "failed") -> None:
    if row["status"] == "ok":
        row["status"], row["error"] = status, reason


def _params(model: Model, model_meta: dict | None) -> tuple[int | None, str | None]:
    for source, meta in (("model metadata", model_meta), ("bundle meta.json", model.meta)):
        if meta and isinstance(meta.get("params"), int):
            return meta["params"], source
    n = count_initializer_elements(model.source or model.path)
    return (n, "initializer elements") if n is not None else (None, None)


def _ask(worker: WorkerProcess, row: dict, req: dict, timeout: float) -> dict | None:
    """The worker's reply, or None after marking the row failed."""
    try:
        reply = worker.request(req, timeout)
    except WorkerError as e:
        _fail(row, str(e))
        return None
    if not reply.get("ok"):
        # a runtime that is not installed is not the model's failure: the row is skipped and says why
        _fail(
            row,
            reply.get("error") or "the worker failed without a reason",
            "skipped" if reply.get("missing") else "failed",
        )
        return None
    return reply


def _load(model: Model, row: dict, settings: Settings) -> WorkerProcess | None:
    """A worker with `model` loaded and warmed up, or None with the row failed."""
    if model.skip:
        _fail(row, model.skip, "skipped")
        return None
    if model.problem:
        _fail(row, model.problem)
        row["params"], row["params_source"] = _params(model, None)
        return None
    request = {
        "cmd": "load",
        "path": str(model.path),
        "runtime": model.runtime,
        "source": str(model.source) if model.source else None,
        "precision": model.precision,
        "threads": settings.threads,
        "arena": settings.arena,
        "mem_pattern": settings.mem_pattern,
        "batches": list(settings.batches),
        "warmup": settings.warmup,
        "seq_len": settings.seq_len,
        "eval": str(model.eval) if model.eval else None,
    }
    worker = WorkerProcess()
    with _killing({0: worker}, only_on_error=True):  # stopped while loading: not yet in measure's list
        reply = _ask(worker, row, request, settings.timeout)
    row["params"], row["params_source"] = _params(model, reply and reply["metadata"])
    if reply is None:
        worker.kill()
        return None
    row["inputs"], row["session_options"] = reply["inputs"], reply["session_options"]
    row["precision"] = reply.get("precision")
    row["runtime_version"] = reply.get("runtime_version")
    row["task"] = row["task"] or (reply["metadata"] or {}).get("task")
    return worker


def _time_interleaved(
    workers: dict[int, WorkerProcess], rows: list[dict], names: list[str], settings: Settings, progress: Progress
) -> None:
    """Per batch size: round r runs every live worker in turn (A B C), `rounds` times."""
    round_req: dict = {"cmd": "round"}
    if settings.seconds is not None:
        round_req["seconds"] = settings.seconds / settings.rounds
    else:
        round_req["runs"] = settings.runs
    timeout = settings.timeout + 2 * round_req.get("seconds", 0)
    for batch in settings.batches:
        times: dict[int, list[list[float]]] = {i: [] for i in workers}
        floors: dict[int, list[float]] = {i: [] for i in workers}
        for r in range(settings.rounds):
            for i in list(workers):
                progress(f"batch {batch}, round {r + 1}/{settings.rounds}: {names[i]}")
                reply = _ask(workers[i], rows[i], dict(round_req, batch=batch), timeout)
                if reply is None:
                    workers.pop(i).kill()
                    continue
                times[i].append(reply["times_ms"])
                floors[i].extend(reply["floor_ms"])
        for i in workers:
            rows[i]["latency"][str(batch)] = latency_stats(times[i], batch, floors[i])


def _finish(worker: WorkerProcess, row: dict, model: Model, timeout: float) -> None:
    """Memory figures and eval accuracy into the row; the worker exits."""
    reply = _ask(worker, row, {"cmd": "finish"}, timeout)
    if reply is not None:
        row["memory"] = reply["memory"]
        row["worker_modules"] = reply.get("worker_modules")
        for key in ("accuracy", "f1", "eval_n"):
            row[key] = reply[key]
        if reply.get("eval_error"):
            _fail(row, f"evaluation on {model.eval.name} failed: {reply['eval_error']}")
    worker.close()


def measure(models: list[Model], settings: Settings, progress: Progress = lambda s: None) -> list[dict]:
    """One result row per model, in the JSON schema of docs/bench.md."""
    rows = [_row(m) for m in models]
    workers: dict[int, WorkerProcess] = {}
    with signals_stop(), _killing(workers):
        for i, (model, row) in enumerate(zip(models, rows)):
            progress(f"loading {model.name}")
            worker = _load(model, row, settings)
            if worker is not None:
                workers[i] = worker
        _time_interleaved(workers, rows, [m.name for m in models], settings, progress)
        for i in list(workers):
            progress(f"finishing {models[i].name}")
            _finish(workers.pop(i), rows[i], models[i], settings.timeout)
    return rows


@contextlib.contextmanager
def _killing(workers: dict[int, WorkerProcess], only_on_error: bool = False):
    """Kill the workers still in `workers` on the way out, however the way out comes (with
    `only_on_error`, when an exception leaves: Ctrl-C, SIGTERM, a bug)."""
    try:
        yield
    except BaseException:
        for w in workers.values():  # interrupted: leave no stray processes behind
            w.kill()
        raise
    if not only_on_error:
        for w in workers.values():
            w.kill()


def report(
    rows: list[dict], settings: Settings, machine: dict, command: list[str], conditions: dict | None = None
) -> dict:
    return {
        "format": 1,
        "command": command,
        "machine": machine,
        "settings": settings.as_dict(),
        "conditions": conditions,
        "results": rows,
    }


def run_dir_files(models: list[Model], report_: dict) -> dict[Path, dict]:
    """RUN/bench/<label>-<variant>.json for each model whose bundle sits in a run directory."""
    out = {}
    label = report_["settings"]["label"]
    if report_["machine"]["emulated"] and "emulated" not in label:
        label += "-emulated"  # never mistaken for the device's own numbers by a report
    for model, row in zip(models, report_["results"]):
        if model.run_dir is not None:
            path = model.run_dir / "bench" / f"{label}-{safe_label(model.key)}.json"
            out[path] = dict(report_, results=[row])
    return out
