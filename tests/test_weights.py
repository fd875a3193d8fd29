"""Pretrained weights (`train --weights FILE`) and ecosystem models (`--model timm:NAME`).

In process: a weights file loads exactly (every tensor equal to the file's, tolerance 0) into
timm, torchvision and registry models from .pt, .pth and .safetensors; a 1000-class head is
replaced by the model's fresh one; RGB first-conv weights in a grayscale model answer a gray image
as the RGB model answers it in three equal channels; the warm-up defaults to none from weights,
and says so. Through the real `edgeprune` entry point: a timm model trains from a 1000-class RGB
state dict, is killed after its first checkpoint, resumes with the weights file gone, exports and
benches; torchvision's resnet18 trains from one and prunes to its MACs budget. Bad weights files
and a missing timm or safetensors are rows of tests/test_cli_errors.py.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch
from test_cli_errors import run_cli

from edgeprune.models import build_model, default_config, load_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

TIMM = "mobilenetv3_small_050"  # BatchNormAct + squeeze-excitation, 0.58M parameters at 10 classes
ONNX_TOLERANCE = 1e-4
GRAY_TOLERANCE = 1e-5  # a summed kernel against three equal channels: float rounding only


def _meta(channels: int, size: int, classes: int) -> dict:
    return {
        "task": "image",
        "dataset": "test",
        "labels": [str(i) for i in range(classes)],
        "input_shape": ["batch", channels, size, size],
    }


def _build(name: str, meta: dict, seed: int, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model({"name": name, "config": {**default_config(name, meta), **overrides}})


def _save(state: dict, path) -> None:
    if path.suffix == ".safetensors":
        safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


MODELS = {  # name, the data it is built for, --model-kwargs
    f"timm:{TIMM}": (_meta(1, 28, 10), {}),
    "torchvision:mobilenet_v2": (_meta(3, 32, 10), {"width_mult": 0.35}),
    "cnn": (_meta(1, 28, 10), {}),
}


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
@pytest.mark.parametrize("name", MODELS)
def test_weights_load_exactly(name, suffix, tmp_path):
    meta, kwargs = MODELS[name]
    source = _build(name, meta, seed=1, **kwargs)
    path = tmp_path / f"w{suffix}"
    state = source.state_dict()
    if suffix == ".pth":  # a training checkpoint of a DistributedDataParallel model: unwrapped, prefix stripped
        state = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    _save(state, path)
    model = _build(name, meta, seed=0, **kwargs)
    expected = source.state_dict()
    assert any(not torch.equal(v, expected[k]) for k, v in model.state_dict().items())  # the load has work to do
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing replaced, nothing to warn about
        record = load_weights(model, path, describe=name)
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key  # tolerance 0: the file's values, bit for bit
    assert record == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "head_replaced": [],
        "input_adapted": [],
    }


HEADS = {  # the model, and its classifier's tensors as its library names them
    f"timm:{TIMM}": (_meta(1, 28, 10), None),  # from timm's pretrained_cfg["classifier"]
    "torchvision:resnet18": (_meta(3, 32, 10), ["fc.weight", "fc.bias"]),
}


@pytest.mark.parametrize("name", HEADS)
def test_a_1000_class_head_is_replaced_and_the_rest_loads_exactly(name, tmp_path):
    meta, head = HEADS[name]
    if head is None:
        classifier = timm.create_model(TIMM, pretrained=False).pretrained_cfg["classifier"]
        head = [f"{classifier}.weight", f"{classifier}.bias"]
    source = _build(name, meta, seed=1, num_classes=1000)  # an ImageNet checkpoint's shapes
    _save(source.state_dict(), tmp_path / "in1k.pt")
    model = _build(name, meta, seed=0)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="is for another number of classes, so the model keeps a freshly"):
        record = load_weights(model, tmp_path / "in1k.pt", describe=name)
    assert record["head_replaced"] == head and record["input_adapted"] == []
    got, saved = model.state_dict(), source.state_dict()
    for key in got:
        if key in head:
            assert saved[key].shape[0] == 1000 and got[key].shape[0] == 10
            assert torch.equal(got[key], fresh[key]), key  # the model's own fresh head, untouched
        else:
            assert torch.equal(got[key], saved[key]), key


@torch.no_grad()
def test_rgb_weights_in_a_grayscale_model_answer_as_the_rgb_model_does(tmp_path):
    name = f"timm:{TIMM}"
    rgb = _build(name, _meta(3, 28, 10), seed=1).eval()
    _save(rgb.state_dict(), tmp_path / "rgb.safetensors")
    gray = _build(name, _meta(1, 28, 10), seed=0)
    with pytest.warns(UserWarning, match="conv_stem.weight takes RGB, so its kernel is summed over the 3 channels"):
        record = load_weights(gray, tmp_path / "rgb.safetensors")
    assert record["input_adapted"] == ["conv_stem.weight"] and record["head_replaced"] == []
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = rgb(x.expand(-1, 3, -1, -1))  # a gray image is R = G = B
    assert (gray.eval()(x) - expected).abs().max() <= GRAY_TOLERANCE


def test_weights_default_to_no_warm_up_and_say_so(data_root, tmp_path):
    from edgeprune.config import resolve_train_config

    w = tmp_path / "w.pt"
    common = {"dataset": "mnist", "data_dir": data_root, "epochs": 20, "out": tmp_path / "r"}
    plain = resolve_train_config(**common)
    assert plain.warmup_epochs == 2 and plain.distill == 0.5 and plain.notes == []  # the defaults: a tenth
    cfg = resolve_train_config(**common, weights=str(w))
    assert cfg.weights == str(w.resolve()) and cfg.warmup_epochs == 0 and cfg.distill == 0.0
    assert cfg.notes == [
        "starting from --weights, the run has no warm-up (the default would be 2 epochs); "
        "pass --warmup-epochs N to warm up",
        "with no warm-up there is no model to distill from, so the compact preset's distillation is off",
    ]
    asked = resolve_train_config(**common, weights=str(w), warmup_epochs=3)
    assert asked.warmup_epochs == 3 and asked.distill == 0.5 and asked.notes == []
    # what --resume compares: the file's path, not its presence (a resumed run's weights are in its checkpoint)
    assert cfg.identity()["weights"] == str(w.resolve()) and "notes" not in cfg.identity()


def test_timm_model_from_weights_trains_resumes_without_the_file_exports_and_benches(data_root, tmp_path, monkeypatch):
    name = f"timm:{TIMM}"
    source = _build(name, _meta(3, 28, 10), seed=1, num_classes=1000)  # ImageNet's classes and channels
    weights = tmp_path / "in1k.safetensors"
    _save(source.state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    run = tmp_path / "run"
    args = ["train", "--dataset", "mnist", "--data-dir", str(data_root), "--model", name, "--weights", str(weights)]
    args += ["--epochs", "2", "--limit", "100", "--threads", "1", "--out", str(run), "--target-macs", "0.7"]
    # the budget alone: what this test follows is the weights, the resume and the export, not the accuracy
    # guard, whose decisions on 10 validation images are noise (tests/test_guard.py holds the guard)
    args += ["--max-accuracy-drop", "none"]

    monkeypatch.setenv("EDGEPRUNE_FAULT", "after-checkpoint:1")  # killed once epoch 1 is checkpointed
    r = run_cli(args, tmp_path)
    assert r.returncode < 0 and (run / "checkpoint.pt").is_file(), r.stdout + r.stderr
    assert "its classifier head (classifier.weight, classifier.bias) is for another number of classes" in r.stdout
    assert "conv_stem.weight takes RGB" in r.stdout and "the run has no warm-up" in r.stdout
    assert "Warning" not in r.stderr, r.stderr  # said once, as a line of the run, not also as a Python warning
    monkeypatch.delenv("EDGEPRUNE_FAULT")
    weights.unlink()  # the checkpoint holds the weights: resuming must not read the file
    r = run_cli([*args, "--resume"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout

    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    recorded = {
        "path": str(weights),
        "sha256": digest,
        "head_replaced": ["classifier.weight", "classifier.bias"],
        "input_adapted": ["conv_stem.weight"],
    }
    assert config["weights_init"] == recorded and metrics["weights_init"] == recorded
    assert config["config"]["warmup_epochs"] == 0 and metrics["notes"] == config["config"]["notes"]
    assert config["config"]["notes"][0].startswith("starting from --weights, the run has no warm-up")
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history][0] != "warmup"
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["arch"] == {"name": name, "config": {"num_classes": 10, "in_chans": 1}}  # rebuilt from the name
    # compacted (today at least its squeeze-excitation convs), so export rebuilds a narrower timm model
    assert metrics["params"] < metrics["baseline_params"]
    fresh = _build(name, _meta(1, 28, 10), seed=0).state_dict()
    assert any(v.shape != fresh[k].shape for k, v in saved["state_dict"].items())

    r = run_cli(["export", str(run), "--quantize", "none", "--calib", "16", "--eval-limit", "32"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {v["name"]: v for v in json.loads((run / "export" / "parity.json").read_text())["variants"]}
    assert rows["onnx"]["max_abs_diff"] <= ONNX_TOLERANCE
    out = tmp_path / "bench.json"
    r = run_cli(
        ["bench", str(run / "bundle"), "--threads", "1", "--runs", "5", "--rounds", "1", "--json", str(out)], tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads(out.read_text())["results"]
    assert results and all(row["status"] == "ok" and row["accuracy"] is not None for row in results)


def test_torchvision_resnet18_from_imagenet_shaped_weights_prunes_to_its_budget(data_root, tmp_path):
    name = "torchvision:resnet18"
    source = _build(name, _meta(3, 32, 10), seed=1, num_classes=1000)
    weights = tmp_path / "resnet18.pth"
    _save(source.state_dict(), weights)
    run = tmp_path / "run"
    args = ["train", "--dataset", "cifar10", "--data-dir", str(data_root), "--model", name, "--weights", str(weights)]
    args += ["--epochs", "2", "--limit", "64", "--threads", "1", "--target-macs", "0.6"]
    # guarded (the default): random weights on 64 images never beat guessing the most common class, so
    # the guard tries no step, and the missed budget says why
    r = run_cli([*args, "--out", str(tmp_path / "guarded")], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((tmp_path / "guarded" / "metrics.json").read_text())
    assert metrics["budget_met"] is False and metrics["guard"]["waited"] >= 1
    assert metrics["guard"]["floor"] is not None and metrics["macs"] == metrics["baseline_macs"]
    assert "the accuracy guard tried no step at" in metrics["budget_reasons"][0]
    assert "the accuracy guard tried no step at" in r.stdout.replace("\n", " ")
    assert "point(s) passed (no better than guessing)" in r.stdout  # each epoch's line
    # unguarded: pruned to the budget from the weights
    r = run_cli([*args, "--out", str(run), "--max-accuracy-drop", "none"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weights_init"]["head_replaced"] == ["fc.weight", "fc.bias"]
    assert metrics["macs"] <= 0.6 * metrics["baseline_macs"]


def test_experiment_starts_both_runs_from_the_weights(data_root, tmp_path):
    from edgeprune.experiment import ExperimentOptions, make_plan

    w = tmp_path / "w.pt"
    plan = make_plan(ExperimentOptions(dataset="mnist", data_dir=data_root, epochs=10, out=tmp_path / "e", weights=w))
    for cfg in (plan.baseline, plan.pruned):
        assert cfg.weights == str(w.resolve()) and cfg.warmup_epochs == 0
        assert "no warm-up (the default would be 1 epoch)" in cfg.notes[0]
