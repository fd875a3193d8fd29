"""`edgeprune report` from synthetic run directories in the documented JSON shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.errors import UserError
from edgeprune.report import batch_table, build_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_run(root: Path, prune: bool, params: int, widths: dict, acc: float, epochs: int = 3) -> Path:
    write_json(
        root / "config.json",
        {
            "run_format": 1,
            "config": {
                "dataset": "mnist",
                "model": "cnn",
                "epochs": epochs,
                "limit": 300,
                "prune": prune,
                "preset": "compact" if prune else None,
                "target_params": 0.1 if prune else None,
            },
        },
    )
    write_json(
        root / "metrics.json",
        {
            "test_loss": 0.3,
            "test_accuracy": acc,
            "test_f1": acc - 0.01,
            "test_n": 1000,
            "params": params,
            "dense_params": params,
            "baseline_params": 1000,
            "compression": 1000 / params,
            "train_seconds": 12.5,
            "widths": widths,
            "epochs": epochs,
        },
    )
    start = 1000
    lines = []
    for e in range(1, epochs + 1):
        alive = start if (not prune or e == 1) else params
        lines.append(
            json.dumps(
                {
                    "epoch": e,
                    "phase": "train" if not prune else ("warmup", "prune", "finetune")[min(e - 1, 2)],
                    "train_loss": 1.0 / e,
                    "train_accuracy": 0.5 + 0.1 * e,
                    "val_loss": 1.0 / e,
                    "val_accuracy": acc - 0.05 * (epochs - e),
                    "val_f1": acc - 0.05 * (epochs - e),
                    "seconds": 1.0,
                    "params_alive": alive,
                    "params_dense": alive,
                    "compression": 1000 / alive,
                    "connection_sparsity": 0.0,
                    "widths": widths if (not prune or e > 1) else {"conv0": 32, "fc0": 128},
                }
            )
        )
    (root / "history.jsonl").write_text("\n".join(lines) + "\n")
    return root


def add_export(root: Path, float_bytes: int, acc: float, kept: str = "static") -> None:
    def variant(name, size, a, recipe=None):
        v = {
            "name": name,
            "file": f"model.{name}.onnx",
            "nodes": 10,
            "size_bytes": size,
            "size_gz_bytes": int(size * 0.9),
            "max_abs_diff": 0.0,
            "argmax_agreement": 1.0,
            "accuracy": a,
            "f1": a - 0.01,
            "eval_n": 200,
        }
        if recipe:
            v["recipe"] = {"name": recipe, "method": recipe}
        return v

    write_json(
        root / "export" / "parity.json",
        {
            "format": 1,
            "run": str(root),
            "int8_kept": kept,
            "chosen": "int8",
            "variants": [
                variant("torch", float_bytes, acc),
                variant("onnx", float_bytes, acc),
                variant("simplified", float_bytes, acc),
                variant("static", float_bytes // 4, acc - 0.002, "static"),
                variant("dynamic", float_bytes // 3, acc - 0.004, "dynamic"),
            ],
        },
    )
    write_json(
        root / "bundle" / "meta.json",
        {
            "format": 1,
            "models": [
                {"name": "float", "file": "model.onnx"},
                {"name": "int8", "file": "model.int8.onnx", "recipe": kept},
            ],
        },
    )


def add_bench(
    root: Path,
    label: str,
    variant: str,
    p50: float,
    acc: float,
    emulated: bool = False,
    status: str = "ok",
    busy: bool = False,
    p50_at_64: float | None = None,
) -> None:
    result = {
        "name": f"{root.name}/{variant}",
        "variant": variant,
        "path": str(root / "bundle" / "x.onnx"),
        "status": status,
        "error": None if status == "ok" else "onnxruntime refused the model",
        "params": None,
        "file_bytes": 999,
        "file_bytes_gz": 900,
        "accuracy": acc,
        "f1": acc - 0.01,
        "eval_n": 200,
        "latency": {}
        if status != "ok"
        else {
            "1": {
                "p50_ms": p50,
                "p90_ms": p50 * 1.2,
                "p99_ms": p50 * 2,
                "mean_ms": p50,
                "std_ms": 0.01,
                "min_ms": p50 * 0.9,
                "round_median_ms": p50,
                "round_min_ms": p50,
                "throughput_sps": 1000.0 / p50,
                "floor_p50_ms": 0.004,
            }
        },
        "memory": {
            "rss_before_mb": 40.0,
            "rss_after_load_mb": 50.0,
            "rss_peak_mb": 60.0 if variant == "float" else 45.0,
            "ru_maxrss_mb": 60.0,
        },
        "session_options": {},
    }
    if p50_at_64 is not None:
        result["latency"]["64"] = {"p50_ms": p50_at_64, "p99_ms": p50_at_64 * 2, "throughput_sps": 64e3 / p50_at_64}
    write_json(
        root / "bench" / f"{label}{'-emulated' if emulated else ''}-{variant}.json",
        {
            "format": 1,
            "command": ["edgeprune", "bench"],
            "machine": {
                "label": label,
                "hostname": label,
                "cpu_model": "Cortex-A72" if emulated else "Test CPU",
                "isa": [],
                "cores_usable": 4,
                "onnxruntime": "1.0",
                "emulated": emulated,
                "emulation_reason": "EDGEPRUNE_EMULATED is set" if emulated else None,
            },
            "settings": {"label": label, "threads": 4},
            "conditions": {"busy": busy},
            "results": [result],
        },
    )


@pytest.fixture
def two_runs(tmp_path):
    base = make_run(tmp_path / "base", prune=False, params=1000, widths={"conv0": 32, "fc0": 128}, acc=0.90)
    pruned = make_run(tmp_path / "pruned", prune=True, params=100, widths={"conv0": 8, "fc0": 16}, acc=0.88)
    add_export(base, 4000, 0.90)
    add_export(pruned, 400, 0.88)
    add_bench(base, "hostA", "float", 2.0, 0.90)
    add_bench(base, "hostA", "int8", 1.0, 0.87)  # beaten by pruned/float: faster and more accurate
    add_bench(pruned, "hostA", "float", 0.5, 0.88)
    add_bench(pruned, "hostA", "int8", 0.25, 0.87)
    add_bench(pruned, "pi", "float", 10.0, 0.88, emulated=True)
    return base, pruned


def rows_by(result):
    return {(r["run"], r["variant"], r["machine"]): r for r in result["rows"]}


def test_one_row_per_run_variant_machine_with_ratios_to_the_baseline(two_runs):
    base, pruned = two_runs
    result, _ = build_report([pruned, base])  # the unpruned run is the baseline wherever it is given
    assert result["baseline"] == "base" and result["baseline_is_unpruned"]
    rows = rows_by(result)
    assert set(rows) == {
        ("base", "float", "hostA"),
        ("base", "int8-static", "hostA"),
        ("base", "int8-dynamic", None),
        ("pruned", "float", "hostA"),
        ("pruned", "float", "pi (emulated)"),
        ("pruned", "int8-static", "hostA"),
        ("pruned", "int8-dynamic", None),
    }
    assert [r["run"] for r in result["rows"]][:3] == ["base"] * 3  # baseline first

    ref = rows[("base", "float", "hostA")]
    assert ref["reference"] and ref["ratios"]["p50_ms"] == pytest.approx(1.0)
    assert ref["file_kb"] == pytest.approx(4000 / 1024)  # export's sizes win over bench's
    assert ref["file_kb_gz"] == pytest.approx(3600 / 1024)

    pf = rows[("pruned", "float", "hostA")]
    assert pf["params"] == 100 and pf["ratios"]["params"] == pytest.approx(0.1)
    assert pf["ratios"]["file_kb"] == pytest.approx(0.1)
    assert pf["p50_ms"] == pytest.approx(0.5) and pf["ratios"]["p50_ms"] == pytest.approx(0.25)
    assert pf["p99_ms"] == pytest.approx(1.0) and pf["ratios"]["p99_ms"] == pytest.approx(0.25)
    assert pf["throughput_sps"] == pytest.approx(2000) and pf["ratios"]["throughput_sps"] == pytest.approx(4.0)
    assert pf["rss_peak_mb"] == pytest.approx(60.0) and pf["ratios"]["rss_peak_mb"] == pytest.approx(1.0)
    assert pf["accuracy"] == pytest.approx(0.88) and pf["accuracy_source"] == "bench"
    assert pf["ratios"]["accuracy"] == pytest.approx(0.88 / 0.90)

    pi = rows[("pruned", "float", "pi (emulated)")]
    assert pi["emulated"] and pi["p50_ms"] == pytest.approx(10.0)
    assert pi["ratios"]["p50_ms"] is None  # no baseline measured on that machine: no ratio
    assert pi["ratios"]["params"] == pytest.approx(0.1)  # machine-free figures still compare

    dyn = rows[("pruned", "int8-dynamic", None)]
    assert not dyn["in_bundle"] and dyn["p50_ms"] is None
    assert dyn["accuracy"] == pytest.approx(0.876) and dyn["accuracy_source"] == "export"
    assert dyn["file_kb"] == pytest.approx(133 / 1024)

    # Pareto on hostA: base/int8 is slower and less accurate than pruned/float; the rest trade off.
    front = {k for k, r in rows.items() if r["pareto"]}
    assert front == {
        ("pruned", "int8-static", "hostA"),
        ("base", "float", "hostA"),
        ("pruned", "float", "hostA"),
        ("pruned", "float", "pi (emulated)"),
    }
    assert any("emulated" in n for n in result["notes"])


def test_files_are_written_self_contained_and_agree(two_runs, tmp_path):
    base, pruned = two_runs
    out = tmp_path / "out"
    result = write_report([base, pruned], out)
    for name in ("report.md", "report.html", "report.json"):
        assert (out / name).is_file()
    for key in ("pareto", "widths", "training"):
        png = out / result["figures"][key]
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC
        import matplotlib.image

        img = matplotlib.image.imread(str(png))
        assert img.shape[0] > 100 and img.shape[1] > 100
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)=['"]?(https?:|//|report-)""", html)  # nothing outside the file
    assert "<style>" in html
    md = (out / "report.md").read_text()
    assert "| pruned | int8-static \\* | hostA | 100 (0.10×) |" in md
    assert "| **base** | **float \\*** | **hostA** |" in md
    assert "0.5000 (0.25×)" in md  # p50 and its ratio
    assert "pi (emulated)" in md and "![" in md
    saved = json.loads((out / "report.json").read_text())
    assert len(saved["rows"]) == len(result["rows"]) == 7
    assert rows_by(saved)[("pruned", "float", "hostA")]["ratios"]["p50_ms"] == pytest.approx(0.25)


