"""The export stage as one function: RUN/model.pt -> RUN/export/ (every variant + parity.json)
and RUN/bundle/ (what a device needs). Each step is checked before the next runs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeprune.data.tokenizer import FILE as TOKENIZER_FILE
from edgeprune.errors import UserError, check_finite, writing_into
from edgeprune.export import bundle as bundle_mod
from edgeprune.export import onnx_export, parity, quantize, simplify
from edgeprune.run import RunDir, read_json
from edgeprune.rundir import check_data_still_there, load_run_data, load_run_model, model_tokens, read_run_config

FORMATS = ("onnx",)
PARITY_BATCH = 16  # examples in the fixed batch the logits are compared on


@dataclass(frozen=True)
class ExportOptions:
    format: str = "onnx"
    quantize: str = "auto"
    per_channel: bool | None = None  # None: the target's, else True
    reduce_range: bool | None = None  # None: the target's, else False
    simplifier: str = "onnxsim"
    opset: int = onnx_export.DEFAULT_OPSET
    max_acc_drop: float = 1.0  # accuracy points
    target: str | None = None
    calib: int = 256
    eval_limit: int | None = None  # None: the whole test split (the accuracy training reported)
    tar: bool = False
    data_dir: str | None = None
    measure_latency: bool = True  # auto: time float vs int8 with edgeprune.bench
    exporter: str = "torchscript"
    runtimes: str = "onnxruntime"  # comma-separated, or "all": also OpenVINO / ncnn variants (export/runtimes.py)

    @classmethod
    def of(cls, **options) -> "ExportOptions":
        """The options from keywords (`eval_n`, the former name of eval_limit, still accepted)."""
        if "eval_n" in options:
            options["eval_limit"] = options.pop("eval_n")
        try:
            return cls(**options)
        except TypeError as e:
            raise UserError(f"unknown export option ({e}).") from None

    def validate(self):
        """The preset (or None); a UserError naming the flag for any bad value."""
        from edgeprune.targets import get_target

        if self.format not in FORMATS:
            raise UserError(f"unknown --format {self.format!r}; edgeprune exports {', '.join(FORMATS)}.")
        if self.quantize not in quantize.QUANTIZE_CHOICES:
            raise UserError(
                f"unknown --quantize {self.quantize!r}; choose one of {', '.join(quantize.QUANTIZE_CHOICES)}."
            )
        if self.simplifier not in simplify.SIMPLIFIERS:
            raise UserError(
                f"unknown --simplifier {self.simplifier!r}; choose one of {', '.join(simplify.SIMPLIFIERS)}."
            )
        if not onnx_export.MIN_OPSET <= self.opset <= onnx_export.MAX_OPSET:
            raise UserError(f"--opset must lie in {onnx_export.MIN_OPSET}..{onnx_export.MAX_OPSET}, got {self.opset}.")
        check_finite("--max-acc-drop", self.max_acc_drop)  # as the CLI checks it, for API callers
        if not self.max_acc_drop >= 0:
            raise UserError(f"--max-acc-drop must be zero or more accuracy points, got {self.max_acc_drop}.")
        if self.calib < 1:
            raise UserError(f"--calib must be at least 1 sample, got {self.calib}.")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise UserError(f"--eval-limit must be at least 1 example, got {self.eval_limit}.")
        from edgeprune.bench.runtimes import parse as parse_runtimes

        parse_runtimes(self.runtimes)  # a UserError naming the known runtimes
        if self.exporter not in ("torchscript", "dynamo"):
            raise UserError(f"unknown exporter {self.exporter!r}; choose torchscript or dynamo.")
        return get_target(self.target) if self.target else None


def export_run(run_dir, **options) -> dict:
    """Export the run in `run_dir` (options: see ExportOptions); returns the parity summary."""
    opts = ExportOptions.of(**options)
    target = opts.validate()
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise UserError(f"{run.root} is not a directory; pass a run directory written by edgeprune train.")
    model, record = load_run_model(run.model)
    with writing_into(run.root):  # a full disk names no file: the sentence names the run
        return _export_staged(run, model, record, opts, target)


def _export_staged(run: RunDir, model, record: dict, opts: ExportOptions, target) -> dict:
    """Everything written beside its final place, then swapped in: a failure leaves the old export."""
    staged_export = staged_bundle = work = None
    try:
        staged_export = bundle_mod.staging_dir(run.export)
        staged_bundle = bundle_mod.staging_dir(run.bundle)
        bundle_mod.sweep_stale(Path(tempfile.gettempdir()), "edgeprune-export-")
        work = Path(tempfile.mkdtemp(prefix=f"edgeprune-export-{os.getpid()}-"))
        summary = _export(run, model, record, opts, target, staged_export, staged_bundle, work)
        tar_path = run.root / "bundle.tar.gz"
        if opts.tar:
            bundle_mod.write_tar(staged_bundle, tar_path)
        bundle_mod.swap_into_place(staged_export, run.export)
        bundle_mod.swap_into_place(staged_bundle, run.bundle)
    except BaseException:
        for staged in (staged_export, staged_bundle):
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    summary.update(export_dir=str(run.export), bundle_dir=str(run.bundle), tar=str(tar_path) if opts.tar else None)
    return summary


def _load_eval_data(run: RunDir, record: dict, opts: ExportOptions):
    """The run's data, loaded as training loaded it (same seed, limit, vocabulary)."""
    import torch

    config, cfg = read_run_config(run)
    check_data_still_there(run, cfg["dataset"])
    meta = record.get("input") or config.get("input")
    vocab, tokenizer = model_tokens(run, meta)
    data = load_run_data(cfg, opts.data_dir, vocab=vocab, tokenizer=tokenizer)
    now = data.input_meta()
    for key in ("labels", "input_shape", "normalization"):
        if key in meta and meta[key] != now.get(key):
            raise UserError(
                f"the data of {run.root} ({cfg['dataset']}) changed since training ({key} differs); "
                "restore the data the run was trained on or re-train."
            )
    if not len(data.test):
        raise UserError(f"the {cfg['dataset']} test split is empty; nothing to check the export against.")

    def ready(x):
        with torch.no_grad():
            return np.ascontiguousarray(data.prepare(x).numpy())

    n_eval = len(data.test) if opts.eval_limit is None else min(opts.eval_limit, len(data.test))
    eval_x, eval_y = ready(data.test.x[:n_eval]), data.test.y[:n_eval].numpy().astype(np.int64)
    # Calibration: evenly spread over the (already shuffled) training split.
    n_cal = min(opts.calib, len(data.train))
    idx = np.unique(np.linspace(0, len(data.train) - 1, n_cal).astype(np.int64))
    calib_x = ready(data.train.x[torch.from_numpy(idx)])
    return meta, data, eval_x, eval_y, calib_x, vocab, tokenizer


