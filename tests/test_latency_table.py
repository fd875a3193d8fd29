"""Latency tables: probes (torch, host), measured with onnxruntime alone (torch made unimportable),
fitted with non-negative coefficients (numpy), and refused when they belong to another model,
other threads or are damaged, through the real `edgeprune` entry point.

Timings here are a few calls of tiny models on a shared machine: the tests check that the
pieces fit and the error is measured and recorded, not how small it is (docs/bench.md has that).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from test_cli_errors import EDGEPRUNE, run_cli  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models.resnet import BasicBlock  # noqa: E402

from edgeprune.errors import UserError  # noqa: E402
from edgeprune.latency.model import LatencyModel, check_table, fingerprint, load_latency_model, nnls  # noqa: E402
from edgeprune.latency.probes import (  # noqa: E402
    DEFAULT_N,
    HELD_OUT,
    default_count,
    groups_of,
    macs_per_tensor,
    make_probes,
    model_fingerprint,
)
from edgeprune.models import build_model  # noqa: E402
from edgeprune.prune.cost import CostModel  # noqa: E402
from edgeprune.prune.groups import sizes_after  # noqa: E402

TINY_CNN = {
    "name": "cnn",
    "config": {"in_channels": 1, "image_size": [12, 12], "channels": [8, 16], "hidden": [16], "num_classes": 4},
}
FAST = ["--threads", "1", "--runs", "10", "--rounds", "3", "--warmup", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyResNet(nn.Module):
    """A torchvision-like model (its BasicBlock with a strided projection), pruned through tracing."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        down = nn.Sequential(nn.Conv2d(16, 24, 1, stride=2, bias=False), nn.BatchNorm2d(24))
        self.layer = nn.Sequential(BasicBlock(16, 24, stride=2, downsample=down), BasicBlock(24, 24))
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.layer(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def tiny_cnn():
    torch.manual_seed(0)
    return build_model(TINY_CNN).eval()


def tiny_bilstm():
    torch.manual_seed(0)
    arch = {"name": "bilstm", "config": {"vocab_size": 30, "embed_dim": 9, "hidden": [[6, 5]], "num_outputs": 1}}
    return build_model(arch).eval()


TEXT_META = {"task": "text", "input_shape": ["batch", "seq"], "input_dtype": "int64", "vocab_size": 30, "max_len": 12}


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probes")
    make_probes(tiny_cnn(), torch.randn(2, 1, 12, 12), None, root / "cnn", n=16, min_width=2, round_to=2)
    make_probes(TinyResNet().eval(), torch.randn(2, 3, 16, 16), None, root / "resnet", n=6, min_width=4, round_to=4)
    tokens = torch.randint(1, 30, (2, 7))
    make_probes(tiny_bilstm(), tokens, None, root / "bilstm", n=4, min_width=2, round_to=1, meta=TEXT_META)
    return {"cnn": root / "cnn", "resnet": root / "resnet", "bilstm": root / "bilstm", "root": root}


@pytest.fixture(scope="module")
def tables(probes) -> dict[str, Path]:
    """Every probe directory measured in one process where torch and onnx cannot be imported."""
    out = {k: probes["root"] / f"{k}-table.json" for k in ("cnn", "resnet", "bilstm")}
    calls = [["bench", "--latency-probes", str(probes[k]), "--json", str(out[k]), *FAST] for k in out]
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        sys.modules["onnx"] = None
        from typer.testing import CliRunner
        from edgeprune.cli import app
        for args in {calls!r}:
            r = CliRunner().invoke(app, args)
            assert r.exit_code == 0, (args, r.output, r.exception)
            assert "held-out error" in r.output or "not made" in r.output, r.output
        loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx") and sys.modules[m] is not None]
        assert not loaded, loaded
        print("clean")
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=probes["root"],
    )
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stdout + proc.stderr
    return out


def manifest(d: Path) -> dict:
    return json.loads((d / "probes.json").read_text())


# --- probes -----------------------------------------------------------------------------------


