"""The dataset registry: what each dataset is, where its local copy may live, its hub id."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edgeprune.errors import unknown_choice

DATA_ENV = "EDGEPRUNE_DATA"
DEFAULT_DATA_DIR = Path("data")  # relative to where edgeprune runs
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "image" or "text"
    labels: tuple[str, ...]
    hf_id: str
    test_split: str  # the hub split used as the test set
    image_shape: Optional[tuple[int, int, int]] = None  # C, H, W
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    local_format: str = ""
    hf_text_column: str = "text"
    notes: str = ""
    default_model: str = field(default="")

    @property
    def num_classes(self) -> int:
        return len(self.labels)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


register(
    DatasetSpec(
        name="mnist",
        task="image",
        labels=tuple(str(i) for i in range(10)),
        hf_id="ylecun/mnist",
        test_split="test",
        image_shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        local_format="IDX files (train-images-idx3-ubyte[.gz], ...)",
        default_model="cnn",
    )
)
register(
    DatasetSpec(
        name="fashion-mnist",
        task="image",
        labels=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        hf_id="zalando-datasets/fashion_mnist",
        test_split="test",
        image_shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        local_format="IDX files (train-images-idx3-ubyte[.gz], ...)",
        default_model="cnn",
    )
)
register(
    DatasetSpec(
        name="cifar10",
        task="image",
        labels=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        hf_id="uoft-cs/cifar10",
        test_split="test",
        image_shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        local_format="CIFAR-10 python batches (cifar-10-batches-py/data_batch_1..5, test_batch)",
        default_model="cnn",
    )
)
register(
    DatasetSpec(
        name="imdb",
        task="text",
        labels=("negative", "positive"),
        hf_id="stanfordnlp/imdb",
        test_split="test",
        local_format="train.csv|parquet and test.csv|parquet with columns text,label",
        default_model="bilstm",
    )
)
register(
    DatasetSpec(
        name="sst2",
        task="text",
        labels=("negative", "positive"),
        hf_id="stanfordnlp/sst2",
        test_split="validation",
        hf_text_column="sentence",
        local_format="train.csv|parquet and validation.csv|parquet with columns text,label",
        notes="test = the 872-example validation split (the hub's test labels are hidden)",
        default_model="bilstm",
    )
)


def get_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "sst-2": "sst2"}.get(key, key)
    if key not in DATASETS:
        raise unknown_choice("dataset", key, DATASETS)
    return DATASETS[key]


def candidate_dirs(spec: DatasetSpec, data_dir: Optional[Path]) -> list[Path]:
    """Where a local copy may live, in order: --data-dir, $EDGEPRUNE_DATA, system locations."""
    roots = [Path(p) for p in (data_dir, os.environ.get(DATA_ENV)) if p] + [DEFAULT_DATA_DIR]
    dirs: list[Path] = []
    for root in roots:
        dirs += [root / spec.name, root / spec.name.replace("-", "_"), root]
    dirs += SYSTEM_DIRS.get(spec.name, [])
    return dirs


def find_local(spec: DatasetSpec, data_dir: Optional[Path]) -> Optional[Path]:
    from edgeprune.data import sources

    for d in candidate_dirs(spec, data_dir):
        if d.is_dir() and sources.has_local_copy(spec, d):
            return d
    return None


def describe_all(data_dir: Optional[Path]) -> list[dict]:
    rows = []
    for spec in DATASETS.values():
        local = find_local(spec, data_dir)
        found = str(local) if local else f"not local (hub: {spec.hf_id})"
        rows.append(
            {
                "name": spec.name,
                "task": spec.task,
                "num_classes": spec.num_classes,
                "found": found,
                "local": str(local) if local else None,
            }
        )
    return rows
