"""The cheap parts of the emulated arm64 runtime check (deploy/arm64_verify.sh --runtimes): which
runtimes have an aarch64 wheel (deploy/arm64_wheels.py, against a fake pip: no network), how the
report records a runtime that imports but dies under qemu, and the script's argument check. The
emulated run itself is opt-in (tests/test_deploy.py::test_arm64_emulated_check, marked slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ (deploy/arm64_wheels.py falls back to tomli)")

REPO = Path(__file__).resolve().parents[1]
VERIFY = REPO / "deploy" / "arm64_verify.sh"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "deploy" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wheels = _load("arm64_wheels")
report = _load("arm64_report")

OPENVINO = "openvino-2026.4.1-22982-cp311-cp311-manylinux_2_35_aarch64.whl"
NCNN = "ncnn-1.0.20261020-cp311-cp311-manylinux_2_24_aarch64.manylinux_2_28_aarch64.whl"


def test_wheel_names_give_version_and_the_oldest_glibc_they_need():
    ov = wheels.parse_wheel(OPENVINO)
    assert (ov["name"], ov["version"], ov["python"], ov["min_glibc"], ov["aarch64"]) == (
        "openvino",
        "2026.4.1",
        "cp311",
        "2.35",
        True,
    )
    # two tags: the wheel runs from the lower one up
    assert wheels.parse_wheel(NCNN)["min_glibc"] == "2.24"
    assert wheels.parse_wheel("x-1.0-cp311-cp311-manylinux2014_aarch64.whl")["min_glibc"] == "2.17"
    pure = wheels.parse_wheel("nncf-3.4.0-py3-none-any.whl")
    assert pure["min_glibc"] is None and pure["aarch64"] is False
    with pytest.raises(ValueError, match="not a wheel file name"):
        wheels.parse_wheel("openvino.tar.gz")


def test_bookworm_platforms_reach_its_glibc_and_no_further():
    tags = wheels.PLATFORM_SETS["bookworm"]
    minors = sorted(int(t.split("_")[2]) for t in tags if t.startswith("manylinux_2_"))
    assert minors == list(range(17, 37))  # glibc 2.17 .. 2.36 (Debian bookworm), every one
    assert wheels.PLATFORM_SETS["manylinux2014"] == ["manylinux2014_aarch64"]


def test_requirements_are_pyprojects_own():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    got = wheels.requirements(REPO / "pyproject.toml", ["onnxruntime", "openvino", "ncnn"])
    assert got["onnxruntime"] in project["dependencies"] and got["onnxruntime"].startswith("onnxruntime")
    assert got["openvino"] == project["optional-dependencies"]["openvino"][0]
    assert got["ncnn"] == project["optional-dependencies"]["ncnn"][0]
    with pytest.raises(ValueError, match="no requirement for 'tvm'"):
        wheels.requirements(REPO / "pyproject.toml", ["tvm"])


FAKE_PIP = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    args = sys.argv[1:]
    dest = Path(args[args.index("-d") + 1])
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    req = args[-1]
    if req.startswith("openvino") and "manylinux_2_35_aarch64" in platforms:
        (dest / "{OPENVINO}").write_bytes(b"")
        print("Saved " + str(dest / "{OPENVINO}"))
    elif req.startswith("ncnn"):
        (dest / "{NCNN}").write_bytes(b"")
        print("Saved " + str(dest / "{NCNN}"))
    else:
        print("Collecting " + req, file=sys.stderr)
        print("ERROR: Could not find a version that satisfies the requirement " + req + " (from versions: 1.0)",
              file=sys.stderr)
        sys.exit(1)
    """
)


def test_the_table_says_which_runtime_has_a_wheel_on_which_platforms(tmp_path):
    fake = tmp_path / "fake_pip.py"
    fake.write_text(FAKE_PIP)
    # the fake is called as `python fake_pip.py -m pip download ...`: it reads only the arguments after
    result = wheels.table(
        REPO / "pyproject.toml", ["onnxruntime", "openvino", "ncnn"], tmp_path / "w", [sys.executable, str(fake)]
    )
    rows = result["runtimes"]
    assert rows["openvino"]["manylinux2014"]["available"] is False  # needs glibc 2.35
    assert "Could not find a version" in rows["openvino"]["manylinux2014"]["reason"]
    assert rows["openvino"]["bookworm"] == {
        "available": True,
        "wheel": OPENVINO,
        "version": "2026.4.1",
        "min_glibc": "2.35",
        "command": rows["openvino"]["bookworm"]["command"],
    }
    assert "--platform manylinux_2_35_aarch64" in rows["openvino"]["bookworm"]["command"]
    assert rows["ncnn"]["manylinux2014"]["available"] and rows["ncnn"]["bookworm"]["min_glibc"] == "2.24"
    assert not rows["onnxruntime"]["bookworm"]["available"]
    assert rows["onnxruntime"]["bookworm"]["reason"].startswith("Could not find a version")