def test_cnn_probes_sample_the_width_space(probes):
    m = manifest(probes["cnn"])
    full = m["groups"]
    assert full == {"conv0": 8, "conv1": 16, "fc0": 16}
    rows = m["probes"]
    assert len(rows) == 16 and len({json.dumps(p["widths"], sort_keys=True) for p in rows}) == 16
    assert rows[0]["kind"] == "full" and rows[0]["widths"] == full
    assert rows[1]["kind"] == "min" and rows[1]["widths"] == {g: 2 for g in full}
    held = [p for p in rows if p["held_out"]]
    assert len(held) == 4 and all(p["kind"] == "random" for p in held)
    for p in rows:
        for g, w in p["widths"].items():
            assert 2 <= w <= full[g] and (w % 2 == 0 or w == full[g])
    assert m["fingerprint"] == model_fingerprint(tiny_cnn(), torch.randn(2, 1, 12, 12))


def test_probe_macs_are_numel_times_uses_of_the_compacted_tensors(probes):
    """The manifest's MACs equal what the pruner computes for the same widths (sizes_after)."""
    model, x = tiny_cnn(), torch.randn(2, 1, 12, 12)
    groups = groups_of(model, x)
    factors = CostModel(model, x).macs_factors
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    for p in manifest(probes["cnn"])["probes"]:
        assert p["macs"] == macs_per_tensor(factors, sizes_after(shapes, groups, p["widths"]))
    assert manifest(probes["cnn"])["macs_factors"] == factors


@pytest.mark.parametrize("name,x", [("cnn", np.zeros((3, 1, 12, 12), np.float32)), ("resnet", None)])
def test_probes_run_in_onnxruntime_at_their_widths(probes, name, x):
    m = manifest(probes[name])
    x = x if x is not None else np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    params = []
    for p in m["probes"]:
        sess = ort.InferenceSession(str(probes[name] / p["file"]), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"input": x})
        assert y.shape[0] == 3
        params.append(p["params"])
    assert params[0] == max(params) and params[1] == min(params) < params[0]


def test_traced_model_probes_vary_every_traced_group(probes):
    m = manifest(probes["resnet"])
    assert m["arch"] == "TinyResNet" and len(m["groups"]) >= 2
    assert m["fingerprint"] != manifest(probes["cnn"])["fingerprint"]
    rows = m["probes"]
    for g, full in m["groups"].items():
        assert rows[0]["widths"][g] == full and rows[1]["widths"][g] == min(4, full)
    assert all(t in m["tensor_owner"] for t in m["macs_factors"])


def test_fingerprint_follows_architecture_and_input():
    model = tiny_cnn()
    a = model_fingerprint(model, torch.randn(2, 1, 12, 12))
    assert a == model_fingerprint(tiny_cnn(), torch.randn(5, 1, 12, 12))  # the batch does not matter
    wider = build_model({**TINY_CNN, "config": {**TINY_CNN["config"], "hidden": [24]}})
    assert model_fingerprint(wider, torch.randn(2, 1, 12, 12)) != a
    assert fingerprint("cnn", {"conv0": 8}, ["float[1x12x12]"]) != fingerprint("cnn", {"conv0": 8}, ["float[1x14x14]"])


def test_probes_command_builds_the_run_model_at_full_width(tmp_path):
    """`edgeprune probes RUN` needs only config.json, and gives the fingerprint train's model has."""
    from typer.testing import CliRunner

    from edgeprune.cli import app
    from edgeprune.models import default_config

    meta = {"task": "image", "labels": list("abcd"), "dataset": "own", "input_shape": ["batch", 1, 12, 12]}
    cfg = {"model": "cnn", "model_config": {"channels": [8, 16], "hidden": [16]}}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": cfg, "input": meta}))
    r = CliRunner().invoke(app, ["probes", str(run), "--n", "4", "--min-width", "2", "--round-to", "2"])
    assert r.exit_code == 0, r.output
    m = manifest(run / "latency" / "probes")
    assert len(m["probes"]) == 4 and all((run / "latency" / "probes" / p["file"]).is_file() for p in m["probes"])
    spec = {"name": "cnn", "config": {**default_config("cnn", meta), **cfg["model_config"]}}
    assert m["fingerprint"] == model_fingerprint(build_model(spec), torch.randn(2, 1, 12, 12))
    assert m["groups"] == {"conv0": 8, "conv1": 16, "fc0": 16}


# --- measuring (no torch) and fitting ---------------------------------------------------------------


