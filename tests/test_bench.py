"""edgeprune bench: behaviour and correctness (timings are benchmarks/, not tests)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgeprune.bench import bench, env, feeds, make_settings, metrics, onnxfile  # noqa: E402
from edgeprune.bench.identity import identity_model  # noqa: E402
from edgeprune.cli import app  # noqa: E402
from edgeprune.errors import UserError  # noqa: E402
from edgeprune.targets import TARGETS, Target, get_target  # noqa: E402

FAST = ["--runs", "5", "--rounds", "2", "--warmup", "1"]
W = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)  # 4 -> 3 classes
B = np.zeros(3, dtype=np.float32)


def image_meta(**kw) -> dict:
    meta = {
        "format": 1,
        "task": "image",
        "labels": ["a", "b", "c"],
        "input_name": "input",
        "input_dtype": "float32",
        "input_shape": ["batch", 1, 2, 2],
        "layout": "NCHW",
        "normalization": None,
        "vocab_size": None,
        "max_len": None,
        "binary_sigmoid": False,
        "params": 15,
        "edgeprune_version": "0.1.0",
        "source_run": "test",
    }
    meta.update(kw)
    return meta


def save(model, path: Path, meta: dict | None) -> Path:
    if meta is not None:
        helper.set_model_props(model, {"edgeprune": json.dumps(meta)})
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def gemm_classifier(path: Path, meta: dict | None = None) -> Path:
    """Flatten [batch,1,2,2] -> Gemm -> logits [batch,3]: argmax of the first three pixels."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path, meta)


def token_sum_model(path: Path, meta: dict | None) -> Path:
    """int64 ids [batch, seq] -> one logit (sum of ids - 10): a binary sigmoid text model."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
            helper.make_node("Sub", ["s", "ten"], ["logit"]),
        ],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1])],
        [
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(np.array(10, np.float32), "ten"),
        ],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path, meta)


def unknown_op_model(path: Path) -> Path:
    """A well-formed ONNX file onnxruntime refuses to load."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["logits"], domain="edgeprune.test")],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("edgeprune.test", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def eval_set(n: int = 20, wrong: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, labels with `wrong` of them flipped, and the model's true predictions."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 2, 2)).astype(np.float32)
    pred = x.reshape(n, 4)[:, :3].argmax(axis=1).astype(np.int64)
    y = pred.copy()
    y[:wrong] = (y[:wrong] + 1) % 3
    return x, y, pred


