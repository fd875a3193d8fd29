"""`edgeprune experiment` end to end on small local data, re-runs that skip, resume, bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune import experiment as exp
from edgeprune.bench.settings import usable_cores
from edgeprune.errors import UserError
from edgeprune.latency.model import LatencyModel
from edgeprune.run import RunDir

FAST = {
    "bench_runs": 3,
    "bench_rounds": 2,
    "bench_warmup": 1,
    "quiet": True,
    "export": {"eval_n": 100, "calib": 32, "measure_latency": False},
}


def options(data_root: Path, out: Path, **kw) -> exp.ExperimentOptions:
    base = dict(dataset="mnist", epochs=2, limit=300, out=out, data_dir=data_root, **FAST)
    base.update(kw)
    return exp.ExperimentOptions(**base)


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "mnist"
    result = exp.run_experiment(options(data_root, out))
    return out, result


def test_the_whole_plan_produces_a_report_with_baseline_and_pruned_rows(finished):
    out, result = finished
    assert [s["status"] for s in result["stages"]] == ["ran"] * 6
    for run in ("baseline", "pruned"):
        r = RunDir(out / run)
        assert r.metrics.is_file() and (r.bundle / "meta.json").is_file() and (r.export / "parity.json").is_file()
        assert {p.name.rsplit("-", 1)[-1] for p in r.bench_files()} >= {"float.json"}
    base = json.loads((out / "baseline" / "metrics.json").read_text())
    pruned = json.loads((out / "pruned" / "metrics.json").read_text())
    assert pruned["params"] < base["params"]  # the pruned run did prune
    cfg = json.loads((out / "pruned" / "config.json").read_text())["config"]
    assert cfg["preset"] == "compact" and cfg["warmup_epochs"] == 0  # 2 epochs: prune, then fine-tune
    assert cfg["distill"] == 0.0  # no warm-up, no model to distill from

    # One bench call measured all four models together, so they were interleaved.
    bench = json.loads(next(out.glob("bench-*.json")).read_text())
    assert sorted(r["name"] for r in bench["results"]) == [
        "baseline/float",
        "baseline/int8",
        "pruned/float",
        "pruned/int8",
    ]
    assert all(r["status"] == "ok" for r in bench["results"])

    md = (out / "report.md").read_text()
    assert "| **baseline** | **float" in md and "| pruned | float" in md
    report = json.loads((out / "report.json").read_text())
    rows = {(r["run"], r["variant"]) for r in report["rows"] if r["machine"]}
    assert ("baseline", "float") in rows and ("pruned", "float") in rows
    pf = next(r for r in report["rows"] if r["run"] == "pruned" and r["variant"] == "float")
    assert pf["p50_ms"] > 0 and pf["ratios"]["params"] == pytest.approx(pruned["params"] / base["params"])
    for key in ("pareto", "widths", "training"):
        assert (out / report["figures"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = json.loads((out / "experiment.json").read_text())
    assert len(state["stages"]) == 6


def test_a_rerun_skips_every_finished_stage(finished, data_root, monkeypatch):
    out, _ = finished

    def must_not_run(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("edgeprune.train.train_run", must_not_run)
    monkeypatch.setattr("edgeprune.export.pipeline.export_run", must_not_run)
    monkeypatch.setattr("edgeprune.bench.bench", must_not_run)
    monkeypatch.setattr("edgeprune.report.write_report", must_not_run)
    result = exp.run_experiment(options(data_root, out))
    assert [s["status"] for s in result["stages"]] == ["skipped"] * 6
    assert result["report"]["rows"]  # the summary still shows the saved report


def test_a_newer_bench_file_brings_the_report_up_to_date(finished, data_root, monkeypatch):
    out, _ = finished
    calls = []
    import edgeprune.report

    real = edgeprune.report.write_report
    monkeypatch.setattr("edgeprune.report.write_report", lambda *a, **k: calls.append(1) or real(*a, **k))
    device = next((out / "pruned" / "bench").glob("*-float.json"))
    copy = device.with_name("pi-float.json")
    obj = json.loads(device.read_text())
    obj["machine"]["label"] = "pi"
    copy.write_text(json.dumps(obj))  # a result collected from a device later on
    try:
        result = exp.run_experiment(options(data_root, out))
        assert calls and result["stages"][-1]["status"] == "ran"
        assert any(r["machine"] == "pi" for r in result["report"]["rows"])
    finally:
        copy.unlink()


def test_an_interrupted_training_resumes(tmp_path, data_root, monkeypatch):
    plan = exp.make_plan(options(data_root, tmp_path / "e"))
    run = RunDir(Path(plan.pruned.out))
    run.root.mkdir(parents=True)
    run.config.write_text(json.dumps({"run_format": 1, "config": plan.pruned.to_dict()}))
    run.checkpoint.write_bytes(b"saved epoch 1")
    seen = {}

    def fake_train(cfg, resume=False, quiet=False):
        seen.update(resume=resume)
        return {"test_accuracy": 0.5, "params": 10}

    monkeypatch.setattr("edgeprune.train.train_run", fake_train)
    res = exp.train_stage(plan.pruned)
    assert seen == {"resume": True} and res["status"] == "resumed"


def test_a_different_configuration_in_the_directory_is_refused(tmp_path, data_root, monkeypatch):
    plan = exp.make_plan(options(data_root, tmp_path / "e"))
    run = RunDir(Path(plan.baseline.out))
    run.root.mkdir(parents=True)
    run.config.write_text(json.dumps({"run_format": 1, "config": dict(plan.baseline.to_dict(), epochs=7)}))
    run.metrics.write_text("{}")
    monkeypatch.setattr("edgeprune.train.train_run", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(UserError, match="different configuration .*epochs"):
        exp.train_stage(plan.baseline)


def test_flags_are_checked_before_any_training(tmp_path, data_root):
    with pytest.raises(UserError, match="--epochs 1"):
        exp.make_plan(options(data_root, tmp_path / "e", epochs=1))
    with pytest.raises(UserError, match="unknown --target"):
        exp.make_plan(options(data_root, tmp_path / "e", target="rpi9"))
    with pytest.raises(UserError, match="unknown --quantize"):
        exp.make_plan(options(data_root, tmp_path / "e", quantize="int4"))
    with pytest.raises(UserError, match="Unknown preset"):
        exp.make_plan(options(data_root, tmp_path / "e", preset="tiny"))
    assert not (tmp_path / "e").exists()
    plan = exp.make_plan(options(data_root, None, epochs=10))
    assert plan.out == Path("runs/experiment-mnist") and plan.pruned.warmup_epochs == 1
    assert not plan.baseline.prune and plan.pruned.target_params == 0.1
    assert plan.pruned.distill == 0.5 and plan.baseline.distill == 0.0 and not plan.notes
    short = exp.make_plan(options(data_root, None, epochs=2))
    assert short.pruned.distill == 0.0 and "distillation is off" in short.notes[0]


def test_the_model_reaches_both_runs_and_the_budget_only_the_pruned_one(tmp_path, data_root):
    kwargs = {"channels": [8, 16], "hidden": [16]}
    plan = exp.make_plan(options(data_root, tmp_path / "e", model="cnn", model_kwargs=kwargs, target_macs=0.5))
    for cfg in (plan.baseline, plan.pruned):
        assert cfg.model == "cnn" and cfg.model_config == kwargs
    assert plan.pruned.target_macs == 0.5 and plan.pruned.target_params is None  # the MACs budget replaces 0.1
    assert plan.baseline.target_macs is None and not plan.baseline.prune
    lat = exp.make_plan(options(data_root, tmp_path / "e", target_latency_ms=0.5, target="rpi4"))
    threads = lat.bench_settings.threads  # rpi4's 4, capped to this machine's cores
    assert threads == min(4, usable_cores())
    assert lat.pruned.target_latency_ms == 0.5 and lat.pruned.latency_threads == threads  # the bench's threads
    assert lat.baseline.target_latency_ms is None and lat.pruned.target_params is None
    assert lat.baseline.latency_threads is None and plan.pruned.latency_threads is None  # only with a latency budget
    assert exp.budget_text(lat.pruned, "compact") == f"latency budget 0.5 ms at {threads} thread(s)"
    assert exp.budget_text(plan.pruned, "compact") == "MACs budget 0.5"
    assert exp.make_plan(options(data_root, None, model="resnet20")).out == Path("runs/experiment-mnist-resnet20")
    with pytest.raises(UserError, match="mnist is not a text dataset"):
        exp.make_plan(options(data_root, tmp_path / "e", embeddings=tmp_path / "v.txt"))
    with pytest.raises(UserError, match="Give one budget"):
        exp.make_plan(options(data_root, tmp_path / "e", target_latency_ms=0.5, target_macs=0.5))
    assert not (tmp_path / "e").exists()


def test_experiment_with_your_model_and_a_latency_budget_end_to_end(tmp_path, data_root):
    """Through the real entry point: the model's options reach both runs; the pruned run measures a
    latency table here, and a second experiment given that table (--latency-table, 1 thread) prunes
    to a budget under the dense model's predicted ms; the report names the budget."""
    from test_cli_errors import run_cli

    kwargs = '{"channels": [16, 32], "hidden": [32]}'
    common = ["experiment", "--dataset", "mnist", "--data-dir", str(data_root), "--epochs", "2", "--limit", "200"]
    common += ["--quantize", "none", "--bench-runs", "3", "--model-kwargs", kwargs]
    first = tmp_path / "e1"
    r = run_cli([*common, "--out", str(first), "--target-latency-ms", "1000"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    threads = usable_cores()  # no --target: the bench's threads, all usable cores
    assert f"train with pruning (latency budget 1000 ms at {threads} thread(s))" in r.stdout
    base = json.loads((first / "baseline" / "config.json").read_text())["config"]
    pruned = json.loads((first / "pruned" / "config.json").read_text())["config"]
    assert base["model_config"] == pruned["model_config"] == json.loads(kwargs)
    assert base["target_latency_ms"] is None and pruned["target_latency_ms"] == 1000
    table = first / "pruned" / "latency" / "table.json"
    assert json.loads(table.read_text())["threads"] == threads

    # a table made for one thread, given to a second experiment with a budget that binds
    one = tmp_path / "one-thread.json"
    r = run_cli(["probes", str(first / "baseline"), "--out", str(tmp_path / "probes")], tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(["bench", "--latency-probes", str(tmp_path / "probes"), "--threads", "1", "--json", str(one)], tmp_path)
    assert r.returncode == 0, r.stderr
    lm = LatencyModel.fit(json.loads(one.read_text()))
    samples = [s for s in json.loads(one.read_text())["samples"] if s.get("p50_ms")]
    full = lm.predict(next(s for s in samples if s["kind"] == "full")["macs"])
    smallest = lm.predict(next(s for s in samples if s["kind"] == "min")["macs"])
    budget = round(smallest + 0.5 * (full - smallest), 6)  # between the smallest model and the dense one
    second = tmp_path / "e2"
    # the budget alone (--max-accuracy-drop none): on 20 validation images the guard's decisions are noise
    # and may stop short of a budget drawn from measured milliseconds; tests/test_guard.py holds the guard
    second_flags = ["--target-latency-ms", str(budget), "--latency-table", str(one), "--max-accuracy-drop", "none"]
    r = run_cli([*common, "--out", str(second), *second_flags], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"latency budget {budget:g} ms at 1 thread(s)" in r.stdout  # the table's threads, not the bench's
    metrics = json.loads((second / "pruned" / "metrics.json").read_text())
    assert metrics["latency_ms_predicted"] <= budget * (1 + 1e-9) < full
    assert metrics["latency_model"]["threads"] == 1 and not (second / "pruned" / "latency" / "table.json").exists()
    assert metrics["params"] < json.loads((second / "baseline" / "metrics.json").read_text())["params"]
    lb = json.loads((second / "pruned" / "bundle" / "meta.json").read_text())["latency_budget"]
    assert lb["target_ms"] == budget and lb["predicted_ms"] == pytest.approx(metrics["latency_ms_predicted"])
    report = json.loads((second / "report.json").read_text())
    assert {run["budget"] for run in report["runs"] if run["name"] == "pruned"} == {f"<= {budget:g} ms"}
    # the same directory with another table is another experiment: refused, not reused
    r = run_cli(
        [*common, "--out", str(second), "--target-latency-ms", str(budget), "--latency-table", str(table)], tmp_path
    )
    assert r.returncode == 2 and "latency_table" in r.stderr and "Traceback" not in r.stderr, r.stderr