def _work(tmp_path: Path) -> tuple[Path, dict]:
    """What arm64_verify.sh leaves in WORK for: ncnn ran, openvino imported then died with SIGILL,
    and a third runtime without a wheel."""
    w = tmp_path / "work"
    w.mkdir()
    no_wheel = {"available": False, "reason": "Could not find a version that satisfies the requirement tvm"}
    (w / "wheels.json").write_text(
        json.dumps(
            {
                "platform_sets": wheels.PLATFORM_SETS,
                "runtimes": {
                    "onnxruntime": {"manylinux2014": no_wheel, "bookworm": {"available": True, "wheel": "ort.whl"}},
                    "openvino": {"bookworm": {"available": True, "wheel": OPENVINO}},
                    "ncnn": {"bookworm": {"available": True, "wheel": NCNN}},
                    "tvm": {"bookworm": no_wheel},
                },
            }
        )
    )
    (w / "arm_versions.json").write_text(json.dumps({"onnxruntime": "1.32.0"}))
    for rt, version in (("openvino", "2026.4.1"), ("ncnn", "1.0.20261020")):
        (w / f"rt-{rt}.import.json").write_text(json.dumps({"missing": None, "version": version}))
        (w / f"rt-{rt}.import.rc").write_text("0\n")
    (w / "rt-openvino.run.rc").write_text("132 40\n")
    (w / "rt-openvino.run.log").write_text("loading\nIllegal instruction (core dumped)\n\n")
    (w / "rt-ncnn.run.rc").write_text("0 12\n")
    (w / "rt-ncnn.run.json").write_text(
        json.dumps({"models": {"float@ncnn": {"runtime": "ncnn", "accuracy": 0.9, "batch1_ms_median": 3.5}}})
    )
    (w / "rt-ncnn.compare.json").write_text(
        json.dumps(
            {
                "models": {
                    "float@ncnn": {
                        "ok": False,
                        "argmax_agreement": 1.0,
                        "max_abs_diff": 0.3,
                        "atol": 0.1,
                        "agreement_with_a_float": 0.99,
                    }
                }
            }
        )
    )
    facts = {"runtimes": "onnxruntime,openvino,ncnn,tvm", "installed": "onnxruntime,openvino,ncnn"}
    return w, facts


def test_report_records_each_runtime_and_never_hides_one_that_died(tmp_path):
    work, facts = _work(tmp_path)
    host = {
        "models": {
            "float": {"accuracy": 0.9, "batch1_ms_median": 0.05},
            "float@ncnn": {"accuracy": 0.9, "batch1_ms_median": 0.07},
        }
    }
    arm = {"models": {"float": {"runtime": "onnxruntime", "accuracy": 0.9, "batch1_ms_median": 2.0}}}
    compare = {"models": {"float": {"argmax_agreement": 1.0, "max_abs_diff": 0.0, "agreement_with_a_float": 1.0}}}
    rows = report.runtime_rows(work, facts, host, arm, compare)
    assert list(rows) == ["onnxruntime", "openvino", "ncnn", "tvm"]
    assert rows["onnxruntime"]["ran"] and rows["onnxruntime"]["version"] == "1.32.0"
    assert rows["onnxruntime"]["aarch64_wheel"]["manylinux2014"].startswith("none: Could not find")
    ov = rows["openvino"]
    assert ov["imported"] and ov["version"] == "2026.4.1" and not ov["ran"]
    assert ov["reason"] == "exit 132 (SIGILL): Illegal instruction (core dumped)"
    nc = rows["ncnn"]["models"]["float@ncnn"]
    assert rows["ncnn"]["ran"] and nc["agreement_with_host_onnxruntime_float"] == 0.99
    assert nc["batch1_ms_median_emulated"] == 3.5 and nc["batch1_ms_median_host_native"] == 0.07
    assert nc["within_tolerance_of_host"] is False and nc["atol"] == 0.1  # recorded as compare said
    assert not rows["tvm"]["installed"] and rows["tvm"]["reason"].startswith("no cp311 aarch64 wheel: Could not")


def test_an_installed_runtime_that_does_not_import_fails_the_check(tmp_path):
    work, facts = _work(tmp_path)
    (work / "rt-ncnn.import.rc").write_text("1\n")
    (work / "rt-ncnn.import.json").unlink()
    (work / "rt-ncnn.import.log").write_text("ImportError: libgomp.so.1: cannot open shared object file\n")
    base = dict(
        facts,
        bench_rc=0,
        compare_rc=0,
        latency_rc=None,
        command="x",
        mode="chroot",
        qemu="q",
        qemu_cpu="c",
        rootfs="r",
        install_how="h",
        install_s=1,
        predict_s=1,
        bench_s=1,
        bench_flags="",
    )
    (work / "compare.json").write_text(json.dumps({"ok": True, "models": {}}))
    (work / "bench.json").write_text(json.dumps({"results": [{"name": "b/float", "status": "ok"}]}))
    result = report.build(work, base)
    assert result["passed"] is False and result["runtimes"]["every_installed_runtime_imports"] is False
    assert result["runtimes"]["not_run_under_emulation"]["ncnn"] == (
        "exit 1: ImportError: libgomp.so.1: cannot open shared object file"
    )
    assert "EMULATED" in result["runtimes"]["label"]
    assert result["runtimes"]["models_outside_host_tolerance"] == ["float@ncnn"]


def test_verify_refuses_an_unknown_runtime_in_one_sentence_before_needing_root():
    proc = subprocess.run(
        ["bash", str(VERIFY), "--runtimes", "onnxruntime,tvm"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "[arm64] error: unknown --runtimes tvm; choose from onnxruntime, openvino, ncnn (or all), separated by commas."
    ]