def _export(
    run: RunDir, model, record: dict, opts: ExportOptions, target, out: Path, bundle_dir: Path, work: Path
) -> dict:
    import torch

    t0 = time.perf_counter()
    meta, _, eval_x, eval_y, calib_x, vocab, tokenizer = _load_eval_data(run, record, opts)
    num_classes = max(len(meta["labels"]), 2)
    fixed_x = eval_x[:PARITY_BATCH]
    with torch.no_grad():
        torch_fixed = model(torch.from_numpy(fixed_x)).numpy()
        torch_eval = np.concatenate(
            [model(torch.from_numpy(eval_x[i : i + 512])).numpy() for i in range(0, len(eval_x), 512)]
        )
    props = onnx_export.metadata_props(onnx_export.metadata(meta, record, int(torch_fixed.shape[-1])))

    # 1. torch -> ONNX, checked: symbolic axes in the saved file, full checker, exactness.
    exported = out / "model.exported.onnx"
    onnx_export.export_onnx(model, meta, exported, opset=opts.opset, exporter=opts.exporter)
    onnx_export.check_symbolic(exported, meta)
    onnx_export.finalize(exported, props)
    nodes_exported = len(onnx.load(str(exported), load_external_data=False).graph.node)
    rows = [
        {
            "name": "torch",
            "file": run.model.name,
            "nodes": None,
            **parity.sizes(run.model),
            "max_abs_diff": 0.0,
            "argmax_agreement": 1.0,
            **parity.scores(torch_eval, eval_y, num_classes),
            "eval_n": len(eval_y),
        }
    ]
    onnx_row = parity.variant_row("onnx", exported, fixed_x, torch_fixed, eval_x, eval_y, num_classes, nodes_exported)
    parity.require_close(onnx_row, "PyTorch")
    rows.append(onnx_row)

    # 2. simplify (fallback recorded), checked against the exported model.
    simplified = out / "model.onnx"
    simp = simplify.simplify(exported, simplified, opts.simplifier)
    onnx_export.check_symbolic(simplified, meta)
    simp_row = parity.variant_row(
        "simplified", simplified, fixed_x, torch_fixed, eval_x, eval_y, num_classes, simp["nodes_after"]
    )
    vs_onnx = parity.compare(
        parity.logits(parity.session(simplified), fixed_x), parity.logits(parity.session(exported), fixed_x)
    )
    simp_row["max_abs_diff_vs_onnx"] = vs_onnx["max_abs_diff"]
    parity.require_close(dict(simp_row, max_abs_diff=vs_onnx["max_abs_diff"]), "the exported ONNX model")
    parity.require_close(simp_row, "PyTorch")
    rows.append(simp_row)

    # 3. quantize: pre-process once, then each recipe.
    kind = quantize.model_kind(onnx.load(str(simplified), load_external_data=False))
    per_channel = opts.per_channel if opts.per_channel is not None else (target.per_channel if target else True)
    reduce_range = opts.reduce_range if opts.reduce_range is not None else (target.reduce_range if target else False)
    plan = quantize.recipes(kind, opts.quantize, per_channel, reduce_range, target)
    pre_note = None
    qrows = []
    if plan:
        pre = work / "model.pre.onnx"
        pre_note = quantize.preprocess(simplified, pre)
        for recipe in plan:
            qpath = out / f"model.int8-{recipe.name}.onnx"
            quantize.quantize(pre, qpath, recipe, calib_x if recipe.method == "static" else None)
            onnx_export.check_symbolic(qpath, meta)
            qm = onnx.load(str(qpath), load_external_data=False)
            row = parity.variant_row(
                recipe.name, qpath, fixed_x, torch_fixed, eval_x, eval_y, num_classes, len(qm.graph.node)
            )
            row["recipe"] = recipe.as_dict()
            row["acc_drop_points"] = round((simp_row["accuracy"] - row["accuracy"]) * 100, 4)
            qrows.append(row)
    rows.extend(qrows)

    # 4. choose: accuracy budget first, then latency measured here (auto only).
    latency, latency_note = None, None
    float_row = dict(simp_row, name="float")
    within = [r for r in qrows if r["acc_drop_points"] <= opts.max_acc_drop + 1e-9]
    if opts.quantize == "auto" and within:
        native = target is None or _native(target.name)
        if not opts.measure_latency:
            latency_note = "latency measurement was switched off"
        elif not native:
            latency_note = f"latency measured on this {platform.machine()} machine does not predict a {target.name}"
        else:
            latency = _latency({"float": simplified, **{r["name"]: out / r["file"] for r in within}}, opts.target)
            for r in rows:
                if latency and r["name"] in latency:
                    r["latency_p50_ms"] = latency[r["name"]]
            simp_row["latency_p50_ms"] = latency.get("float") if latency else None
    chosen, kept, why = quantize.choose(
        float_row,
        qrows,
        opts.max_acc_drop,
        latency,
        explicit=opts.quantize in ("static", "dynamic"),
        latency_note=latency_note,
    )
    if kept:
        shutil.copyfile(out / f"model.int8-{kept}.onnx", out / "model.int8.onnx")

    # 4b. a latency budget: the prediction training pruned to, against onnxruntime here.
    run_metrics = read_json(run.metrics) if run.metrics.exists() else {}
    latency_budget = _latency_budget(run_metrics, simplified, opts)

    # 5. the bundle.
    models = [{"name": "float", "file": "model.onnx"}]
    files = {"model.onnx": simplified}
    if kept:
        models.append({"name": "int8", "file": "model.int8.onnx", "recipe": kept})
        files["model.int8.onnx"] = out / "model.int8.onnx"
    # 5a. the other runtimes' variants, from the same checked ONNX file, each checked for parity.
    from edgeprune.bench.runtimes import parse as parse_runtimes
    from edgeprune.export.runtimes import export_runtimes

    runtime_rows: list[dict] = []
    if set(parse_runtimes(opts.runtimes)) - {"onnxruntime"}:
        runtime_rows, entries, extra = export_runtimes(
            parse_runtimes(opts.runtimes), simplified, out, work, eval_x, eval_y, calib_x, opts.max_acc_drop
        )
        models.extend(entries)
        files.update(extra)
    accuracy = {("onnxruntime", "float"): simp_row["accuracy"]}
    if kept:
        accuracy[("onnxruntime", "int8")] = next(r["accuracy"] for r in qrows if r["name"] == kept)
    accuracy.update({(r["runtime"], r["variant"]): r["accuracy"] for r in runtime_rows if r["status"] == "ok"})
    runtime_choice = _choose_runtime(models, files, accuracy, chosen, opts, target)

    by_name = {r["name"]: r for r in rows}
    bundle_meta = {
        **onnx_export.metadata(meta, record, int(torch_fixed.shape[-1])),
        "models": models,
        "default": chosen,
        "runtime": runtime_choice,
        "eval": "eval.npz",
        **({"vocab": "vocab.json"} if vocab is not None else {}),
        **({"tokenizer": TOKENIZER_FILE} if tokenizer is not None else {}),
        "metrics": {
            "train": {
                k: run_metrics.get(k)
                for k in ("test_accuracy", "test_f1", "test_n", "params", "baseline_params", "compression")
                if k in run_metrics
            },
            "float": _brief(by_name["simplified"]),
            **({"int8": _brief(by_name[kept])} if kept else {}),
        },
        **({"latency_budget": latency_budget} if latency_budget else {}),
    }
    written = bundle_mod.write_bundle(
        bundle_dir,
        bundle_meta,
        files,
        eval_x,
        eval_y,
        vocab.to_json() if vocab is not None else None,
        tokenizer=tokenizer.text if tokenizer is not None else None,
    )

    summary = {
        "format": 1,
        "run": str(run.root),
        "exporter": opts.exporter,
        "opset": opts.opset,
        "options": {**asdict(opts), "per_channel": per_channel, "reduce_range": reduce_range},
        "target": target.name if target else None,
        "tolerance": parity.ONNX_TOLERANCE,
        "parity_batch": len(fixed_x),
        "eval_n": len(eval_y),
        "calib_n": len(calib_x),
        "simplifier": simp,
        "model_kind": kind,
        "quant_pre_process": pre_note or "ok",
        "variants": rows,
        "latency_p50_ms": latency,
        "latency_note": latency_note,
        "latency_budget": latency_budget,
        "chosen": chosen,
        "int8_kept": kept,
        "runtimes": runtime_rows,
        "runtime": runtime_choice,
        "reason": why,
        "bundle_files": written,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "parity.json").write_text(json.dumps(summary, indent=2) + "\n")  # staged dir: renamed at the end
    return summary


