"""The runtime seam (edgeprune.bench.runtimes): every registered runtime on a tiny CNN and a tiny
text model, parity refusal, a missing runtime in bench, and the export of runtime variants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
from bundle_fixture import (  # noqa: E402
    _write_manifest,
    make_cnn_bundle,
    make_text_bundle,
    reference_cnn_logits,
    reference_text_logits,
)

from edgeprune.bench import bench, make_settings  # noqa: E402
from edgeprune.bench import runtimes as rt  # noqa: E402
from edgeprune.export import runtimes as export_rt  # noqa: E402

# Written here, not imported: fp32 kernels on another runtime differ by summation order and algorithm,
# relative to the largest logit (bf16/fp16 are variants of their own, judged on accuracy).
RTOL = 1e-2
FAST = dict(runs=3, rounds=2, warmup=1, threads=1)
REPO = Path(__file__).resolve().parents[1]


def _needs(name: str) -> rt.Runtime:
    runtime = rt.get(name)
    why = runtime.missing()
    if why:
        pytest.skip(why)
    return runtime


def _model_file(name: str, kind: str, bundle: Path, tmp_path: Path) -> Path:
    """The file `name` runs: the ONNX itself, or ncnn's files converted by pnnx (as export does)."""
    if name != "ncnn":
        return bundle / "model.onnx"
    if export_rt._pnnx() is None:
        pytest.skip("pnnx is not installed: pip install 'edgeprune[export-runtimes]'")
    with np.load(bundle / "eval.npz") as z:
        example = z["x"][0]
    param, why = export_rt._ncnn_files(bundle / "model.onnx", bundle, tmp_path / "work", example)
    assert param is not None, why
    meta = json.loads((bundle / "meta.json").read_text())  # listed as export lists it
    meta["models"].append({"name": "float", "file": param.name, "runtime": "ncnn", "source": "model.onnx"})
    (bundle / "meta.json").write_text(json.dumps(meta))
    _write_manifest(bundle)
    return param


@pytest.mark.parametrize("kind", ["cnn", "text"])
@pytest.mark.parametrize("name", list(rt.RUNTIMES))
def test_each_runtime_runs_a_tiny_model_through_the_seam(name, kind, tmp_path):
    runtime = _needs(name)
    if kind == "cnn":
        bundle, reference = make_cnn_bundle(tmp_path / "b"), reference_cnn_logits
    else:
        bundle, reference = make_text_bundle(tmp_path / "b"), reference_text_logits
    path = _model_file(name, kind, bundle, tmp_path)
    with np.load(bundle / "eval.npz") as z:
        x = z["x"][:8]
    if name == "ncnn" and kind == "text":
        # pnnx turns the embedding lookup into a Gather layer, which ncnn does not implement: the seam
        # says so in a sentence rather than returning numbers.
        with pytest.raises(RuntimeError, match="ncnn cannot load model.ncnn.param"):
            runtime.open(path, 1, bundle / "model.onnx")
        return
    session = runtime.open(path, 1, bundle / "model.onnx")
    assert [s.name for s in session.inputs] == ["input"]
    assert session.precision == "fp32"  # whatever the runtime's own default on this CPU
    if name == "ncnn":
        assert not session.options["use_fp16_storage"] and not session.options["use_bf16_storage"]
    out = rt.run_all(session, x, chunk=3)  # chunks of 3: batches of more than one through every runtime
    ref = reference(x)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= RTOL * max(1.0, np.abs(ref).max())
    # the per-call floor passes its input through, on the same runtime
    floor = runtime.floor(session.inputs, 1)
    passed = floor.run({"input": np.ascontiguousarray(x[:2], dtype=session.inputs[0].dtype)})[0]
    assert np.array_equal(np.asarray(passed).reshape(x[:2].shape), x[:2].astype(passed.dtype))

    # and through bench's worker: latency with its own floor, resident memory, accuracy, no torch
    report = bench([bundle], make_settings(runtime=name, **FAST))
    (row,) = [r for r in report["results"] if r["runtime"] == name]
    assert row["status"] == "ok", row["error"]
    lat = row["latency"]["1"]
    assert lat["p50_ms"] > 0 and lat["floor_p50_ms"] > 0
    assert row["memory"]["rss_after_load_mb"] >= row["memory"]["rss_before_mb"] > 0
    assert row["accuracy"] == (1.0 if kind == "cnn" else 0.75)  # the fixtures' labels, computed in numpy
    assert row["worker_modules"] == []
    assert report["ship"][0]["name"] == row["name"]


