"""Run every model of a bundle on its eval.npz and save the outputs, compare two such runs, or
classify raw text with a text bundle.

    python predict.py run BUNDLE OUT.npz [--timing-runs N] [--runtime NAME]  -> JSON summary on stdout
    python predict.py compare A.npz B.npz [--atol 1e-4] [--only-b]          -> JSON agreement report on stdout
    python predict.py text BUNDLE "some text" ...           -> one JSON line per text: label, scores

Used by arm64_verify.sh on the host and inside the emulated arm64 root, so it needs only numpy
and onnxruntime (no edgeprune import: it must also run where edgeprune is not installed). A bundle's
models for other runtimes (meta.json "runtime": openvino, ncnn) run through edgeprune's runtime seam
where edgeprune and that runtime are installed (the device image); elsewhere they are listed as
skipped with the reason. The bundle's chosen runtime and variant ("ship") lead the summary. A
bundle of a pretrained Hugging Face model tokenizes with its tokenizer.json and the `tokenizers`
package (pip install tokenizers), never torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

# Tolerances per variant: float kernels differ across ISAs only by summation order; dynamic INT8
# quantizes activations at run time with ISA-specific kernels (u8s8 on x86, s8s8 on ARM), so a
# quantization step of difference is expected there.
DEFAULT_ATOL = {"float": 1e-4, "int8": 0.1}
# OpenVINO and ncnn pick kernels (and bf16/fp16 where the CPU has them) by ISA: looser across machines.
OTHER_RUNTIME_ATOL = 0.1


def predictions(logits: np.ndarray) -> np.ndarray:
    """Class ids: one logit column is a binary sigmoid model (class 1 when sigmoid > 0.5, i.e.
    logit > 0), otherwise argmax. The rule edgeprune.bench.metrics uses, copied: no edgeprune here."""
    logits = np.asarray(logits)
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return (logits.reshape(len(logits)) > 0).astype(np.int64)
    return logits.reshape(len(logits), -1).argmax(axis=1).astype(np.int64)


def _models(bundle: Path) -> list[tuple[str, Path, str, Path | None, str | None]]:
    """(key, file, runtime, source ONNX, precision) per model: key is the name, name@runtime off
    onnxruntime; precision is what the entry asks its runtime to compute in ("bf16"; None: fp32)."""
    meta_path = bundle / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        out = []
        for m in meta.get("models", []):
            runtime = m.get("runtime") or "onnxruntime"
            key = m["name"] if runtime == "onnxruntime" else f"{m['name']}@{runtime}"
            source = bundle / m["source"] if m.get("source") else None
            out.append((key, bundle / m["file"], runtime, source, m.get("precision")))
        return out
    return [("float", bundle / "model.onnx", "onnxruntime", None, None)]


def _runner(path: Path, runtime: str, source: Path | None, precision: str | None = None):
    """(run: x, attention mask or None -> logits) on `runtime`; onnxruntime directly, the others through
    edgeprune's seam."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x, mask: sess.run(None, _feed(sess, x, mask))[0]
    try:
        from edgeprune.bench import runtimes
    except ImportError:
        raise RuntimeError(f"{runtime} models run through edgeprune, which is not installed here") from None
    session = runtimes.get(runtime).open(path, 1, source, precision=precision)  # RuntimeMissing names the extra
    specs = session.inputs

    def infer(x, mask):
        feed = {specs[0].name: np.ascontiguousarray(x, dtype=specs[0].dtype)}
        if len(specs) > 1:  # the attention mask
            feed[specs[1].name] = np.ascontiguousarray(mask if mask is not None else np.ones_like(x), specs[1].dtype)
        return session.run(feed)[0]

    return infer


def run(bundle: Path, out: Path, timing_runs: int, runtime: str | None = None) -> dict:
    """Every model of the bundle (only those on `runtime` when given) on its eval rows: outputs saved to
    `out`, accuracy and batch-1 timing returned. One runtime per process lets a caller survive a runtime
    that crashes the interpreter (e.g. under emulation)."""
    import onnxruntime as ort

    meta = json.loads((bundle / "meta.json").read_text()) if (bundle / "meta.json").exists() else {}
    data = np.load(bundle / meta.get("eval", "eval.npz"))
    x, y = data["x"], data["y"]
    outputs, summary = {}, {}
    mask = data["attention_mask"] if "attention_mask" in data.files else None
    models = [m for m in _models(bundle) if runtime is None or m[2] == runtime]
    if runtime is not None and not models:
        raise SystemExit(f"{bundle} has no model for runtime {runtime!r}; export it with --runtimes {runtime}.")
    for name, path, runtime_of, source, precision in models:
        try:
            infer = _runner(path, runtime_of, source, precision)
        except Exception as e:  # noqa: BLE001 - a runtime this machine lacks is a skipped model, said
            if runtime_of == "onnxruntime":
                raise
            summary[name] = {"runtime": runtime_of, "skipped": " ".join(str(e).split())[:300]}
            continue
        logits = infer(x, mask)
        outputs[name] = logits
        times = []
        for _ in range(timing_runs):
            t0 = time.perf_counter()
            infer(x[:1], None if mask is None else mask[:1])
            times.append((time.perf_counter() - t0) * 1e3)
        summary[name] = {
            "runtime": runtime_of,
            "accuracy": float((predictions(logits) == y).mean()),
            "batch1_ms_median": float(np.median(times)) if times else None,
            "timing_runs": timing_runs,
        }
    np.savez(out, **outputs)
    choice = meta.get("runtime") or {}
    ship = choice.get("model", meta.get("default", "float"))
    if choice.get("name") and choice["name"] != "onnxruntime":
        ship = f"{ship}@{choice['name']}"
    return {
        "ship": ship,  # the bundle's chosen model on its chosen runtime (meta.json "runtime")
        "machine": platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "eval_size": len(x),
        "models": summary,
    }


