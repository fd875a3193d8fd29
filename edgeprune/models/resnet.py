"""CIFAR-style ResNets (He et al. 2016, section 4.2), the pruning literature's benchmark.

A 3x3 conv with `width` (16) channels, BatchNorm, ReLU; three stages of n basic blocks with
width, 2*width and 4*width channels (stride 2 at the start of stages 2 and 3); global average
pooling; a Linear classifier. ResNet-(6n+2): resnet20 has n=3, resnet56 n=9. A block is
conv-BN-ReLU-conv-BN plus a shortcut, then ReLU; the shortcut is the identity, or a 1x1 conv + BN
projection where the shape changes (the paper's option B).

These models declare no pruning groups: the pruner finds their channel couplings by tracing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.models.registry import register_model


def _resnet_defaults(meta: dict) -> dict:
    return {"in_channels": meta["input_shape"][1], "num_classes": len(meta["labels"]), "width": 16}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6 * blocks + 2) for small images; subclasses fix `blocks` (per stage)."""

    blocks = 3

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "width": width}
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, prev = [], width
        for i in range(3):
            cout = width * 2**i
            stage = []
            for b in range(self.blocks):
                stage.append(BasicBlock(prev, cout, 2 if i > 0 and b == 0 else 1))
                prev = cout
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))

    def arch(self) -> dict:
        """The configuration it was built from (a compacted model loads into it with load_resized)."""
        return {"name": self.arch_name, "config": dict(self.config)}

    def widths(self) -> dict[str, int]:
        """The current output width of every conv (what pruning has left), for reports."""
        from edgeprune.models.fit import layer_widths

        return layer_widths(self)


@register_model("resnet20", task="image", default_config=_resnet_defaults)
class ResNet20(CifarResNet):
    """272,474 parameters on 3-channel input with 10 classes."""

    blocks = 3


@register_model("resnet56", task="image", default_config=_resnet_defaults)
class ResNet56(CifarResNet):
    """855,770 parameters on 3-channel input with 10 classes."""

    blocks = 9