def make_bundle(root: Path, models: list[tuple[str, str]], x=None, y=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    meta = dict(
        image_meta(),
        models=[{"name": n, "file": f} for n, f in models],
        default=models[0][0],
        eval="eval.npz" if x is not None else None,
        metrics={},
    )
    (root / "meta.json").write_text(json.dumps(meta))
    if x is not None:
        np.savez(root / "eval.npz", x=x, y=y)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(root.iterdir()) if p.is_file()]
    (root / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good") / "mnist-tiny"
    root.mkdir()
    gemm_classifier(root / "model.onnx", image_meta())
    gemm_classifier(root / "model.copy.onnx", None)  # no metadata: params from initializers
    x, y, _ = eval_set()
    return make_bundle(root, [("float", "model.onnx"), ("copy", "model.copy.onnx")], x, y)


@pytest.fixture(scope="module")
def good_report(good_bundle) -> dict:
    settings = make_settings(batch="1,4", runs=5, rounds=2, warmup=2, threads=1, label="t")
    return bench([good_bundle], settings, command=["edgeprune", "bench"])


def invoke(args: list[str]):
    return CliRunner().invoke(app, ["bench", *map(str, args)])


# --- the report ----------------------------------------------------------------------------


def test_report_has_the_documented_fields(good_report):
    assert good_report["format"] == 1
    assert {
        "onnxruntime",
        "cpu_model",
        "isa",
        "cores_logical",
        "python",
        "machine",
        "execution_provider",
        "emulated",
    } <= set(good_report["machine"])
    assert good_report["settings"]["batches"] == [1, 4]
    for row in good_report["results"]:
        assert row["status"] == "ok", row["error"]
        for key in (
            "name",
            "path",
            "error",
            "params",
            "file_bytes",
            "file_bytes_gz",
            "accuracy",
            "f1",
            "eval_n",
            "latency",
            "memory",
            "session_options",
        ):
            assert key in row
        assert set(row["latency"]) == {"1", "4"}
        for lat in row["latency"].values():
            assert lat["runs"] == 10 and lat["rounds"] == 2
            assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
            assert lat["round_min_ms"] <= lat["round_median_ms"]
            assert lat["floor_p50_ms"] > 0 and lat["throughput_sps"] > 0
        opts = row["session_options"]
        assert opts["intra_op_num_threads"] == 1
        assert opts["enable_cpu_mem_arena"] is True and opts["enable_mem_pattern"] is True
    names = [r["name"] for r in good_report["results"]]
    assert names == ["mnist-tiny/float", "mnist-tiny/copy"]


def test_conditions_are_recorded(good_report):
    c = good_report["conditions"]
    assert c["seconds"] > 0 and len(c["loadavg_before"]) == 3
    assert c["background_cpu_cores"] >= 0 and c["steal_cpu_cores"] >= 0
    assert isinstance(c["busy"], bool)


def test_memory_is_ordered(good_report):
    for row in good_report["results"]:
        m = row["memory"]
        assert 0 < m["rss_before_mb"] <= m["rss_after_load_mb"] <= m["rss_peak_mb"]
        assert m["ru_maxrss_mb"] > 0


def test_accuracy_and_f1_against_known_answer(good_report):
    _, y, pred = eval_set()
    tp = [np.sum((pred == c) & (y == c)) for c in range(3)]
    fp = [np.sum((pred == c) & (y != c)) for c in range(3)]
    fn = [np.sum((pred != c) & (y == c)) for c in range(3)]
    macro = np.mean([2 * t / (2 * t + p + n) for t, p, n in zip(tp, fp, fn)])
    for row in good_report["results"]:
        assert row["eval_n"] == 20
        assert row["accuracy"] == pytest.approx(15 / 20, abs=1e-12)
        assert row["f1"] == pytest.approx(macro, abs=1e-12)


def test_params_and_sizes(good_report):
    float_row, copy_row = good_report["results"]
    assert float_row["params"] == 15 and float_row["params_source"] == "model metadata"
    assert copy_row["params"] == W.size + B.size  # counted from the initializers
    for row in good_report["results"]:
        assert row["file_bytes"] == Path(row["path"]).stat().st_size
        assert 0 < row["file_bytes_gz"]


def text_bundle(tmp_path: Path) -> Path:
    """A one-logit (sigmoid) token-sum text model in a bundle of 4 eval rows, 3 of them right."""
    meta = image_meta(
        task="text",
        labels=["neg", "pos"],
        input_name="ids",
        input_dtype="int64",
        input_shape=["batch", "seq"],
        layout="NT",
        vocab_size=50,
        max_len=6,
        binary_sigmoid=True,
        params=0,
    )
    token_sum_model(tmp_path / "text.onnx", meta)
    x = np.array(
        [[1, 1, 1, 1, 1, 1], [5, 5, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0], [9, 9, 0, 0, 0, 0]], dtype=np.int64
    )  # sums 6, 15, 0, 18 -> pred 0 1 0 1
    y = np.array([0, 1, 1, 1], dtype=np.int64)  # one positive missed
    return make_bundle(tmp_path / "textb", [("float", "../text.onnx")], x, y)


def test_text_model_binary_sigmoid(tmp_path):
    root = text_bundle(tmp_path)
    report = bench([root], make_settings(runs=3, rounds=1, warmup=0, threads=1))
    row = report["results"][0]
    assert row["status"] == "ok", row["error"]
    assert row["accuracy"] == pytest.approx(0.75)
    # macro-F1: class 1 (tp 2, fp 0, fn 1) 4/5 and class 0 (tp 1, fp 1, fn 0) 2/3, averaged
    assert row["f1"] == pytest.approx((2 * 2 / (2 * 2 + 0 + 1) + 2 * 1 / (2 * 1 + 1 + 0)) / 2)
    assert row["inputs"][0]["bench_shape"]["1"] == [1, 6]  # eval data's shape


def test_model_without_metadata_uses_default_sequence(tmp_path):
    path = token_sum_model(tmp_path / "bare.onnx", None)
    report = bench([path], make_settings(runs=2, rounds=1, warmup=0, threads=1, batch="2"))
    row = report["results"][0]
    assert row["status"] == "ok", row["error"]
    assert row["inputs"][0]["bench_shape"]["2"] == [2, feeds.DEFAULT_SEQ]
    ids = feeds.synthetic(feeds.InputSpec("ids", "tensor(int64)", ("batch", "seq")), 3, None)
    assert ids.shape == (3, 128) and ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < 100


# --- failures ------------------------------------------------------------------------------


def test_broken_models_become_failed_rows_and_others_are_measured(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    gemm_classifier(root / "good.onnx", image_meta())
    (root / "garbage.onnx").write_bytes(b"this is not an onnx model at all")
    unknown_op_model(root / "unknown.onnx")
    make_bundle(
        root,
        [
            ("good", "good.onnx"),
            ("garbage", "garbage.onnx"),
            ("unknown", "unknown.onnx"),
            ("missing", "missing.onnx"),
            ("good2", "good.onnx"),
        ],
    )
    out = tmp_path / "out.json"
    result = invoke([root, *FAST, "--json", out])
    assert result.exit_code == 1, result.output
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    for ok in ("good", "good2"):
        assert rows[ok]["status"] == "ok" and rows[ok]["latency"]["1"]["p50_ms"] > 0
    for bad in ("garbage", "unknown", "missing"):
        assert rows[bad]["status"] == "failed" and rows[bad]["error"]
        assert rows[bad]["latency"] == {}
    assert "not a valid ONNX model" in rows["garbage"]["error"]
    assert "missing" in rows["missing"]["error"]
    assert "FAILED" in result.output  # the table is still printed


def test_a_bundle_changed_since_export_is_caught_by_its_manifest(tmp_path):
    import shutil

    root = tmp_path / "copied"
    root.mkdir()
    gemm_classifier(root / "model.onnx", image_meta())
    gemm_classifier(root / "other.onnx", image_meta())
    x, y, _ = eval_set()
    make_bundle(root, [("float", "model.onnx"), ("other", "other.onnx")], x, y)
    # a valid ONNX model, but not the one exported: the manifest is what notices
    gemm_classifier(root / "other.onnx", None)
    out = tmp_path / "out.json"
    result = invoke([root, *FAST, "--json", out])
    assert result.exit_code == 1, result.output
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["float"]["status"] == "ok"
    assert rows["other"]["status"] == "failed" and "does not match MANIFEST.sha256" in rows["other"]["error"]

    damaged = tmp_path / "damaged"
    shutil.copytree(root, damaged)
    with open(damaged / "eval.npz", "r+b") as f:  # the evaluation set is cut short in transit
        f.truncate(100)
    result = invoke([damaged, *FAST])
    assert result.exit_code == 2, result.output
    assert "eval.npz" in result.output and "no longer match MANIFEST.sha256" in result.output


def test_a_worker_that_dies_is_reported_not_raised(tmp_path):
    import signal

    from edgeprune.bench.process import WorkerError, WorkerProcess

    path = gemm_classifier(tmp_path / "m.onnx", image_meta())
    worker = WorkerProcess()
    try:
        reply = worker.request(
            {
                "cmd": "load",
                "path": str(path),
                "threads": 1,
                "arena": True,
                "mem_pattern": True,
                "batches": [1],
                "warmup": 0,
                "eval": None,
            },
            timeout=60,
        )
        assert reply["ok"], reply
        os.kill(worker.proc.pid, signal.SIGSEGV)  # what a crash inside onnxruntime looks like
        with pytest.raises(WorkerError, match="killed by signal 11"):
            worker.request({"cmd": "round", "batch": 1, "runs": 2}, timeout=60)
    finally:
        worker.kill()


@pytest.mark.parametrize("value", ["0", "a", "1,,8", "-1", "1.5"])
def test_bad_batch_is_one_clear_sentence(value, good_bundle):
    result = invoke([good_bundle, "--batch", value])
    assert result.exit_code == 2
    assert "--batch must be positive integers" in result.output


def test_bad_inputs_are_user_errors(tmp_path):
    (tmp_path / "notabundle").mkdir()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage!!")
    cases = {
        tmp_path / "nope.onnx": "does not exist",
        tmp_path / "notabundle": "is not a bundle",
        corrupt: "is not a valid ONNX model",
    }
    for path, message in cases.items():
        result = invoke([path])
        assert result.exit_code == 2, result.output
        assert message in result.output
    result = invoke([corrupt, "--runs", "3", "--seconds", "1"])
    assert result.exit_code == 2 and "either --runs or --seconds" in result.output
    result = invoke([corrupt, "--target", "pi9"])
    assert result.exit_code == 2 and "unknown --target" in result.output


# --- where results go ------------------------------------------------------------------------


def test_run_directory_gets_one_file_per_variant(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "fmnist-pruned"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    gemm_classifier(tmp_path / "m.onnx", image_meta())
    bundle = run / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes((tmp_path / "m.onnx").read_bytes())
    (bundle / "model.int8.onnx").write_bytes((tmp_path / "m.onnx").read_bytes())
    make_bundle(bundle, [("float", "model.onnx"), ("int8", "model.int8.onnx")])
    result = invoke([bundle, *FAST, "--label", "pi 4"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (run / "bench").glob("*.json"))
    assert files == ["pi_4-float.json", "pi_4-int8.json"]
    report = json.loads((run / "bench" / "pi_4-int8.json").read_text())
    assert report["format"] == 1 and report["machine"]["label"] == "pi_4"
    assert [r["name"] for r in report["results"]] == ["fmnist-pruned/int8"]
    monkeypatch.setenv("EDGEPRUNE_EMULATED", "1")  # emulated numbers never pass as the device's
    result = invoke([bundle, *FAST, "--label", "pi 4"])
    assert result.exit_code == 0 and "EMULATED" in result.output
    report = json.loads((run / "bench" / "pi_4-emulated-float.json").read_text())
    assert report["machine"]["emulated"] is True


def test_seconds_mode_is_bounded(tmp_path):
    path = gemm_classifier(tmp_path / "m.onnx", image_meta())
    report = bench([path], make_settings(seconds=0.2, rounds=2, warmup=0, threads=1))
    lat = report["results"][0]["latency"]["1"]
    assert report["settings"]["runs"] is None and lat["rounds"] == 2 and lat["runs"] >= 2


def test_bench_imports_neither_torch_nor_onnx(tmp_path):
    path = gemm_classifier(tmp_path / "m.onnx", image_meta())
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        sys.modules["onnx"] = None
        from typer.testing import CliRunner
        import edgeprune.bench, edgeprune.bench.worker, edgeprune.targets
        import edgeprune.bench.runtimes, edgeprune.bench.choose, edgeprune.latency.table
        from edgeprune.cli import app
        r = CliRunner().invoke(app, ["bench", {str(path)!r}, "--runs", "2", "--rounds", "1",
                                     "--warmup", "0"])
        assert r.exit_code == 0, r.output
        # on OpenVINO too (a skipped row where it is not installed), still without torch or onnx
        r = CliRunner().invoke(app, ["bench", {str(path)!r}, "--runtime", "onnxruntime,openvino",
                                     "--runs", "2", "--rounds", "1", "--warmup", "0"])
        assert r.exit_code == 0, r.output
        loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")
                  and sys.modules[m] is not None]
        assert not loaded, loaded
        print("clean")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=dict(os.environ), timeout=120
    )
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stdout + proc.stderr


def test_the_measuring_worker_imports_neither_torch_nor_onnx(tmp_path):
    """The timing happens in a fresh worker process per model; each reports its own sys.modules."""
    from bundle_fixture import make_text_bundle, make_tiny_bundle

    from edgeprune.bench.worker import HEAVY_MODULES, heavy_modules

    image, text = make_tiny_bundle(tmp_path / "image"), make_text_bundle(tmp_path / "text")
    report = bench([image, text], make_settings(runs=2, rounds=1, warmup=0, threads=1))
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"image/float", "text/float"}
    for row in rows.values():
        assert row["status"] == "ok", row["error"]
        assert row["worker_modules"] == [], row["name"]
    assert rows["image/float"]["accuracy"] == 1.0 and rows["text/float"]["accuracy"] == 0.75  # both really ran
    # the report can see them: this (training-side) process has imported onnx, and torch now
    pytest.importorskip("torch")
    assert {"torch", "onnx"} <= set(heavy_modules()) <= set(HEAVY_MODULES)


# --- pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ort_type,dtype,shape", [("tensor(float)", np.float32, (3, 1, 28, 28)), ("tensor(int64)", np.int64, (2, 7))]
)
def test_identity_floor_model_runs_in_onnxruntime(ort_type, dtype, shape):
    import onnxruntime as ort

    model = identity_model([("x", ort_type, len(shape))])
    onnx.checker.check_model(onnx.load_from_string(model))
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x)


