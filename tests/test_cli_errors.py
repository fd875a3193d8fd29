"""Bad input through the installed `edgeprune` entry point, in a real process: one sentence, no traceback.

Under typer's CliRunner an exception is stored, not printed, so only a real process shows what a
user sees. Each case runs `<venv>/bin/edgeprune` with this checkout on PYTHONPATH, from an empty
directory (no ./data), without $EDGEPRUNE_DATA and with the hub unreachable on any machine
(HF_HUB_OFFLINE, an HF_ENDPOINT nothing answers, an empty HF_HOME). It must exit 2 (3: data
missing offline) with exactly one non-empty line on stderr, the error, holding the case's
phrases (what is wrong and the fix), and print no traceback anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundle_fixture import make_tiny_bundle
from datafiles import write_mnist_like
from own_datafiles import sentiment_rows, write_csv

REPO = Path(__file__).resolve().parents[1]
EDGEPRUNE = Path(sys.executable).parent / "edgeprune"  # the console script pip installed
OFFLINE_S = 60  # the slowest case imports torch, onnx and datasets; a hub retry loop takes minutes

# The run the fixture trains, and the flags that give the same configuration on the command line.
RUN_FLAGS = ["--dataset", "mnist", "--data-dir", "{data}", "--epochs", "1", "--limit", "100", "--no-prune"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_root) -> dict[str, Path]:
    """Everything the cases point at: a finished run and broken copies of it, bundles, bad data."""
    from edgeprune.config import resolve_train_config
    from edgeprune.train import train_run

    w = tmp_path_factory.mktemp("cli_errors")
    run = w / "run"
    cfg = resolve_train_config(
        dataset="mnist", data_dir=data_root, out=run, epochs=1, limit=100, prune=False, threads=1, device="cpu"
    )
    train_run(cfg, quiet=True)

    def copy(name: str) -> Path:
        shutil.copytree(run, w / name)
        return w / name

    v99 = copy("v99")  # a run directory of another layout
    saved = json.loads((v99 / "config.json").read_text())
    (v99 / "config.json").write_text(json.dumps(dict(saved, run_format=99)))
    bad_ckpt = copy("bad_ckpt")  # interrupted (no metrics), its checkpoint damaged
    (bad_ckpt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (bad_ckpt / "metrics.json").unlink()
    (copy("bad_model") / "model.pt").write_bytes(b"not a model")
    (copy("bad_config") / "config.json").write_text("{oops")
    (w / "no_config").mkdir()
    (w / "no_config" / "config.json").write_text('{"x": 1}')
    (w / "empty").mkdir()
    (w / "notes.txt").write_text("not a model\n")

    bundle = make_tiny_bundle(w / "bundle")
    shutil.copytree(bundle, w / "damaged")
    with open(w / "damaged" / "eval.npz", "r+b") as f:  # cut short in transit
        f.truncate(100)
    shutil.copytree(bundle, w / "bad_meta")
    (w / "bad_meta" / "meta.json").write_text("{oops")

    (w / "raises_on_import.py").write_text("import torch\n\nraise RuntimeError('needs a GPU')\n")
    (w / "factories.py").write_text(
        "from torch import nn\n\n\ndef make(num_classes):\n    return nn.Linear(4, num_classes)\n"
    )
    # nothing to prune: a linear classifier (its only channels are the model's inputs and outputs),
    # and a CNN whose every channel path goes through an op the tracer does not follow
    (w / "unprunable.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "def linear(num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n\n\n"
        "class Cumsum(nn.Module):\n    def __init__(self, num_classes):\n        super().__init__()\n"
        "        self.conv, self.fc = nn.Conv2d(1, 8, 3), nn.Linear(8, num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(torch.cumsum(self.conv(x), 1).mean((2, 3)))\n\n\n"
        "def cumsum(num_classes):\n    return Cumsum(num_classes)\n"
    )

    _weights_files(w)
    write_csv(w / "texts.csv", ["text", "label"], sentiment_rows(30, classes=("bad", "good")))
    (w / "vectors3.txt").write_text("film 0.1 0.2 0.3\nthe 1 2 3\n")
    idx = write_mnist_like(w / "bad_data" / "mnist", n_train=20, n_test=10, compress=False)
    images = idx / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:500])
    return {"w": w, "data": data_root, "run": run}


def _weights_files(w: Path) -> None:
    """--weights files for mnist's default model (cnn, 28x28x1, 10 classes) and packages that fail to import."""
    import torch
    from safetensors.torch import save_file

    from edgeprune.models import build_model

    def cnn(**config):
        return build_model({"name": "cnn", "config": {"in_channels": 1, "image_size": [28, 28], **config}})

    save_file(cnn().state_dict(), str(w / "cnn.safetensors"))
    torch.save(cnn(channels=[16, 64]).state_dict(), w / "narrow_cnn.pt")  # another width: a shape differs
    torch.save(build_model({"name": "resnet20", "config": {"in_channels": 1}}).state_dict(), w / "resnet20.pth")
    torch.save(cnn(), w / "whole_model.pt")  # the model object, not its state dict
    (w / "corrupt.pt").write_bytes(b"PK\x03\x04 cut short in transit")
    (w / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{oops")
    # packages a user may not have installed: a directory on PYTHONPATH whose package fails to import
    for package in ("timm", "safetensors"):
        shim = w / f"no_{package}" / package
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(f'raise ImportError("No module named {package} (this test hides it)")\n')


def _p(*args, code=2, says, marks=(), hide=None):
    """A case: the command's args, its exit code, phrases of its one line, and a package to `hide`
    (not installed, as far as the command can tell)."""
    return pytest.param(list(args), code, (says,) if isinstance(says, str) else says, hide, marks=marks)


HELP = "See 'edgeprune train --help'."
MNIST = ["--dataset", "mnist"]
NEW_RUN = [*MNIST, "--data-dir", "{data}", "--out", "{tmp}/x"]  # a fresh run on the local mnist copy
FACTORY_FIX = "pass --model path/to/file.py:factory"
CASES = {
    # click's own parsing, before any command runs: one line, pointing at --help
    "no-such-command": _p("trian", says=("No such command 'trian'", "Did you mean 'train'?")),
    "not-an-integer": _p("train", *MNIST, "--epochs", "abc", says=("'--epochs'", HELP)),
    "unknown-flag": _p("train", *MNIST, "--bogus", says=("No such option: --bogus", HELP)),
    "missing-option": _p("train", says=("Missing option '--dataset'", HELP)),
    "missing-value": _p("datasets", "--data-dir", says="Option '--data-dir' requires an argument"),
    "datasets-data-dir-missing": _p(
        "datasets", "--data-dir", "{tmp}/nowhere", says=("does not exist", "pass the directory that holds")
    ),
    # train
    "unknown-dataset": _p("train", "--dataset", "mnits", says="Did you mean 'mnist'?"),
    "out-is-a-file": _p(
        "train", *MNIST, "--data-dir", "{data}", "--out", "{w}/notes.txt", says="pass a directory for the run"
    ),
    "no-data-offline": _p("train", *MNIST, "--out", "{tmp}/x", code=3, says=("put IDX files", "pass --data-dir")),
    "data-dir-is-a-file": _p(
        "train", *MNIST, "--data-dir", "{w}/notes.txt", "--out", "{tmp}/x", says=("is a file", "pass the directory")
    ),
    "group-by-length-on-images": _p(
        "train", *NEW_RUN, "--group-by-length", says=("--group-by-length batches texts", "drop it")
    ),
    "keep-best-without-validation": _p(
        "train", *NEW_RUN, "--keep-best", "--val-fraction", "0", says="set --val-fraction above 0"
    ),
    "keep-best-no-validation-left": _p(
        "train", *NEW_RUN, "--keep-best", "--limit", "4", says="leaves none for validation"
    ),
    "embeddings-on-images": _p(
        "train", *NEW_RUN, "--embeddings", "{w}/vectors3.txt", says="mnist is not a text dataset"
    ),
    "embeddings-missing-file": _p(
        "train",
        *("--dataset", "{w}/texts.csv", "--out", "{tmp}/x", "--embeddings", "{w}/nope.txt"),
        says=("nope.txt is not a file", "pass a word-vectors text file"),
    ),
    "embeddings-wrong-width": _p(
        "train",
        *("--dataset", "{w}/texts.csv", "--out", "{tmp}/x", "--embeddings", "{w}/vectors3.txt"),
        says=("holds vectors 3 wide but the model's embedding is 128 wide", """'{"embed_dim": 3}'"""),
    ),
    "corrupt-data": _p(
        "train", *MNIST, "--data-dir", "{w}/bad_data", "--out", "{tmp}/x", says="replace it with the original"
    ),
    "other-configuration": _p(
        "train", *RUN_FLAGS, "--out", "{run}", "--lr", "0.01", says=("(lr differ)", "choose another --out")
    ),
    "other-run-format": _p(
        "train", *RUN_FLAGS, "--out", "{w}/v99", "--resume", says=("run format 99", "train into a new --out")
    ),
    "corrupt-checkpoint": _p(
        "train",
        *RUN_FLAGS,
        *("--out", "{w}/bad_ckpt", "--resume"),
        says=("not a readable checkpoint", "pass --restart to discard it"),
    ),
    # train --model / --model-kwargs: any model, built (and run once on the data) before training starts
    "model-file-missing": _p(
        "train", *NEW_RUN, "--model", "missing.py:make", says=("missing.py does not exist", FACTORY_FIX)
    ),
    "model-file-raises-on-import": _p(
        "train",
        *NEW_RUN,
        *("--model", "{w}/raises_on_import.py:make"),
        says=("raises RuntimeError: needs a GPU at", "raises_on_import.py:3", "fix the file"),
    ),
    "model-factory-missing": _p(
        "train",
        *NEW_RUN,
        *("--model", "{w}/factories.py:build"),
        says=("has no function 'build' (it defines make)", "pass --model"),
    ),
    "model-kwargs-not-json": _p(
        "train", *NEW_RUN, "--model-kwargs", "not json", says=("is not valid JSON", "pass an object such as")
    ),
    "model-kwargs-not-an-object": _p(
        "train", *NEW_RUN, "--model-kwargs", "[1]", says="--model-kwargs must be a JSON object"
    ),
    "model-output-size": _p(
        "train",
        *("--dataset", "cifar10", "--data-dir", "{data}", "--out", "{tmp}/x", "--no-prune"),
        *("--model", "torchvision:resnet18", "--model-kwargs", '{{"num_classes": 3}}'),
        says=("gives 3 outputs but cifar10 has 10 classes", """--model-kwargs '{"num_classes": 10}'"""),
    ),
    # a budget on a model with nothing prunable: refused before the run directory is written
    "budget-nothing-prunable-linear": _p(
        "train",
        *NEW_RUN,
        *("--model", "{w}/unprunable.py:linear", "--target-macs", "0.5"),
        says=("--target-macs 0.5 cannot be met: no channel of this Sequential can be pruned", "(--no-prune)"),
    ),
    "budget-nothing-prunable-frozen": _p(
        "train",
        *NEW_RUN,
        *("--model", "{w}/unprunable.py:cumsum", "--target-params", "0.3"),
        says=("no channel of this Cumsum can be pruned (frozen: conv (torch.cumsum", "make those layers traceable"),
    ),
    "timm-unknown-model": _p(
        "train",
        *NEW_RUN,
        *("--model", "timm:nosuchnet"),
        says=("timm", "has no model 'nosuchnet'", "timm.list_models() lists the names"),
    ),
    "timm-not-installed": _p(
        "train",
        *NEW_RUN,
        *("--model", "timm:resnet10t"),
        hide="timm",
        says=("--model timm:NAME needs timm, which is not installed", "pip install 'edgeprune[timm]'"),
    ),
    "timm-pretrained-kwarg": _p(
        "train",
        *NEW_RUN,
        *("--model", "timm:resnet10t", "--model-kwargs", '{{"pretrained": true}}'),
        says=("never downloads weights; drop pretrained", "--weights FILE"),
    ),
    # train --weights: read and matched against the model before the run directory is written
    "weights-missing": _p(
        "train", *NEW_RUN, "--weights", "{w}/nope.pt", says=("nope.pt does not exist", "pass the weights file")
    ),
    "weights-other-suffix": _p(
        "train", *NEW_RUN, "--weights", "{w}/notes.txt", says=("is neither .pt, .pth nor .safetensors", "torch.save")
    ),
    "weights-corrupt": _p(
        "train",
        *NEW_RUN,
        *("--weights", "{w}/corrupt.pt"),
        says=("corrupt.pt is not a torch file edgeprune can read (RuntimeError)", "fetch it again"),
    ),
    "weights-pickled-model": _p(
        "train",
        *NEW_RUN,
        *("--weights", "{w}/whole_model.pt"),
        says=("holds pickled Python objects (edgeprune.models.cnn.SeedCNN)", "save model.state_dict()"),
    ),
    "weights-corrupt-safetensors": _p(
        "train",
        *NEW_RUN,
        *("--weights", "{w}/corrupt.safetensors"),
        says=("is not a readable .safetensors file", "fetch it again"),
    ),
    "weights-other-architecture": _p(
        "train",
        *NEW_RUN,
        *("--weights", "{w}/resnet20.pth"),
        says=("is not for cnn", "first 'conv1.weight' in the file where the model has 'convs.0.weight'"),
    ),
    "weights-other-width": _p(
        "train",
        *NEW_RUN,
        *("--weights", "{w}/narrow_cnn.pt"),
        says=("'convs.0.weight' is [16, 1, 3, 3] in the file but [32, 1, 3, 3] in the model", "same architecture"),
    ),
    "weights-safetensors-not-installed": _p(
        "train",
        *NEW_RUN,
        *("--weights", "{w}/cnn.safetensors"),
        hide="safetensors",
        says=("needs the safetensors package", "pip install 'edgeprune[weights]'"),
    ),
    "weights-and-embeddings": _p(
        "train",
        *("--dataset", "{w}/texts.csv", "--out", "{tmp}/x", "--embeddings", "{w}/vectors3.txt"),
        *("--weights", "{w}/cnn.safetensors"),
        says=("--embeddings would be lost", "pass one of them"),
    ),
    "torchvision-unknown-model": _p(
        "train",
        *NEW_RUN,
        *("--model", "torchvision:nosuchnet"),
        says=("no classification model 'nosuchnet'", "torchvision.models.list_models(module=torchvision.models)"),
    ),
    # export
    "export-corrupt-model": _p("export", "{w}/bad_model", says=("not a readable edgeprune model", "re-create it")),
    "export-other-run-format": _p("export", "{w}/v99", says=("run format 99", "re-train it with this version")),
    "export-no-data-offline": _p(
        "export", "{run}", "--data-dir", "{w}/empty", code=3, says=("was not found locally", "pass --data-dir")
    ),
    # bench (the runtime-only install: no torch)
    "bench-missing-argument": _p("bench", says=("Missing argument 'MODEL_OR_BUNDLE...'", "edgeprune bench --help")),
    "bench-no-such-file": _p("bench", "{w}/nope.onnx", says="pass an .onnx file or a bundle directory"),
    "bench-not-a-bundle": _p("bench", "{w}/empty", says=("is not a bundle", "made by `edgeprune export`")),
    "bench-not-onnx": _p("bench", "{run}/model.pt", says=("is not a valid ONNX model", "re-export it")),
    "bench-bad-batch": _p("bench", "{w}/bundle", "--batch", "1,,8", says="positive integers separated by commas"),
    "bench-runs-and-seconds": _p("bench", "{w}/bundle", "--runs", "3", "--seconds", "1", says="either --runs or"),
    "bench-unknown-target": _p("bench", "{w}/bundle", "--target", "pi9", says="choose one of: rpi4, rpi5, x86"),
    "bench-damaged-bundle": _p("bench", "{w}/damaged", says=("no longer match MANIFEST.sha256", "copy the bundle")),
    "bench-bad-meta": _p("bench", "{w}/bad_meta", says=("is not valid JSON", "re-run `edgeprune export`")),
    "bench-json-is-a-dir": _p("bench", "{w}/bundle", "--json", "{w}/empty", says="give a file path"),
    "bench-unknown-runtime": _p(
        "bench", "{w}/bundle", "--runtime", "tvm", says=("unknown --runtime tvm", "choose from onnxruntime, openvino")
    ),
    "bench-ncnn-on-an-onnx-file": _p(
        "bench", "{w}/bundle/model.onnx", "--runtime", "ncnn", says=("reads model.onnx", "--runtimes ncnn")
    ),
    "export-unknown-runtime": _p("export", "{run}", "--runtimes", "tflite", says="unknown --runtime tflite"),
    # report
    "report-not-a-run": _p("report", "{w}/empty", says="pass directories written by edgeprune train"),
    "report-out-is-a-file": _p("report", "{run}", "--out", "{w}/notes.txt", says="is a file; pass a directory"),
    "report-no-configuration": _p("report", "{w}/no_config", says="re-create the run with edgeprune train"),
    "report-corrupt-config": _p(
        "report", "{w}/bad_config", says=("is not valid JSON", "rebuild it from the checkpoint with edgeprune train")
    ),
    # experiment
    "experiment-unknown-target": _p(
        "experiment", *MNIST, "--out", "{tmp}/e", "--target", "rpi9", says="choose one of: rpi4, rpi5, x86"
    ),
    "experiment-model-file-missing": _p(
        "experiment", *NEW_RUN, "--model", "missing.py:make", says=("missing.py does not exist", FACTORY_FIX)
    ),
    "experiment-model-kwargs-not-json": _p(
        "experiment", *NEW_RUN, "--model-kwargs", "[1]", says="must be a JSON object such as"
    ),
    "experiment-two-budgets": _p(
        "experiment", *NEW_RUN, "--target-latency-ms", "0.1", "--target-macs", "0.5", says="Give one budget"
    ),
    "experiment-embeddings-on-images": _p(
        "experiment", *NEW_RUN, "--embeddings", "{w}/vectors3.txt", says="mnist is not a text dataset"
    ),
}


def run_cli(
    args: list[str], cwd: Path, first_on_path: Path | None = None, set_env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Run the installed `edgeprune` on this checkout; `first_on_path`: a directory imported from before it;
    `set_env`: variables to set (None: to unset)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEPRUNE_DATA"}
    env.update(
        # the checkout under test, not whatever the venv installed
        PYTHONPATH=os.pathsep.join([*([str(first_on_path)] if first_on_path else []), str(REPO)]),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        # edgeprune probes the hub's host on port 443 before loading: refused at once, even online
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HOME=str(cwd / ".hf"),  # no cached copy can stand in for the missing data
        COLUMNS="500",  # rich must not wrap the one line
    )
    for k, v in (set_env or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run(
        [str(EDGEPRUNE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("args,code,says,hide", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_that_names_the_fix(world, tmp_path, args, code, says, hide):
    assert EDGEPRUNE.is_file(), f"{EDGEPRUNE} is missing: pip install -e '.[dev]' into this environment"
    paths = {k: str(v) for k, v in world.items()} | {"tmp": str(tmp_path)}
    shim = world["w"] / f"no_{hide}" if hide else None
    t0 = time.perf_counter()
    r = run_cli([a.format(**paths) for a in args], cwd=tmp_path, first_on_path=shim)
    seconds = time.perf_counter() - t0
    output = r.stdout + r.stderr
    assert "Traceback" not in output, output
    assert r.returncode == code, output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for phrase in says:
        assert phrase in lines[0], lines[0]
    assert not (tmp_path / "x" / "config.json").exists(), "a refused new run (--out {tmp}/x) was started"
    assert seconds < OFFLINE_S