def _feed(sess, x: np.ndarray, mask: np.ndarray | None) -> dict:
    """The session's inputs: the examples, and the attention mask when the model takes one."""
    names = [i.name for i in sess.get_inputs()]
    feed = {names[0]: x}
    if len(names) > 1:
        feed[names[1]] = mask if mask is not None else np.ones_like(x)
    return feed


def encode(bundle: Path, meta: dict, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask [N, T] for raw `texts`, as training encoded them: the model's own
    tokenizer.json (tokenizers package), or edgeprune's vocabulary (vocab.json: lowercase, its token
    pattern, id 0 pads, 1 is unknown)."""
    if meta.get("tokenizer"):
        from tokenizers import Tokenizer  # the file truncates to the model's length and pads to the longest

        encs = Tokenizer.from_file(str(bundle / meta["tokenizer"])).encode_batch(texts)
        return (
            np.array([e.ids for e in encs], dtype=np.int64).reshape(len(texts), -1),
            np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(len(texts), -1),
        )
    vocab = json.loads((bundle / meta.get("vocab", "vocab.json")).read_text())
    index = {t: i for i, t in enumerate(vocab["tokens"])}
    pattern = re.compile(vocab["token_pattern"])
    rows = []
    for text in texts:
        text = text.lower() if vocab.get("lowercase", True) else text
        words = pattern.findall(text.replace("<br />", " "))[: vocab["max_len"]]
        rows.append([index.get(w, vocab["unk"]) for w in words] or [vocab["pad"]])
    ids = np.full((len(rows), max(len(r) for r in rows)), vocab["pad"], dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, (ids != vocab["pad"]).astype(np.int64)


def classify(bundle: Path, texts: list[str], model: str | None = None) -> list[dict]:
    """Each text's predicted label and class scores from the bundle's default model (or `model`)."""
    import onnxruntime as ort

    meta = json.loads((bundle / "meta.json").read_text())
    if meta.get("task") != "text":
        raise SystemExit(f"{bundle} holds a {meta.get('task')} model; predict.py text takes a text bundle.")
    name = model or meta.get("default", "float")
    files = {key: path for key, path, runtime, *_ in _models(bundle) if runtime == "onnxruntime"}
    if name not in files:
        raise SystemExit(f"{bundle} has no model {name!r}; choose one of {', '.join(files)}.")
    sess = ort.InferenceSession(str(files[name]), providers=["CPUExecutionProvider"])
    ids, mask = encode(bundle, meta, texts)
    logits = np.concatenate([sess.run(None, _feed(sess, ids[i : i + 1], mask[i : i + 1]))[0] for i in range(len(ids))])
    labels = meta["labels"]
    out = []
    for text, row in zip(texts, logits):
        if row.shape[-1] == 1:  # one sigmoid logit
            p1 = float(1 / (1 + np.exp(-row[0])))
            scores = [1 - p1, p1]
        else:
            e = np.exp(row - row.max())
            scores = (e / e.sum()).tolist()
        out.append({"text": text, "label": labels[int(np.argmax(scores))], "scores": dict(zip(labels, scores))})
    return out


def compare(a_path: Path, b_path: Path, atol: float | None, only_b: bool = False) -> dict:
    """Per model of A and B: same top-1 and outputs within tolerance. `only_b`: the models B holds
    (B ran one runtime of the bundle A ran whole). Each model's top-1 agreement with A's "float"
    (onnxruntime FP32, the export's reference) is reported too."""
    a, b = np.load(a_path), np.load(b_path)
    report, ok = {}, True
    reference = predictions(a["float"]) if "float" in a.files else None
    for name in sorted(set(b.files) if only_b else set(a.files) | set(b.files)):
        if name not in a.files or name not in b.files:
            report[name] = {"ok": False, "error": "present on one side only"}
            ok = False
            continue
        la, lb = a[name], b[name]
        other_runtime = "@" in name
        tol = atol if atol is not None else OTHER_RUNTIME_ATOL if other_runtime else DEFAULT_ATOL.get(name, 1e-4)
        diff = float(np.abs(la.astype(np.float64) - lb.astype(np.float64)).max())
        agree = float((predictions(la) == predictions(lb)).mean())  # "argmax" also for one logit: its sign
        good = agree == 1.0 and diff <= tol
        ok = ok and good
        report[name] = {"ok": good, "argmax_agreement": agree, "max_abs_diff": diff, "atol": tol, "n": len(la)}
        if reference is not None:
            report[name]["agreement_with_a_float"] = float((predictions(lb) == reference).mean())
    return {"ok": ok, "models": report}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--timing-runs", type=int, default=3)
    r.add_argument("--runtime", default=None, help="only this runtime's models (onnxruntime, openvino, ncnn)")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--atol", type=float, default=None)
    c.add_argument("--only-b", action="store_true", help="compare only the models B holds")
    t = sub.add_parser("text")
    t.add_argument("bundle", type=Path)
    t.add_argument("texts", nargs="+")
    t.add_argument("--model", default=None, help="float or int8 (default: the bundle's default)")
    args = ap.parse_args()
    if args.cmd == "text":
        for row in classify(args.bundle, args.texts, args.model):
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if args.cmd == "run":
        print(json.dumps(run(args.bundle, args.out, args.timing_runs, args.runtime)))
        return 0
    result = compare(args.a, args.b, args.atol, args.only_b)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