def test_onnxfile_reads_models_without_onnx(tmp_path):
    path = gemm_classifier(tmp_path / "m.onnx")
    assert onnxfile.check_model(path) is None
    assert onnxfile.count_initializer_elements(path) == 15
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 10)
    assert onnxfile.check_model(tmp_path / "bad.onnx")
    assert onnxfile.count_initializer_elements(tmp_path / "bad.onnx") is None


def test_metrics_known_values():
    assert metrics.predictions(np.array([[0.3], [-0.1]])).tolist() == [1, 0]
    assert metrics.predictions(np.array([[0.1, 0.9, 0.0]])).tolist() == [1]
    y, p = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1])
    assert metrics.f1(y, p, 2) == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    stats = metrics.latency_stats([[1.0, 3.0, 2.0], [10.0, 10.0, 10.0]], 2, [0.1, 0.2, 0.3])
    assert stats["round_median_ms"] == pytest.approx(6.0)  # median of round medians 2 and 10
    assert stats["round_min_ms"] == pytest.approx(2.0) and stats["min_ms"] == 1.0
    assert stats["floor_p50_ms"] == pytest.approx(0.2)
    assert stats["throughput_sps"] == pytest.approx(2 * 1000 / 6.0, abs=0.1)


def test_cpuinfo_and_emulation(monkeypatch):
    pi4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
    cpu = env.parse_cpuinfo(pi4)
    assert cpu["cpu_model"] == "Cortex-A72" and cpu["isa"] == ["asimd"]
    monkeypatch.delenv("EDGEPRUNE_EMULATED", raising=False)
    assert env.emulation("aarch64", cpu, pi4) is None
    x86 = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx_vnni\nmodel name\t: Xeon\n"
    assert "qemu" in env.emulation("aarch64", env.parse_cpuinfo(x86), x86)
    monkeypatch.setenv("EDGEPRUNE_EMULATED", "1")
    assert env.emulation("x86_64", env.parse_cpuinfo(x86), x86)