def _brief(row: dict) -> dict:
    keys = (
        "accuracy",
        "f1",
        "eval_n",
        "max_abs_diff",
        "argmax_agreement",
        "size_bytes",
        "size_gz_bytes",
        "nodes",
        "latency_p50_ms",
    )
    return {k: row.get(k) for k in keys if k in row}


AGREE = 0.15  # a measured latency within 15% of the prediction agrees with it


def _latency_budget(run_metrics: dict, model_path: Path, opts) -> dict | None:
    """For a run pruned to --target-latency-ms: the target, the latency model's prediction and, when
    its table was measured on this machine, the float model's p50 here at the table's threads and
    batch; `agrees` says whether they are within 15% (a device table is checked by bench there)."""
    target = run_metrics.get("target_latency_ms")
    lm = run_metrics.get("latency_model")
    if target is None or not lm:
        return None
    from edgeprune.bench.env import machine_info

    out = {
        "target_ms": target,
        "predicted_ms": run_metrics.get("latency_ms_predicted"),
        "threads": lm.get("threads"),
        "batch": lm.get("batch"),
        "table": lm.get("table"),
        "emulated": lm.get("emulated"),
        "measured_p50_ms": None,
        "agrees": None,
    }
    try:
        table = read_json(Path(lm["table"]))
        out["runtime"] = table.get("runtime") or "onnxruntime"  # the budget is on the table's runtime
        here = machine_info()
        same = all(table["machine"].get(k) == here.get(k) for k in ("hostname", "cpu_model", "machine"))
    except Exception:  # noqa: BLE001 - the table moved or is unreadable: nothing to compare here
        same = False
    out.setdefault("runtime", "onnxruntime")
    if not same or not opts.measure_latency:
        out["note"] = "the latency table is from another machine: compare with `edgeprune bench` there"
        return out
    from edgeprune.bench.runtimes import RUNTIMES

    if not RUNTIMES[out["runtime"]].reads(Path(model_path)) or RUNTIMES[out["runtime"]].missing():
        out["note"] = f"{out['runtime']} cannot run {Path(model_path).name} here: compare with `edgeprune bench`"
        return out
    from edgeprune.bench.discover import Model
    from edgeprune.bench.runner import measure
    from edgeprune.bench.settings import make_settings

    batch = int(lm.get("batch") or 1)
    settings = make_settings(threads=lm.get("threads"), batch=str(batch), warmup=10, runs=100, rounds=5, label="export")
    (row,) = measure([Model(name="float", variant="float", path=Path(model_path), runtime=out["runtime"])], settings)
    if row["status"] == "ok" and str(batch) in row["latency"]:
        measured = row["latency"][str(batch)]["p50_ms"]
        out["measured_p50_ms"] = measured
        pred = out["predicted_ms"]
        out["agrees"] = pred is not None and abs(measured - pred) <= AGREE * measured
        if not out["agrees"]:
            out["warning"] = (
                f"the measured p50 {measured:.4f} ms differs from the predicted {pred:.4f} ms by more than "
                f"{AGREE:.0%}: re-measure the latency table on a quiet machine or with more probes"
            )
    return out


