"""One model in one fresh process, driven by the parent over JSON lines on stdin/stdout.

Requests, one per line, each answered by one line {"ok": true, ...} or {"ok": false, "error"}:
  {"cmd": "load", "path", "runtime", "source", "precision", "threads", "arena", "mem_pattern", "batches",
   "warmup", "eval"}
                      the model opened on that runtime (edgeprune.bench.runtimes); a missing package
                      answers {"ok": false, "missing": true, "error": how to install it}
  {"cmd": "round", "batch", "runs"} or {"cmd": "round", "batch", "seconds"}
  {"cmd": "finish"}   memory figures, eval accuracy and the heavy packages this process had
                      imported (`worker_modules`, none on the runtime-only path); the worker exits.

A process of its own per model keeps the memory figures the model's own and lets a crash in
a runtime become a failed row instead of ending the benchmark.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edgeprune.bench import feeds, metrics, runtimes
from edgeprune.bench.memory import PeakSampler, rss_mb, ru_maxrss_mb
from edgeprune.bench.onnxfile import eval_chunk
from edgeprune.bench.process import PARENT_ENV

MAX_RUNS_PER_ROUND = 100_000  # bounds --seconds on a model that takes microseconds
MAX_FLOOR_RUNS_PER_ROUND = 100
# The training side's packages: a device has none of them, so the measuring process must not need them.
HEAVY_MODULES = ("torch", "torchvision", "onnx", "onnxscript", "onnxsim", "onnxslim")


def heavy_modules() -> list[str]:
    """Which of HEAVY_MODULES this process has imported (a module blocked as None does not count)."""
    loaded = {name.split(".")[0] for name, module in list(sys.modules.items()) if module is not None}
    return sorted(loaded & set(HEAVY_MODULES))


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:400]


class Worker:
    def __init__(self) -> None:
        self.session = None
        self.floor = None
        self.feeds: dict[int, dict] = {}
        self.meta: dict | None = None
        self.eval_path: str | None = None
        self.model_path: str | None = None
        self.memory: dict = {}
        self.sampler: PeakSampler | None = None

    def load(self, req: dict) -> dict:
        runtime = runtimes.get(req.get("runtime") or runtimes.DEFAULT)
        threads = req["threads"]
        self.eval_path = req.get("eval")
        self.model_path = req["path"]
        eval_x = eval_mask = None
        if self.eval_path:
            # Only the rows the timed batches use stay in memory; the full set is read again
            # for accuracy after the memory figures are taken.
            with np.load(self.eval_path) as z:
                eval_x = np.array(z["x"][: max(req["batches"])])
                if feeds.MASK_INPUT in z.files:  # a pretrained text model's attention mask
                    eval_mask = np.array(z[feeds.MASK_INPUT][: max(req["batches"])])
        runtime.load_module()  # a missing package is the row's reason, before any memory figure
        gc.collect()
        # Measured after imports: what the session itself adds.
        before = rss_mb()
        with PeakSampler() as sampler:
            options = {"arena": req["arena"], "mem_pattern": req["mem_pattern"], "precision": req.get("precision")}
            self.session = runtime.open(Path(req["path"]), threads, req.get("source"), **options)
            after = rss_mb()
            sampler.note(after)
            specs = self.session.inputs
            self.meta = self.session.metadata
            seq_len = req.get("seq_len")
            self.feeds = {b: feeds.make_feed(specs, b, self.meta, eval_x, seq_len, eval_mask) for b in req["batches"]}
            self.floor = runtime.floor(specs, threads)
            for b in req["batches"]:
                # At least one call per batch size, so the peak covers inference at every shape.
                for _ in range(max(1, req["warmup"])):
                    self.session.run(self.feeds[b])
                    self.floor.run(self.feeds[b])
        # Timed rounds run without the sampler thread so it cannot disturb them.
        self.sampler = sampler
        self.memory = {"rss_before_mb": before, "rss_after_load_mb": after}
        return {
            "metadata": self.meta,
            "runtime_version": runtime.version(),
            "inputs": [
                {
                    "name": s.name,
                    "type": s.ort_type,
                    "shape": list(s.shape),
                    "bench_shape": {str(b): list(f[s.name].shape) for b, f in self.feeds.items()},
                }
                for s in specs
            ],
            "session_options": self.session.options,
            "precision": self.session.precision,
        }

    def round(self, req: dict) -> dict:
        feed = self.feeds[req["batch"]]
        run, floor_run = self.session.run, self.floor.run
        run(feed)  # untimed: caches were just used by another worker
        times: list[float] = []
        clock = time.perf_counter_ns
        deadline = clock() + int(req["seconds"] * 1e9) if req.get("seconds") else None
        n = req.get("runs") or MAX_RUNS_PER_ROUND
        gc.disable()  # a collection mid-loop would land in one run's time
        try:
            while len(times) < n:
                t0 = clock()
                run(feed)
                t1 = clock()
                times.append((t1 - t0) / 1e6)
                if deadline is not None and t1 >= deadline:
                    break
            floor_times = []
            for _ in range(min(len(times), MAX_FLOOR_RUNS_PER_ROUND)):
                t0 = clock()
                floor_run(feed)
                floor_times.append((clock() - t0) / 1e6)
        finally:
            gc.enable()
        return {"times_ms": times, "floor_ms": floor_times}

    def finish(self, req: dict) -> dict:
        self.sampler.note(rss_mb())
        memory = dict(self.memory, rss_peak_mb=self.sampler.peak_mb, ru_maxrss_mb=ru_maxrss_mb())
        # Eval runs after the memory figures: its large batches are not deployment inference.
        result = {"memory": memory, "accuracy": None, "f1": None, "eval_n": None}
        if self.eval_path:
            try:
                with np.load(self.eval_path) as z:
                    mask = z[feeds.MASK_INPUT] if feeds.MASK_INPUT in z.files else None
                    result.update(self.evaluate(z["x"], z["y"], mask))
            except Exception as e:  # noqa: BLE001 - keep the timings; the row still fails with this reason
                result["eval_error"] = one_line(e)
        result["worker_modules"] = heavy_modules()  # last: after everything this process ran
        return result

    def evaluate(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> dict:
        specs = self.session.inputs
        preds, width = [], 0
        # 1 for dynamic INT8 (its outputs depend on the batch); an IR or ncnn file is not ONNX
        step = eval_chunk(Path(self.model_path)) if self.model_path.endswith(".onnx") else 256
        for i in range(0, len(x), step):
            feed = {specs[0].name: np.ascontiguousarray(x[i : i + step], dtype=specs[0].dtype)}
            if mask is not None and len(specs) == 2:  # the attention mask, the second input
                feed[specs[1].name] = np.ascontiguousarray(mask[i : i + step], dtype=specs[1].dtype)
            logits = self.session.run(feed)[0]
            width = logits.shape[-1] if logits.ndim > 1 else 1
            preds.append(metrics.predictions(logits))
        pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        labels = (self.meta or {}).get("labels") or []
        num_classes = max(len(labels), width, int(y.max()) + 1 if y.size else 0, 2)
        return {"accuracy": metrics.accuracy(y, pred), "f1": metrics.f1(y, pred, num_classes), "eval_n": len(y)}


def serve(inp, out) -> None:
    worker = Worker()
    handlers = {"load": worker.load, "round": worker.round, "finish": worker.finish}
    for line in inp:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            reply = {"ok": True, **handlers[req["cmd"]](req)}
        except runtimes.RuntimeMissing as e:  # not a failure of the model: the row says what to install
            reply = {"ok": False, "error": str(e), "missing": True}
        except Exception as e:  # noqa: BLE001 - every failure is reported to the parent as a failed row
            reply = {"ok": False, "error": one_line(e)}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if req["cmd"] == "finish" or not reply["ok"]:
            return


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _kernel_kills_us_with_parent() -> bool:
    """Linux: ask the kernel to SIGKILL this process when its parent dies, even by SIGKILL (prctl
    PR_SET_PDEATHSIG through ctypes). False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError, TypeError):
        return False


def die_with_parent() -> None:
    """A worker never outlives the bench that started it, even one killed by SIGKILL: the kernel's
    parent-death signal, else a thread that checks once a second who the parent is."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not parent.isdigit():
        return  # started by hand, not by WorkerProcess
    if not _kernel_kills_us_with_parent():

        def watch() -> None:
            while os.getppid() == int(parent):
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != int(parent):  # the parent died before the guard was set: nobody to answer
        os._exit(1)


def main() -> None:
    die_with_parent()
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, out)


if __name__ == "__main__":
    main()