def test_table_is_measured_without_torch_and_describes_itself(probes, tables):
    t = json.loads(tables["cnn"].read_text())
    assert t["format"] == "edgeprune.latency-table" and t["version"] == 1
    assert t["fingerprint"] == manifest(probes["cnn"])["fingerprint"]
    assert (t["threads"], t["batch"]) == (1, 1)
    assert t["worker_modules"] == []  # the measuring processes imported no torch or onnx either
    assert t["onnxruntime"] == ort.__version__ and t["emulated"] is False
    assert t["machine"]["cores_usable"] >= 1 and isinstance(t["conditions"]["busy"], bool)
    assert len(t["samples"]) == 16 and all(s["status"] == "ok" and s["p50_ms"] > 0 for s in t["samples"])
    assert sum(s["held_out"] for s in t["samples"]) == 4


def test_fit_records_a_finite_held_out_error(tables):
    t = json.loads(tables["cnn"].read_text())
    fit = t["fit"]
    assert fit["n_fit"] == 12 and fit["n_held_out"] == 4 and fit["level"] in ("tensor", "group", "total")
    assert fit["target"] == ("round_min_ms" if t["conditions"]["busy"] else "p50_ms")
    for key in ("held_out_mean_rel_error", "held_out_max_rel_error", "fit_mean_rel_error"):
        assert math.isfinite(fit[key]) and fit[key] >= 0
    assert fit["held_out_max_rel_error"] >= fit["held_out_mean_rel_error"]
    assert fit["intercept_ms"] >= 0 and all(c >= 0 for c in fit["coef_ms_per_mmac"].values())
    again = LatencyModel.fit(t)  # the same fit from the table alone
    assert again.report["held_out_mean_rel_error"] == fit["held_out_mean_rel_error"]
    print(
        f"tiny CNN held-out error: mean {fit['held_out_mean_rel_error']:.1%}, max {fit['held_out_max_rel_error']:.1%}"
    )