def test_larger_batches_get_their_own_table_with_throughput_ratios(two_runs, tmp_path):
    base, pruned = two_runs
    out = tmp_path / "out"
    assert batch_table(write_report([base, pruned], out)) == []  # batch 1 only: no such section
    assert "Larger batches" not in (out / "report.md").read_text()
    add_bench(base, "hostA", "float", 2.0, 0.90, p50_at_64=20.0)
    add_bench(pruned, "hostA", "float", 0.5, 0.88, p50_at_64=5.0)
    result = write_report([base, pruned], out)
    rows = rows_by(result)
    assert rows[("pruned", "float", "hostA")]["by_batch"][64]["throughput_sps"] == pytest.approx(12800)
    assert rows[("pruned", "float", "hostA")]["p50_ms"] == pytest.approx(0.5)  # the main table stays batch 1
    table = batch_table(result)
    assert table == [
        ["base", "float *", "hostA", "64", "20.00", "40.00", "3,200", "—"],
        ["pruned", "float *", "hostA", "64", "5.00", "10.00", "12,800", "4.00×"],
    ]
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Larger batches" in md and "| pruned | float \\* | hostA | 64 | 5.00 | 10.00 | 12,800 | 4.00× |" in md
    assert "<h2>Larger batches</h2>" in html and "12,800" in html


