"""The dataset registry: what each dataset is, where its local copy may live, its hub id.

A dataset is a spec (task, labels, preprocessing) plus a source. The named entries below are
specs written by hand; a path or hf:owner/name resolves to a spec built from the data itself
(edgeprune.data.own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from edgeprune.data.spec import DatasetSpec
from edgeprune.errors import UserError, unknown_choice

DATA_ENV = "EDGEPRUNE_DATA"
DEFAULT_DATA_DIR = Path("data")  # relative to where edgeprune runs
SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}


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


OWN_DATA = "your own data (an image folder, a .csv/.parquet/.jsonl file or directory, or hf:owner/name)"


def registry_spec(name: str, options=None) -> Optional[DatasetSpec]:
    """The registry entry `name` names; None when it names your own data; else a UserError."""
    from edgeprune.data import own
    from edgeprune.data.options import coerce

    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "sst-2": "sst2"}.get(key, key)
    if key in DATASETS and not own.looks_like_path(name):  # ./mnist is a folder, mnist the registry's
        given = coerce(options).given()
        if given:
            raise UserError(
                f"{', '.join(given)} {'apply' if len(given) > 1 else 'applies'} to your own data (a folder, "
                f"a table or hf:owner/name), not to the registry dataset {key}; drop "
                f"{'them' if len(given) > 1 else 'it'}."
            )
        return DATASETS[key]
    if own.is_own(name):
        return None
    raise unknown_choice("dataset", key, [*DATASETS, OWN_DATA])


def get_spec(name: str, options=None) -> DatasetSpec:
    """The spec of a registry name, or of your own data (a path or hf:owner/name) read with `options`."""
    spec = registry_spec(name, options)
    if spec is None:
        from edgeprune.data import own

        spec = own.resolve(name, options).spec
    return spec


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


def check_data_dir(data_dir: Optional[Path]) -> None:
    """--data-dir must name a directory: a typo would otherwise fall through to the hub quietly."""
    if data_dir is not None and not Path(data_dir).is_dir():
        from edgeprune.errors import UserError

        what = "is a file" if Path(data_dir).exists() else "does not exist"
        raise UserError(f"--data-dir {data_dir} {what}; pass the directory that holds your local dataset copies.")


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
