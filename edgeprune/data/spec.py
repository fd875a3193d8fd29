"""What a dataset is: its task, labels and preprocessing (`DatasetSpec`), whichever source it comes
from: a registry entry (edgeprune.data.registry) or your own data (edgeprune.data.own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from edgeprune.data.options import DataOptions


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "image" or "text"
    labels: tuple[str, ...]
    hf_id: str = ""
    test_split: str = "test"  # the hub split used as the test set
    image_shape: Optional[tuple[int, int, int]] = None  # C, H, W
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    local_format: str = ""
    hf_text_column: str = "text"
    notes: str = ""
    default_model: str = field(default="")
    # Your own data (kind folder, table or hub); a registry entry leaves these empty.
    kind: str = "registry"
    ref: str = ""  # the absolute path or hf:owner/name[:config] that --dataset resolves again
    label_order: str = ""  # where the order of `labels` comes from
    columns: tuple[str, ...] = ()  # tables: (text or image column, label column)
    test_from: str = ""  # the test split's folder, file or hub split; "" when carved from train
    options: Optional["DataOptions"] = None  # the flags the data was read with

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def id(self) -> str:
        """What --dataset names to find this spec again: the registry name, a path or hf:owner/name."""
        return self.ref or self.name
