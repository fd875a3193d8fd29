"""Any model through the real commands: `edgeprune train --model resnet20 | torchvision:NAME |
file.py:factory` prunes it while it trains (traced coupling, in-place compaction), and a later
`edgeprune export` in a fresh process rebuilds it from the run (weights_only) and exports it with
ONNX parity verified. Tiny: 3 epochs (warm-up, prune, fine-tune) on 64 CIFAR-like images, one thread."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from test_cli_errors import run_cli

ONNX_TOLERANCE = 1e-4

FACTORY = """
import torch
from torch import nn
import torch.nn.functional as F


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // 2), nn.Linear(c // 2, c)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * s[:, :, None, None]


class Mine(nn.Module):
    def __init__(self, num_classes, width=24):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=4)
        self.se = SE(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = x + self.se(F.relu(self.conv2(x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make(num_classes, width=24):
    return Mine(num_classes, width)
"""

# timm's MixedConv2d: pruned pieces of a split whose sizes live in the layer's `splits` list, which
# the export's model, rebuilt from the run's weights, must recover
MIXCONV_FACTORY = """
from torch import nn
from timm.layers import BatchNormAct2d, MixedConv2d


class MixNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.bn0 = BatchNormAct2d(32)
        self.pw = MixedConv2d(32, 96, [1, 1])  # splits 32 into 16 + 16
        self.bn1 = BatchNormAct2d(96)
        self.dw = MixedConv2d(96, 96, [3, 5, 7], depthwise=True)  # 32 + 32 + 32, across pw's 48 + 48
        self.bn2 = BatchNormAct2d(96)
        self.head = nn.Linear(96, num_classes)

    def forward(self, x):
        x = self.bn1(self.pw(self.bn0(self.stem(x))))
        return self.head(self.bn2(self.dw(x)).mean((2, 3)))


def make(num_classes):
    return MixNet(num_classes)
"""

FACTORIES = {"factory": FACTORY, "mixconv-factory": MIXCONV_FACTORY}
CASES = {
    "resnet20": [],
    "torchvision:mobilenet_v2": ["--model-kwargs", '{"width_mult": 0.35}'],
    "factory": ["--model-kwargs", '{"width": 32}'],
    "mixconv-factory": [],
}


@pytest.mark.parametrize("name", CASES)
def test_any_model_prunes_while_training_and_exports_in_a_fresh_process(name, data_root, tmp_path):
    model = name
    if name in FACTORIES:
        (tmp_path / "mine.py").write_text(textwrap.dedent(FACTORIES[name]))
        model = str(tmp_path / "mine.py") + ":make"
    run = tmp_path / "run"
    args = ["train", "--dataset", "cifar10", "--data-dir", str(data_root), "--model", model, *CASES[name]]
    # unguarded, so that each epoch that cuts re-estimates BatchNorm once (a guarded step also does it per trial)
    args += ["--epochs", "3", "--limit", "64", "--threads", "1", "--out", str(run), "--target-macs", "0.6"]
    args += ["--max-accuracy-drop", "none"]
    r = run_cli(args, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["macs"] <= 0.6 * metrics["baseline_macs"]
    assert metrics["params"] < metrics["baseline_params"]
    # every epoch that removed units re-estimated the BatchNorm statistics (64 images: one batch)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    cut = [h for h in history if (h.get("removed") or {}).get("units")]
    assert cut and all(h["bn_recalibrated_batches"] == 1 for h in cut), history
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["arch"]["name"] == model

    r = run_cli(["export", str(run), "--calib", "16", "--eval-limit", "32"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    parity = json.loads((run / "export" / "parity.json").read_text())
    rows = {v["name"]: v for v in parity["variants"]}
    assert rows["onnx"]["max_abs_diff"] <= ONNX_TOLERANCE
    assert rows["simplified"]["max_abs_diff_vs_onnx"] <= ONNX_TOLERANCE
    assert (run / "bundle" / "model.onnx").is_file()
    # and the bundle benchmarks with the runtime (accuracy on the bundle's eval set included)
    out = tmp_path / "bench.json"
    r = run_cli(
        ["bench", str(run / "bundle"), "--threads", "1", "--runs", "5", "--rounds", "1", "--json", str(out)], tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(out.read_text())["results"]
    assert rows and all(row["status"] == "ok" and row["accuracy"] is not None for row in rows)
