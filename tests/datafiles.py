"""Small datasets written in the real on-disk formats, for tests (IDX, CIFAR batches, CSV/Parquet)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from edgeprune.data.synthetic import sentiment_texts, write_sentiment  # noqa: F401  (tests use both)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """Write `array` (uint8) as an IDX file, gzip-compressed or raw."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = Path(str(path) + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def learnable_images(n: int, shape=(28, 28), classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright square at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    h, w = shape
    x = rng.integers(0, 60, (n, h, w)).astype(np.uint8)
    for c in range(classes):
        r, q = divmod(c, 4)
        rows = slice(2 + r * (h // 4), 2 + r * (h // 4) + h // 5)
        cols = slice(1 + q * (w // 4), 1 + q * (w // 4) + w // 5)
        x[y == c, rows, cols] = 220
    return x, y.astype(np.uint8)


def write_mnist_like(
    directory: Path, n_train: int = 600, n_test: int = 200, compress: bool = True, seed: int = 0
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = learnable_images(n, seed=s)
        write_idx(directory / f"{split}-images-idx3-ubyte", x, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte", y, compress)
    return directory


def write_cifar_like(directory: Path, n_per_batch: int = 50, seed: int = 0) -> Path:
    d = directory / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = learnable_images(n_per_batch, shape=(32, 32), seed=int(rng.integers(1 << 30)))
        rgb = np.repeat(x[:, None], 3, axis=1).reshape(n_per_batch, -1)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rgb, b"labels": [int(v) for v in y]}, f)
    return directory