def _choose_runtime(models: list[dict], files: dict, accuracy: dict, chosen: str, opts: ExportOptions, target) -> dict:
    """The runtime and variant the bundle ships: with other runtimes' variants, the fastest within
    --max-acc-drop of onnxruntime float, measured here with edgeprune.bench when this machine is the
    target's kind; otherwise onnxruntime's default variant, and the record says why."""
    default_file = next(m["file"] for m in models if m["name"] == chosen and not m.get("runtime"))
    choice = {"name": "onnxruntime", "model": chosen, "file": default_file, "p50_ms": None}
    if all(not m.get("runtime") or m["runtime"] == "onnxruntime" for m in models):
        return dict(choice, chosen_by="only onnxruntime models are in the bundle (see --runtimes)")
    why = None
    if not opts.measure_latency:
        why = "latency measurement was switched off"
    elif target is not None and not _native(target.name):
        why = f"latency measured on this {platform.machine()} machine does not predict a {target.name}"
    if why:
        return dict(choice, chosen_by=f"not measured ({why}): run `edgeprune bench` on the device to choose")
    from edgeprune.bench.choose import choose
    from edgeprune.bench.discover import Model
    from edgeprune.bench.runner import measure
    from edgeprune.bench.settings import make_settings

    settings = make_settings(batch="1", warmup=10, runs=50, rounds=5, target=opts.target, label="export")
    bench_models = []
    for m in models:
        runtime = m.get("runtime") or "onnxruntime"
        path, source = Path(files[m["file"]]), Path(files[m["source"]]) if m.get("source") else None
        name = "bundle/" + m["name"] + ("" if runtime == "onnxruntime" else f"@{runtime}")
        bench_models.append(
            Model(name=name, variant=m["name"], path=path, runtime=runtime, source=source, precision=m.get("precision"))
        )
    rows = measure(bench_models, settings)
    for row in rows:
        row["accuracy"] = accuracy.get((row["runtime"], row["variant"]))
    (pick,) = choose(rows, 1, opts.max_acc_drop)
    if pick.get("name") is None:
        return dict(choice, chosen_by=f"not measured ({pick['reason']})")
    entry = next(
        m for m in models if m["name"] == pick["variant"] and (m.get("runtime") or "onnxruntime") == pick["runtime"]
    )
    return {
        "name": pick["runtime"],
        "model": pick["variant"],
        "file": entry["file"],
        "precision": pick.get("precision"),
        "p50_ms": pick["p50_ms"],
        "speedup_vs_onnxruntime_float": pick["speedup_vs_onnxruntime_float"],
        "chosen_by": f"measured here ({platform.machine()}): {pick['reason']}",
        "measured": [
            {
                "runtime": r["runtime"],
                "model": r["variant"],
                "status": r["status"],
                "error": r["error"],
                "p50_ms": (r["latency"].get("1") or {}).get("p50_ms"),
                "accuracy": r["accuracy"],
            }
            for r in rows
        ],
    }


def _native(target_name: str) -> bool:
    arm = platform.machine().lower() in ("aarch64", "arm64")
    return arm if target_name.startswith("rpi") else not arm


def _latency(files: dict[str, Path], target: str | None) -> dict[str, float] | None:
    """Batch-1 p50 (median of interleaved round medians) per variant, with edgeprune.bench."""
    from edgeprune.bench.discover import Model
    from edgeprune.bench.runner import measure
    from edgeprune.bench.settings import make_settings

    settings = make_settings(batch="1", warmup=10, runs=50, rounds=5, target=target, label="export")
    models = [Model(name=name, variant=name, path=Path(p)) for name, p in files.items()]
    rows = measure(models, settings)
    out = {}
    for name, row in zip(files, rows):
        if row["status"] == "ok" and "1" in row["latency"]:
            out[name] = row["latency"]["1"]["round_median_ms"]
    return out or None
