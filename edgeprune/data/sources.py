"""Readers for the real on-disk formats and for the Hugging Face hub. Return numpy arrays.

Images come back as uint8 [N, C, H, W]; text as a list of strings. Labels are int64.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgeprune.data.spec import DatasetSpec
from edgeprune.errors import DataNotFound, UserError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TEXT_SPLITS = {"imdb": ("train", "test"), "sst2": ("train", "validation")}


@dataclass
class RawSplit:
    x: object  # np.ndarray (images) or list[str] (text)
    y: np.ndarray


@dataclass
class RawData:
    train: RawSplit
    test: RawSplit
    source: str  # where it was read from


# ---------------------------------------------------------------- IDX (MNIST family)


def _idx_path(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path} could not be read ({e}); re-download or re-install the file.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number); replace it with the original.")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(
            f"{path} is truncated or corrupt ({len(data) - header} bytes of data, "
            f"expected {expected}); replace it with the original."
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("=") if dtype.kind != "u" else dtype)
    )


def read_idx_split(directory: Path, split: str) -> RawSplit:
    img_stem, lbl_stem = IDX_FILES[split]
    images = read_idx(_idx_path(directory, img_stem))
    labels = read_idx(_idx_path(directory, lbl_stem)).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise UserError(
            f"IDX files in {directory} do not match: {images.shape} images, "
            f"{labels.shape} labels; replace them with the originals."
        )
    return RawSplit(images[:, None, :, :].astype(np.uint8), labels)


# ---------------------------------------------------------------- CIFAR-10 python batches


def _cifar_dir(directory: Path) -> Optional[Path]:
    for d in (directory, directory / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file() and (d / "test_batch").is_file():
            return d
    return None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # a corrupt pickle can raise nearly anything
        raise UserError(
            f"{path} is not a CIFAR-10 python batch ({type(e).__name__}); replace it with the original."
        ) from None
    return data, labels


def read_cifar(directory: Path) -> tuple[RawSplit, RawSplit]:
    d = _cifar_dir(directory)
    parts = [_read_cifar_batch(d / f"data_batch_{i}") for i in range(1, 6) if (d / f"data_batch_{i}").is_file()]
    train = RawSplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    tx, ty = _read_cifar_batch(d / "test_batch")
    return train, RawSplit(tx, ty)


# ---------------------------------------------------------------- text tables (CSV / Parquet)


def _table_path(directory: Path, split: str) -> Optional[Path]:
    for ext in (".parquet", ".csv"):
        p = directory / f"{split}{ext}"
        if p.is_file():
            return p
    matches = sorted(directory.glob(f"{split}-*.parquet"))  # the hub's parquet export names
    return matches[0] if matches else None


def read_text_table(path: Path) -> RawSplit:
    """Read a CSV or Parquet file with columns text (or sentence) and label."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path).to_pydict()
        else:
            import csv

            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            table = {k: [r[k] for r in rows] for k in (rows[0].keys() if rows else [])}
    except Exception as e:
        raise UserError(
            f"{path} could not be read as a table ({type(e).__name__}: {e}); "
            "it must be CSV or Parquet with columns text,label."
        ) from None
    text_col = next((c for c in ("text", "sentence") if c in table), None)
    if text_col is None or "label" not in table:
        raise UserError(f"{path} has columns {sorted(table)}; it needs columns text,label.")
    try:
        labels = np.asarray([int(v) for v in table["label"]], dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: the label column must hold integers (0 = negative, 1 = positive).") from None
    return RawSplit([str(t) for t in table[text_col]], labels)


# ---------------------------------------------------------------- dispatch


def has_local_copy(spec: DatasetSpec, directory: Path) -> bool:
    if spec.name in ("mnist", "fashion-mnist"):
        return all(_idx_path(directory, s) for pair in IDX_FILES.values() for s in pair)
    if spec.name == "cifar10":
        return _cifar_dir(directory) is not None
    return all(_table_path(directory, s) for s in TEXT_SPLITS[spec.name])


def read_local(spec: DatasetSpec, directory: Path) -> RawData:
    if spec.name in ("mnist", "fashion-mnist"):
        return RawData(read_idx_split(directory, "train"), read_idx_split(directory, "test"), str(directory))
    if spec.name == "cifar10":
        train, test = read_cifar(directory)
        return RawData(train, test, str(directory))
    tr, te = TEXT_SPLITS[spec.name]
    return RawData(
        read_text_table(_table_path(directory, tr)), read_text_table(_table_path(directory, te)), str(directory)
    )


def read_hub(spec: DatasetSpec, looked_in: list[Path]) -> RawData:
    """Load from the Hugging Face hub; offline, raise one sentence saying where files go."""
    where = looked_in[0] if looked_in else Path("DATA") / spec.name
    missing = (
        f"'{spec.name}' was not found locally and the Hugging Face hub ({spec.hf_id}) is "
        f"unreachable; put {spec.local_format} in {where} (or pass --data-dir / set "
        f"$EDGEPRUNE_DATA) and try again."
    )
    try:
        import datasets as hf
    except ImportError:
        raise DataNotFound(missing.replace("is unreachable", "needs the 'datasets' package")) from None
    import logging
    import os

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"  # fail at once (or use the local HF cache) instead of retrying
        hf.config.HF_HUB_OFFLINE = True
    try:
        ds = hf.load_dataset(spec.hf_id)
    except Exception as e:  # ConnectionError, OfflineModeIsEnabled, HfHubHTTPError, ...
        raise DataNotFound(f"{missing} ({type(e).__name__})") from None
    return RawData(_hub_split(spec, ds["train"]), _hub_split(spec, ds[spec.test_split]), f"hub:{spec.hf_id}")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within `timeout` seconds (at once False when HF_HUB_OFFLINE says so)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False  # the user said so: no need to wait for a connection to fail
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_split(spec: DatasetSpec, split) -> RawSplit:
    labels = np.asarray(split["label"], dtype=np.int64)
    if spec.task == "text":
        return RawSplit([str(t) for t in split[spec.hf_text_column]], labels)
    image_col = "img" if "img" in split.column_names else "image"
    arrays = [np.asarray(im, dtype=np.uint8) for im in split[image_col]]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return RawSplit(np.ascontiguousarray(x), labels)