def test_runtime_image_entrypoint_measures_a_probes_directory(probes, tmp_path):
    results = tmp_path / "results"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        EDGEPRUNE_BUNDLE=str(probes["resnet"]),
        EDGEPRUNE_RESULTS=str(results),
        EDGEPRUNE_DEVICE="pi 4",
        EDGEPRUNE_THREADS="1",
        EDGEPRUNE_RUNS="3",
        EDGEPRUNE_ROUNDS="2",
    )
    entrypoint = Path(__file__).resolve().parents[1] / "docker" / "entrypoint.sh"
    proc = subprocess.run(
        ["sh", str(entrypoint), "--warmup", "1"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = json.loads((results / "latency-pi_4.json").read_text())
    assert table["format"] == "edgeprune.latency-table" and table["threads"] == 1
    assert table["fingerprint"] == manifest(probes["resnet"])["fingerprint"]


def test_resnet_table_fits_and_too_few_probes_are_recorded_not_fatal(tables):
    fit = json.loads(tables["resnet"].read_text())["fit"]
    assert fit["n_held_out"] >= 1 and math.isfinite(fit["held_out_mean_rel_error"])
    text = json.loads(tables["bilstm"].read_text())
    assert all(s["status"] == "ok" for s in text["samples"])  # token probes are fed ids within the vocabulary
    assert "too few" in text["fit"]["error"]


def test_predictions_are_monotone_in_widths(probes, tables):
    """Non-negative coefficients: one more unit in any group never predicts less time."""
    lm = load_latency_model(tables["cnn"], manifest(probes["cnn"])["fingerprint"], threads=1, batch=1)
    model, x = tiny_cnn(), torch.randn(2, 1, 12, 12)
    groups = groups_of(model, x)
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    rng = np.random.default_rng(0)
    for _ in range(30):
        widths = {g.name: int(rng.integers(1, g.width + 1)) for g in groups}
        base = lm.predict_shapes(sizes_after(shapes, groups, widths))
        factors = CostModel(model, x).macs_factors
        assert base == pytest.approx(lm.predict(macs_per_tensor(factors, sizes_after(shapes, groups, widths))))
        for g in groups:
            if widths[g.name] < g.width:
                more = lm.predict_shapes(sizes_after(shapes, groups, {**widths, g.name: widths[g.name] + 1}))
                assert more >= base
    assert lm.predict_shapes(shapes) >= lm.predict_shapes(sizes_after(shapes, groups, {g.name: 2 for g in groups}))


def synthetic_table(n=24, held=6, noise=0.0, seed=0) -> dict:
    """A table whose latencies are known: 0.02 ms + 3e-6 ms/MAC on a, 1e-6 on b, nothing on c."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        macs = {"a": float(rng.integers(1000, 9000)), "b": float(rng.integers(100, 20000)), "c": 50.0 * (i % 5)}
        ms = (0.02 + 3e-6 * macs["a"] + 1e-6 * macs["b"]) * (1 + noise * rng.standard_normal())
        samples.append({"id": f"p{i}", "widths": {"g": i}, "macs": macs, "p50_ms": ms, "held_out": i >= n - held})
    return {
        "format": "edgeprune.latency-table",
        "version": 1,
        "fingerprint": "f" * 64,
        "threads": 2,
        "batch": 1,
        "tensor_owner": {"a": "g1", "b": "g1", "c": "g2"},
        "samples": samples,
    }


def test_fit_recovers_known_coefficients_and_keeps_them_non_negative():
    lm = LatencyModel.fit(synthetic_table())
    assert lm.level == "tensor" and lm.report["held_out_max_rel_error"] < 1e-6
    assert lm.intercept_ms == pytest.approx(0.02, rel=1e-6)
    assert lm.coef["a"] == pytest.approx(3e-6, rel=1e-6) and lm.coef["b"] == pytest.approx(1e-6, rel=1e-6)
    assert lm.coef["c"] == pytest.approx(0.0, abs=1e-12)
    noisy = LatencyModel.fit(synthetic_table(noise=0.05, seed=1))
    assert all(c >= 0 for c in noisy.coef.values()) and noisy.intercept_ms >= 0
    assert noisy.report["held_out_mean_rel_error"] < 0.1


def test_fewer_samples_than_tensors_fall_back_to_coarser_features():
    t = synthetic_table(n=7, held=2)  # 5 to fit: 3 tensors + intercept leave one to spare, too few
    assert LatencyModel.fit(t).level in ("group", "total")
    with pytest.raises(UserError, match="too few"):
        LatencyModel.fit(synthetic_table(n=4, held=2))


def test_the_default_probe_count_lets_a_24_group_model_be_fitted_per_group():
    groups = 24  # EfficientNet-Lite0's prunable groups

    def table(n: int) -> dict:
        """n probes of a model whose groups cost 1 to 10 units a MAC: not proportional to total MACs."""
        rng = np.random.default_rng(0)
        cost = np.linspace(1e-6, 1e-5, groups)
        held = set(rng.choice(n, size=round(HELD_OUT * n), replace=False).tolist())
        samples = []
        for i in range(n):
            macs = rng.integers(1000, 20000, groups).astype(float)
            ms = 0.05 + float(cost @ macs)
            samples.append(
                {"id": f"p{i}", "widths": {}, "macs": {f"t{j}": m for j, m in enumerate(macs)}, "p50_ms": ms}
                | {"held_out": i in held}
            )
        owner = {f"t{j}": f"g{j}" for j in range(groups)}
        return dict(synthetic_table(), tensor_owner=owner, samples=samples)

    n = default_count(groups)
    assert n == math.ceil(2 * (groups + 1) / (1 - HELD_OUT)) == 67 and default_count(3) == DEFAULT_N
    per_group = LatencyModel.fit(table(n))
    assert per_group.level != "total" and len(per_group.report["features"]) == groups
    assert per_group.report["held_out_max_rel_error"] < 1e-6  # the true costs, recovered
    total_only = LatencyModel.fit(table(DEFAULT_N))  # 24 probes to fit: too few for 24 costs and an intercept
    assert total_only.level == "total" and list(total_only.report["levels_tried"]) == ["total"]
    assert total_only.report["held_out_max_rel_error"] > 0.05


def test_nnls_meets_its_optimality_conditions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.standard_normal((int(rng.integers(3, 30)), int(rng.integers(1, 10)))) * rng.uniform(0.01, 100)
        b = rng.standard_normal(len(a))
        x = nnls(a, b)
        grad = a.T @ (a @ x - b)
        scale = np.abs(a).max() * (np.abs(b).max() + np.abs(a @ x).max())
        assert (x >= 0).all()
        assert (grad[x == 0] >= -1e-9 * scale).all() and np.allclose(grad[x > 0], 0, atol=1e-9 * scale)


def test_check_table_names_what_differs():
    t = synthetic_table()
    check_table(t, "f" * 64, threads=2, batch=1)
    with pytest.raises(UserError, match="another model"):
        check_table(t, "e" * 64, threads=2, batch=1)
    with pytest.raises(UserError, match="measured with 2 threads, this run uses 4"):
        check_table(t, "f" * 64, threads=4, batch=1)
    with pytest.raises(UserError, match="batch size 1, this run uses batch size 8"):
        check_table(t, "f" * 64, threads=2, batch=8)


def test_a_table_names_its_runtime_and_a_budget_on_another_is_refused(probes, tables, tmp_path):
    """The same probes on OpenVINO: a table of its own that says so; checking it for onnxruntime fails."""
    from typer.testing import CliRunner

    from edgeprune.bench.runtimes import get
    from edgeprune.cli import app

    assert json.loads(tables["resnet"].read_text())["runtime"] == "onnxruntime"
    t = synthetic_table()
    check_table(t, "f" * 64, threads=2, batch=1, runtime="onnxruntime")  # an older table: onnxruntime
    with pytest.raises(UserError, match="measured on onnxruntime, the budget is for openvino; measure the probes on"):
        check_table(t, "f" * 64, threads=2, batch=1, runtime="openvino")
    r = run_cli(["bench", "--latency-probes", str(probes["resnet"]), "--runtime", "ncnn", "--json", "t.json"], tmp_path)
    assert "latency probes are ONNX files, which ncnn does not read" in _one_error_line(r)
    if get("openvino").missing():
        pytest.skip(get("openvino").missing())
    out = tmp_path / "ov.json"
    r = CliRunner().invoke(
        app, ["bench", "--latency-probes", str(probes["resnet"]), "--runtime", "openvino", "--json", str(out), *FAST]
    )
    assert r.exit_code == 0, r.output
    table = json.loads(out.read_text())
    assert table["runtime"] == "openvino" and table["runtime_version"]
    ort_table = json.loads(tables["resnet"].read_text())
    assert [s["id"] for s in table["samples"]] == [s["id"] for s in ort_table["samples"]]
    assert all(s["p50_ms"] > 0 for s in table["samples"])
    check_table(table, table["fingerprint"], runtime="openvino")
    with pytest.raises(UserError, match="measured on openvino, the budget is for onnxruntime"):
        check_table(table, table["fingerprint"], runtime="onnxruntime")


# --- refused through the real entry point ------------------------------------------------------------


def _one_error_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    output = r.stdout + r.stderr
    assert "Traceback" not in output, output
    assert r.returncode == code, output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_the_cli_accepts_its_own_table(probes, tables, tmp_path):
    assert EDGEPRUNE.is_file(), f"{EDGEPRUNE} is missing: pip install -e '.[dev]' into this environment"
    r = run_cli(
        ["latency", str(tables["cnn"]), "--probes", str(probes["cnn"]), "--threads", "1", "--batch", "1"], tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "held-out error mean" in r.stdout


@pytest.mark.parametrize(
    "case,says",
    [
        ("foreign-model", ("was measured for another model", "make probes of this model", "--latency-probes")),
        ("other-threads", ("measured with 1 threads, this run uses 3", "--threads 3")),
        ("corrupt", ("is not a readable latency table", "measure the probes again")),
        ("not-a-table", ("is not a readable latency table", "format")),
        ("no-json", ("--latency-probes needs --json",)),
        ("two-batches", ("one batch size", "give one --batch")),
        ("no-probes", ("holds no latency probes", "edgeprune probes")),
        ("probes-of-no-run", ("is not a run directory", "edgeprune train")),
    ],
)
def test_a_table_that_does_not_fit_is_refused_in_one_line(probes, tables, tmp_path, case, says):
    table = str(tables["cnn"])
    broken = tmp_path / "broken.json"
    broken.write_text(tables["cnn"].read_text()[:300])  # cut short in transit
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": 1, "results": []}))
    args = {
        "foreign-model": ["latency", table, "--probes", str(probes["resnet"])],
        "other-threads": ["latency", table, "--threads", "3"],
        "corrupt": ["latency", str(broken)],
        "not-a-table": ["latency", str(other)],
        "no-json": ["bench", "--latency-probes", str(probes["cnn"])],
        "two-batches": ["bench", "--latency-probes", str(probes["cnn"]), "--batch", "1,8", "--json", str(broken)],
        "no-probes": ["bench", "--latency-probes", str(tmp_path), "--json", str(tmp_path / "t.json")],
        "probes-of-no-run": ["probes", str(tmp_path)],
    }[case]
    line = _one_error_line(run_cli(args, tmp_path))
    for phrase in says:
        assert phrase in line, line