def test_a_runtime_that_disagrees_beyond_tolerance_is_refused(tmp_path, monkeypatch):
    """A runtime whose outputs are off (here: onnxruntime with its logits negated, registered as
    openvino) is refused for the model in one sentence, warned, and kept out of the bundle."""

    class Broken(rt.OnnxRuntime):
        name = "openvino"

        def _open(self, ort, path, threads, source, options):
            session = super()._open(ort, path, threads, source, options)
            inner = session.run
            session.run = lambda feed: [-o for o in inner(feed)]
            return session

    monkeypatch.setitem(rt.RUNTIMES, "openvino", Broken())
    monkeypatch.setattr(export_rt, "_openvino_int8", lambda *a: (None, "not in this test"))
    bundle = make_cnn_bundle(tmp_path / "b")
    with np.load(bundle / "eval.npz") as z:
        x, y = z["x"], z["y"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, entries, files = export_rt.export_runtimes(
            ("onnxruntime", "openvino"), bundle / "model.onnx", tmp_path, tmp_path, x, y, x[:8], 1.0
        )
    assert any("openvino float: openvino is refused for this model" in str(w.message) for w in caught)
    (row,) = [r for r in rows if r["variant"] == "float"]
    assert row["status"] == "refused" and entries == [] and files == {}
    assert row["top1_agreement"] < 0.99
    ref = reference_cnn_logits(x)
    assert row["max_abs_diff"] == pytest.approx(2 * np.abs(ref).max(), rel=1e-4)  # -l vs l: twice the largest
    assert row["reason"].startswith("openvino is refused for this model: its outputs differ from onnxruntime's by")


def test_parity_accepts_within_and_refuses_beyond_the_tolerance():
    ref = np.array([[3.0, -1.0, 0.5], [0.0, 2.0, 1.0]])
    assert rt.parity(ref + 0.029, ref)["ok"]  # 1e-2 of the largest |logit| (3.0) is 0.03
    off = rt.parity(ref + 0.031, ref)
    assert not off["ok"] and "differ from onnxruntime's by 3.10e-02" in off["reason"]
    swapped = rt.parity(ref[:, ::-1].copy(), ref)
    assert swapped["top1_agreement"] == 0.5 and not swapped["ok"]


def test_bench_with_a_runtime_missing_says_so_and_carries_on(tmp_path):
    shim = tmp_path / "shim" / "openvino"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named openvino (this test hides it)")\n')
    bundle = make_cnn_bundle(tmp_path / "b")
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "shim"), str(REPO)]), COLUMNS="200")
    args = ["--runtime", "onnxruntime,openvino", "--runs", "3", "--rounds", "1", "--warmup", "0", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune", "bench", str(bundle), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    said = " ".join(proc.stdout.split())
    assert "SKIPPED: openvino is not installed: pip install 'edgeprune[openvino]'" in said
    rows = {r["runtime"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["openvino"]["status"] == "skipped" and rows["openvino"]["latency"] == {}
    assert rows["onnxruntime"]["status"] == "ok" and rows["onnxruntime"]["latency"]["1"]["p50_ms"] > 0
    assert "* ship b/float (onnxruntime, float)" in said


def test_an_unknown_runtime_is_one_sentence(tmp_path):
    from edgeprune.errors import UserError

    with pytest.raises(UserError, match="unknown --runtime tvm; choose from onnxruntime, openvino, ncnn"):
        make_settings(runtime="onnxruntime,tvm")


def test_the_ship_mark_takes_the_fastest_within_the_accuracy_tolerance():
    from edgeprune.bench.choose import choose

    def row(name, runtime, variant, p50, acc):
        lat = {"1": {"p50_ms": p50}}
        return {"name": name, "runtime": runtime, "variant": variant, "status": "ok", "latency": lat, "accuracy": acc}

    rows = [
        row("m/float", "onnxruntime", "float", 4.0, 0.900),
        row("m/int8", "onnxruntime", "int8", 3.0, 0.880),  # 2 points lost: beyond a 1-point tolerance
        row("m/float@openvino", "openvino", "float", 2.5, 0.899),
        row("m/int8@openvino", "openvino", "int8", 1.0, 0.850),  # fastest, but 5 points lost
    ]
    (pick,) = choose(rows, 1, 1.0)
    assert pick["name"] == "m/float@openvino" and pick["speedup_vs_onnxruntime_float"] == pytest.approx(4.0 / 2.5)
    assert [r["ship"] for r in rows] == [False, False, True, False]
    assert "too inaccurate: m/int8, m/int8@openvino" in pick["reason"]
    (pick,) = choose(rows, 1, 6.0)
    assert pick["name"] == "m/int8@openvino"


def test_float_is_fp32_on_every_runtime_and_a_lower_precision_is_a_variant_that_says_so(tmp_path):
    """OpenVINO computes in bf16 by default on CPUs with AVX-512 BF16 or AMX, ncnn stores fp16: a float
    variant asks both for fp32, and a lower precision is asked for by name, reported by the session (from
    the runtime itself, for OpenVINO), carried by the bench row, the table and the ship line."""
    from rich.console import Console

    from edgeprune.bench.table import render

    bundle = make_cnn_bundle(tmp_path / "b")
    assert rt.get("onnxruntime").open(bundle / "model.onnx", 1).precision == "fp32"
    # a precision this runtime lacks here (a bundle made on another CPU): fp32, and the session says so
    assert rt.get("onnxruntime").open(bundle / "model.onnx", 1, precision="bf16").precision == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        rt.get("onnxruntime").open(bundle / "model.onnx", 1, precision="int4")
    ov_runtime = _needs("openvino")
    import openvino as ov

    session = ov_runtime.open(bundle / "model.onnx", 1)
    assert session.precision == "fp32" and session.options["inference_precision"] == "f32"
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")  # OpenVINO's own answer
    assert set(ov_runtime.lowered()) == {p for cap, p in (("BF16", "bf16"), ("FP16", "fp16")) if cap in caps}
    for precision in ov_runtime.lowered():
        assert ov_runtime.open(bundle / "model.onnx", 1, precision=precision).precision == precision

    # a bundle entry that asks for bf16 (as export writes one where the CPU has it) is benched so
    meta = json.loads((bundle / "meta.json").read_text())
    meta["models"].append({"name": "bf16", "file": "model.onnx", "runtime": "openvino", "precision": "bf16"})
    (bundle / "meta.json").write_text(json.dumps(meta))
    _write_manifest(bundle)
    report = bench([bundle], make_settings(**FAST))
    by_variant = {r["variant"]: r for r in report["results"]}
    assert by_variant["float"]["precision"] == "fp32"
    assert by_variant["bf16"]["precision"] == ("bf16" if "bf16" in ov_runtime.lowered() else "fp32")

    # the words, on a report whose bf16 row was chosen
    by_variant["bf16"]["precision"] = "bf16"
    chosen = dict(name=by_variant["bf16"]["name"], runtime="openvino", variant="bf16", precision="bf16")
    report["ship"] = [dict(report["ship"][0], **chosen)]
    console = Console(width=200, record=True)
    console.print(render(report))
    text = console.export_text()
    assert "openvino bf16" in text and "(openvino bf16, bf16)" in text
    assert rt.label("openvino", "fp32") == "openvino" and rt.label("ncnn", None) == "ncnn"

    # an entry asking for a precision edgeprune does not know is that row's failure, said
    meta["models"][-1]["precision"] = "int4"
    (bundle / "meta.json").write_text(json.dumps(meta))
    _write_manifest(bundle)
    report = bench([bundle], make_settings(**FAST))
    (row,) = [r for r in report["results"] if r["variant"] == "bf16"]
    assert row["status"] == "failed" and "asks for the precision 'int4'" in row["error"]
    narrow = Console(width=80, record=True)  # a terminal's usual width, with the runtime column: still said
    narrow.print(render(report))
    assert "FAILED" in narrow.export_text()


def test_export_makes_and_checks_every_installed_runtime(tmp_path):
    """The real conversions on a CNN: OpenVINO reads the ONNX file, its INT8 comes from NNCF, ncnn's
    files from pnnx; each row is parity-checked against onnxruntime, and what is missing says so."""
    bundle = make_cnn_bundle(tmp_path / "b")
    with np.load(bundle / "eval.npz") as z:
        x, y = z["x"], z["y"]
    out = tmp_path / "out"
    out.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, entries, files = export_rt.export_runtimes(
            tuple(rt.RUNTIMES), bundle / "model.onnx", out, tmp_path, x, y, x[:32], 100.0
        )
    by = {(r["runtime"], r["variant"]): r for r in rows}
    for name in ("openvino", "ncnn"):
        why = rt.get(name).missing()
        if why:
            assert by[(name, "float")]["status"] == "skipped" and by[(name, "float")]["reason"] == why
            continue
        float_row = by[(name, "float")]
        if float_row["status"] == "refused" and "not installed" in (float_row["reason"] or ""):
            continue  # pnnx missing: said in the row
        assert float_row["status"] == "ok", float_row["reason"]
        assert float_row["max_abs_diff"] <= RTOL * max(1.0, np.abs(reference_cnn_logits(x)).max())
        assert float_row["top1_agreement"] >= 0.99 and float_row["accuracy"] >= 0.98
    if not rt.get("openvino").missing():
        int8 = by[("openvino", "int8")]
        if int8["status"] != "unavailable":  # NNCF installed: a real INT8 IR, measured
            assert int8["status"] == "ok" and (out / "model.openvino-int8.xml").is_file()
            assert {"model.openvino-int8.xml", "model.openvino-int8.bin"} <= set(files)
            assert int8["acc_drop_points"] == pytest.approx((1.0 - int8["accuracy"]) * 100, abs=1e-3)
    assert by[("ncnn", "int8")]["status"] in ("unavailable",) or rt.get("ncnn").missing()
    # each lower precision the runtime has on this CPU is a variant named after it, judged on accuracy
    for name in ("openvino", "ncnn"):
        if by[(name, "float")]["status"] != "ok":
            continue
        for precision in rt.get(name).lowered():
            row = by[(name, precision)]
            assert row["precision"] in (precision, "fp32")  # what the runtime took (fp32 where it would not)
            assert row["acc_drop_points"] == pytest.approx((1.0 - row["accuracy"]) * 100, abs=1e-3)
            assert row["status"] == "ok"  # max_acc_drop 100 above: kept whatever it lost
            assert {"name": precision, "precision": precision, "runtime": name} in [
                {k: e.get(k) for k in ("name", "precision", "runtime")} for e in entries
            ]
    # the bundle entries name their runtime and, for converted files, the ONNX file they came from
    for e in entries:
        assert e["runtime"] in ("openvino", "ncnn")
        assert e["file"] == "model.onnx" or e["source"] == "model.onnx"


def test_export_runtimes_end_to_end_records_the_runtime_to_ship(data_root, tmp_path):
    """A trained CNN exported with --runtimes all: the bundle lists each runtime's kept variants, meta.json
    names the runtime and variant to ship (measured here), and bench times them all with the ship mark."""
    pytest.importorskip("torch")
    from edgeprune.config import resolve_train_config
    from edgeprune.export import export_run
    from edgeprune.train import train_run

    c = resolve_train_config(
        dataset="mnist", data_dir=data_root, out=tmp_path / "run", epochs=1, batch_size=32, prune=False, threads=1
    )
    c.model_config = {"channels": [4, 8], "hidden": [16]}
    train_run(c, quiet=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = export_run(tmp_path / "run", eval_n=64, calib=32, runtimes="all")
    meta = json.loads((tmp_path / "run" / "bundle" / "meta.json").read_text())
    listed = {(m.get("runtime") or "onnxruntime", m["name"]) for m in meta["models"]}
    kept = {(r["runtime"], r["variant"]) for r in summary["runtimes"] if r["status"] == "ok"}
    assert kept <= listed and ("onnxruntime", "float") in listed
    for r in summary["runtimes"]:  # every variant not kept says why, as a warning too
        if r["status"] != "ok":
            assert r["reason"] and any(r["reason"] in str(w.message) for w in caught)
    choice = meta["runtime"]
    assert choice == summary["runtime"] and (choice["name"], choice["model"]) in listed
    if kept:
        assert choice["chosen_by"].startswith("measured here")
        measured = [m for m in choice["measured"] if m["status"] == "ok"]
        float_ort = next(m for m in measured if (m["runtime"], m["model"]) == ("onnxruntime", "float"))
        within = [m for m in measured if (float_ort["accuracy"] - m["accuracy"]) * 100 <= 1.0 + 1e-9]
        assert choice["p50_ms"] == min(m["p50_ms"] for m in within)  # the fastest within the tolerance
    report = bench([tmp_path / "run" / "bundle"], make_settings(**FAST))
    assert {(r["runtime"], r["variant"]) for r in report["results"]} == listed
    assert all(r["status"] == "ok" for r in report["results"]), [r["error"] for r in report["results"]]
    assert sum(r["ship"] for r in report["results"]) == 1


def test_predict_runs_the_bundles_runtimes_and_names_the_one_to_ship(tmp_path):
    """deploy/predict.py: every listed runtime's model through the seam where edgeprune is there, the
    bundle's choice first in the summary; without edgeprune those models are skipped with the reason."""
    _needs("openvino")
    bundle = make_cnn_bundle(tmp_path / "b")
    meta = json.loads((bundle / "meta.json").read_text())
    meta["models"].append({"name": "float", "file": "model.onnx", "runtime": "openvino"})
    meta["runtime"] = {"name": "openvino", "model": "float", "file": "model.onnx"}
    (bundle / "meta.json").write_text(json.dumps(meta))
    _write_manifest(bundle)

    def predict(pythonpath: str, out: Path) -> dict:
        proc = subprocess.run(
            [sys.executable, str(REPO / "deploy" / "predict.py"), "run", str(bundle), str(out), "--timing-runs", "1"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=pythonpath),
            cwd=tmp_path,  # not the repository: edgeprune is importable only through PYTHONPATH
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    got = predict(str(REPO), tmp_path / "a.npz")
    assert got["ship"] == "float@openvino"
    assert got["models"]["float@openvino"]["accuracy"] == got["models"]["float"]["accuracy"] == 1.0
    with np.load(tmp_path / "a.npz") as z:
        ref = reference_cnn_logits(np.load(bundle / "eval.npz")["x"])
        assert np.abs(z["float@openvino"] - ref).max() <= RTOL * max(1.0, np.abs(ref).max())
    # a device without edgeprune: a package that fails to import stands first on the path (the test's
    # venv has edgeprune installed, so an empty PYTHONPATH would not hide it)
    shim = tmp_path / "no_edgeprune"
    (shim / "edgeprune").mkdir(parents=True)
    (shim / "edgeprune" / "__init__.py").write_text("raise ImportError('edgeprune is hidden by the test')\n")
    alone = predict(str(shim), tmp_path / "b.npz")
    assert alone["models"]["float@openvino"]["skipped"] == (
        "openvino models run through edgeprune, which is not installed here"
    )
    assert alone["models"]["float"]["accuracy"] == 1.0


def _masked_text_model(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A pretrained text model's interface: token ids and an attention mask in, two logits out (the
    mean of the attended tokens' embeddings, then a linear layer). Its weights, for the reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = {
        "emb": rng.standard_normal((50, 8)).astype(np.float32),
        "w": rng.standard_normal((8, 2)).astype(np.float32),
        "b": (rng.standard_normal(2) * 0.1).astype(np.float32),
    }
    consts = {"axis1": np.array([1], np.int64), "axis2": np.array([2], np.int64)}
    nodes = [
        helper.make_node("Gather", ["emb", "input"], ["e"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "axis1"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["total", "count"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "w", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "masked_text",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input", "attention_mask")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(v, k) for k, v in {**w, **consts}.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeprune-tests")
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def _packed_tweets(n: int = 40, seq: int = 12) -> np.ndarray:
    """[N, 2, T] int64: ids, then a mask of 1s over each row's first 2..T tokens (0 ids after them)."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(2, seq + 1, n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 50, (n, seq)) * mask
    return np.stack([ids, mask], axis=1)


def test_a_model_with_ids_and_attention_mask_runs_and_exports_on_every_runtime(tmp_path):
    """A pretrained text model takes two inputs: run_all splits the packed eval rows into them (the
    crash this replaces: 'Required inputs (['attention_mask']) are missing'), and export_runtimes
    checks every runtime on it, a runtime that cannot run it being a refused row with a sentence."""
    source = tmp_path / "model.onnx"
    w = _masked_text_model(source)
    x = _packed_tweets()
    ids, mask = x[:, 0], x[:, 1].astype(np.float64)
    # the reference, a second way: numpy's masked mean of the embeddings, then the linear layer
    ref = ((w["emb"].astype(np.float64)[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)) @ w["w"] + w["b"]
    out = rt.run_all(rt.get("onnxruntime").open(source, 1), x, chunk=3)
    assert out.shape == (40, 2) and np.abs(out - ref).max() <= 1e-4
    y = ref.argmax(1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, entries, files = export_rt.export_runtimes(
            tuple(rt.RUNTIMES), source, out_dir, tmp_path, x, y, x[:16], 100.0
        )
    by = {(r["runtime"], r["variant"]): r for r in rows}
    if not rt.get("openvino").missing():
        assert by[("openvino", "float")]["status"] == "ok", by[("openvino", "float")]["reason"]
        assert by[("openvino", "float")]["max_abs_diff"] <= RTOL * max(1.0, np.abs(ref).max())
        assert by[("openvino", "float")]["accuracy"] == 1.0
        int8 = by[("openvino", "int8")]
        if int8["status"] != "unavailable":  # NNCF calibrated on both inputs, and the IR measured on them
            assert int8["accuracy"] is not None and int8["eval_n"] == 40, int8["reason"]
    if not rt.get("ncnn").missing() and export_rt._pnnx() is not None:
        row = by[("ncnn", "float")]
        assert row["status"] == "ok" or (row["status"] == "refused" and row["reason"].startswith("ncnn cannot run it"))


def test_two_runs_with_the_same_name_stay_two_models(tmp_path):
    """runs/demo/baseline and runs/other/baseline (the runtime benchmark's inputs) are two models: their
    rows are named after as many parent directories as tell them apart, and each gets its own ship mark
    (they were one group 'baseline', so one model's variant was chosen for both)."""
    from edgeprune.bench.choose import group_of
    from edgeprune.bench.discover import discover

    roots = []
    for parent, seed in (("demo", 0), ("other", 1)):
        run = tmp_path / parent / "baseline"
        make_cnn_bundle(run / "bundle", seed=seed)
        (run / "config.json").write_text("{}")
        roots.append(run / "bundle")
    lone = make_cnn_bundle(tmp_path / "demo" / "pruned" / "bundle")  # not in a run: named after itself
    names = [m.name for m in discover([*roots, roots[0], lone])]
    assert names == ["demo/baseline/float", "other/baseline/float", "demo/baseline/float#2", "bundle/float"]
    report = bench(roots, make_settings(**FAST))
    assert sorted(group_of(r) for r in report["results"]) == ["demo/baseline", "other/baseline"]
    assert sorted(c["group"] for c in report["ship"]) == ["demo/baseline", "other/baseline"]
    assert sum(r["ship"] for r in report["results"]) == 2


def test_onnxruntimes_int8_file_on_openvino_is_named_apart_from_openvinos_own_int8(tmp_path):
    """With --runtime all, onnxruntime's int8 ONNX file also runs on OpenVINO, beside OpenVINO's own int8
    entry: the two rows get names that say which file each is (they were int8@openvino and int8@openvino#2),
    stay in one model's group, and write two run-directory records, not one over the other."""
    import shutil

    from edgeprune.bench.choose import group_of
    from edgeprune.bench.discover import discover
    from edgeprune.bench.runner import run_dir_files

    run = tmp_path / "lite0"
    bundle = make_cnn_bundle(run / "bundle")
    (run / "config.json").write_text("{}")
    shutil.copyfile(bundle / "model.onnx", bundle / "model.int8.onnx")  # stand-ins: any ONNX files
    shutil.copyfile(bundle / "model.onnx", bundle / "model.ov-int8.onnx")
    meta = json.loads((bundle / "meta.json").read_text())
    meta["models"] += [
        {"name": "int8", "file": "model.int8.onnx"},
        {"name": "int8", "file": "model.ov-int8.onnx", "runtime": "openvino"},
    ]
    (bundle / "meta.json").write_text(json.dumps(meta))
    _write_manifest(bundle)
    models = discover([bundle], ("onnxruntime", "openvino"))
    by_name = {m.name: m for m in models}
    assert sorted(by_name) == [
        "lite0/float",
        "lite0/float@openvino",
        "lite0/int8",
        "lite0/int8(model.int8.onnx)@openvino",
        "lite0/int8@openvino",
    ]
    assert by_name["lite0/int8(model.int8.onnx)@openvino"].path.name == "model.int8.onnx"
    assert by_name["lite0/int8@openvino"].path.name == "model.ov-int8.onnx"
    assert {m.variant for m in models if "int8" in m.name} == {"int8"}
    assert len({m.key for m in models}) == len(models)
    fake = {"settings": {"label": "bench"}, "machine": {"emulated": False}}
    rows = [{"name": m.name, "runtime": m.runtime} for m in models]
    assert len(run_dir_files(models, dict(fake, results=rows))) == len(models)  # one record per row
    assert {group_of(r) for r in rows} == {"lite0"}