def test_missing_export_and_bench_are_dashes_with_the_command_that_makes_them(tmp_path):
    base = make_run(tmp_path / "base", prune=False, params=1000, widths={"conv0": 32}, acc=0.9)
    pruned = make_run(tmp_path / "pruned", prune=True, params=100, widths={"conv0": 8}, acc=0.85)
    result = write_report([base, pruned])
    assert Path(result["out_dir"]) == base  # default: the first run directory
    rows = rows_by(result)
    assert set(rows) == {("base", "float", None), ("pruned", "float", None)}
    pf = rows[("pruned", "float", None)]
    assert pf["accuracy"] == pytest.approx(0.85) and pf["accuracy_source"] == "train"
    assert pf["ratios"]["params"] == pytest.approx(0.1)
    assert pf["p50_ms"] is None and pf["file_kb"] is None and pf["ratios"]["p50_ms"] is None
    notes = " ".join(result["notes"])
    assert f"edgeprune export {pruned}" in notes and f"edgeprune bench {pruned / 'bundle'}" in notes
    md = (base / "report.md").read_text()
    assert "| pruned | float | — | 100 (0.10×) | — | — |" in md
    assert "edgeprune bench" in md
    assert result["figures"]["pareto"] is None and not (base / "report-pareto.png").exists()
    assert (base / result["figures"]["widths"]).read_bytes()[:8] == PNG_MAGIC


