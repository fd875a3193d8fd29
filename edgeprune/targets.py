"""Device presets for `--target`: threads and the quantization recipe known to suit each CPU.

Export reads the quantization fields; bench reads `threads`. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeprune.errors import UserError

Quantization = Literal["static", "dynamic", "none"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    threads: int | None  # None: all usable cores
    quantization_conv: Quantization  # CNNs
    quantization_linear: Quantization  # LSTM / Linear-only models
    per_channel: bool
    reduce_range: bool
    why: str


TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    TARGETS[target.name] = target
    return target


register(
    Target(
        name="rpi4",
        description="Raspberry Pi 4 (4x Cortex-A72, ARMv8.0-A)",
        threads=4,
        quantization_conv="static",
        quantization_linear="dynamic",
        per_channel=True,
        reduce_range=False,
        why=(
            "Cortex-A72 has NEON but no dot-product (sdot/udot) instructions, so INT8 matmul "
            "gains are small; static QDQ with per-channel weights is the recipe to try, and "
            "always measure against the float model."
        ),
    )
)

register(
    Target(
        name="rpi5",
        description="Raspberry Pi 5 (4x Cortex-A76, ARMv8.2-A)",
        threads=4,
        quantization_conv="static",
        quantization_linear="dynamic",
        per_channel=True,
        reduce_range=False,
        why=(
            "Cortex-A76 has the dot-product instructions (sdot/udot), so INT8 kernels pay off "
            "more than on a Pi 4; static QDQ per-channel for convolutions."
        ),
    )
)

register(
    Target(
        name="x86",
        description="x86-64 server or desktop CPU",
        threads=None,
        quantization_conv="static",
        quantization_linear="dynamic",
        per_channel=True,
        reduce_range=True,
        why=(
            "With AVX2 but no VNNI, u8s8 products may saturate, so reduce_range matters; "
            "quantize_dynamic made a small CNN 3-7x slower here, so convolutions get static "
            "quantization, and always measure."
        ),
    )
)


def get_target(name: str) -> Target:
    """The preset called `name`, or a UserError listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        known = ", ".join(sorted(TARGETS))
        raise UserError(f"unknown --target {name!r}; choose one of: {known}.") from None
