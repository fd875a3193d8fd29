"""The seed study's CNN: [Conv2d -> (BatchNorm) -> ReLU -> MaxPool] x n -> [Linear -> ReLU] x m -> Linear."""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.models.registry import register_model


def _cnn_defaults(meta: dict) -> dict:
    c, h, w = meta["input_shape"][1:]
    return {
        "in_channels": c,
        "image_size": [h, w],
        "channels": [32, 64],
        "hidden": [128],
        "num_classes": len(meta["labels"]),
    }


@register_model("cnn", task="image", default_config=_cnn_defaults)
class SeedCNN(nn.Module):
    """Defaults: 3x3 convs (padding 1) with 32 then 64 channels, 128 hidden units: 421,642
    parameters on 28x28x1 input with 10 classes."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size=(28, 28),
        channels=(32, 64),
        hidden=(128,),
        num_classes: int = 10,
        kernel_size: int = 3,
        batchnorm: bool = False,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "image_size": list(image_size),
            "channels": list(channels),
            "hidden": list(hidden),
            "num_classes": num_classes,
            "kernel_size": kernel_size,
            "batchnorm": batchnorm,
        }
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.convs.append(nn.Conv2d(prev, c, kernel_size, padding=kernel_size // 2))
            if batchnorm:
                self.norms.append(nn.BatchNorm2d(c))
            prev = c
        h, w = image_size
        for _ in channels:
            h, w = h // 2, w // 2
        self.spatial = h * w  # positions per channel after the last pool, for the flatten coupling
        self.fcs = nn.ModuleList()
        prev = prev * self.spatial
        for units in hidden:
            self.fcs.append(nn.Linear(prev, units))
            prev = units
        self.classifier = nn.Linear(prev, num_classes)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = self.pool(torch.relu(x))
        x = torch.flatten(x, 1)
        for fc in self.fcs:
            x = torch.relu(fc(x))
        return self.classifier(x)

    def arch(self) -> dict:
        """The description that rebuilds this model at its current widths (pruning shrinks layers in place)."""
        return self.arch_with_widths(self.widths())

    def widths(self) -> dict[str, int]:
        w = {f"conv{i}": c.out_channels for i, c in enumerate(self.convs)}
        w.update({f"fc{i}": f.out_features for i, f in enumerate(self.fcs)})
        return w

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        cfg = dict(self.config)
        cfg["channels"] = [widths[f"conv{i}"] for i in range(len(self.convs))]
        cfg["hidden"] = [widths[f"fc{i}"] for i in range(len(self.fcs))]
        return {"name": self.arch_name, "config": cfg}