def test_unfinished_training_and_corrupt_files_are_notes_not_crashes(tmp_path):
    base = make_run(tmp_path / "base", prune=False, params=1000, widths={"conv0": 32}, acc=0.9)
    (base / "metrics.json").unlink()
    (base / "bench").mkdir()
    (base / "bench" / "broken.json").write_text("{not json")
    result = write_report([base], tmp_path / "out")
    notes = " ".join(result["notes"])
    assert "edgeprune train --resume" in notes and "broken.json" in notes
    assert result["rows"][0]["params"] is None and result["figures"]["training"]


def test_failed_bench_rows_and_busy_machines_are_reported(two_runs):
    base, pruned = two_runs
    add_bench(pruned, "hostA", "int8", 0.25, 0.87, status="failed", busy=True)
    result, _ = build_report([base, pruned])
    row = rows_by(result)[("pruned", "int8-static", "hostA")]
    assert row["status"] == "failed" and row["p50_ms"] is None
    notes = " ".join(result["notes"])
    assert "failed: onnxruntime refused the model" in notes and "busy on hostA" in notes


def test_without_an_unpruned_run_the_first_is_the_reference(two_runs):
    _, pruned = two_runs
    result, _ = build_report([pruned])
    assert result["baseline"] == "pruned" and not result["baseline_is_unpruned"]
    assert "no run was trained with --no-prune" in result["notes"][0]
    assert rows_by(result)[("pruned", "float", "hostA")]["reference"]


def test_runs_with_the_same_directory_name_stay_apart(tmp_path):
    a = make_run(tmp_path / "a" / "run", prune=False, params=1000, widths={"conv0": 32}, acc=0.9)
    b = make_run(tmp_path / "b" / "run", prune=True, params=100, widths={"conv0": 8}, acc=0.8)
    result, _ = build_report([a, b])
    assert {r["run"] for r in result["rows"]} == {"a/run", "b/run"}


def test_bad_input_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="is not a run directory"):
        build_report([tmp_path / "missing"])
    with pytest.raises(UserError, match="is not a run directory"):
        build_report([tmp_path])
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        build_report([tmp_path])
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "is not a run directory" in res.output


def test_cli_prints_the_table_and_writes_to_out(two_runs, tmp_path):
    base, pruned = two_runs
    res = CliRunner().invoke(app, ["report", str(base), str(pruned), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "int8-static" in res.output and "pi (emulated)" in res.output and "0.25×" in res.output
    assert (tmp_path / "rep" / "report.html").is_file()


def test_a_run_that_kept_an_earlier_epoch_says_so_and_a_last_epoch_run_does_not(tmp_path):
    base = make_run(tmp_path / "base", prune=False, params=1000, widths={"conv0": 32}, acc=0.9, epochs=5)
    pruned = make_run(tmp_path / "pruned", prune=True, params=100, widths={"conv0": 8}, acc=0.85, epochs=5)
    for root, kept, by in ((base, 5, "last epoch"), (pruned, 3, "best validation accuracy at the final widths")):
        metrics = json.loads((root / "metrics.json").read_text())
        write_json(root / "metrics.json", {**metrics, "kept_epoch": kept, "kept_by": by})
    notes = write_report([base, pruned], tmp_path / "out")["notes"]
    kept = [n for n in notes if "ships the model of epoch" in n]
    assert kept == [
        "pruned: ships the model of epoch 3 of 5 (--keep-best: best validation accuracy at the final widths), "
        "not the last epoch's."
    ]