# --- targets -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_is_complete(name):
    t = get_target(name)
    assert isinstance(t, Target) and t.name == name and t.description and t.why
    assert t.quantization_conv in ("static", "dynamic", "none")
    assert t.quantization_linear in ("static", "dynamic", "none")
    assert t.threads is None or t.threads >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.threads = 1  # frozen


def test_target_presets_and_threads():
    assert set(TARGETS) >= {"rpi4", "rpi5", "x86"}
    assert TARGETS["rpi4"].threads == 4 and TARGETS["rpi5"].threads == 4
    assert TARGETS["x86"].threads is None and TARGETS["x86"].reduce_range
    assert "dot-product" in TARGETS["rpi4"].why
    cores = env.usable_cores()
    assert make_settings(target="rpi4").threads == min(4, cores)
    assert make_settings(target="x86").threads == cores
    assert make_settings(target="rpi4", threads=1).threads == 1  # explicit flag wins
    # ... up to the usable cores: more is capped, with a warning, and the settings say so
    with pytest.warns(UserWarning, match=f"--threads {cores + 1} capped to the {cores} usable cores"):
        capped = make_settings(target="rpi4", threads=cores + 1)
    assert (capped.threads, capped.threads_requested) == (cores, cores + 1)
    assert capped.threads_source == f"--threads {cores + 1} capped to the {cores} usable cores"
    with pytest.raises(UserError):
        get_target("pi9")
