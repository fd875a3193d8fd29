"""Small datasets written in the real on-disk formats, for tests (IDX, CIFAR batches, CSV/Parquet)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

POSITIVE = ["great", "wonderful", "excellent", "loved", "superb", "delightful", "brilliant", "enjoyable"]
NEGATIVE = ["awful", "terrible", "boring", "hated", "dreadful", "poor", "worst", "dull"]
FILLER = [
    "the",
    "movie",
    "plot",
    "was",
    "a",
    "and",
    "actors",
    "film",
    "story",
    "it",
    "very",
    "quite",
    "this",
    "scene",
    "music",
    "of",
    "in",
    "with",
    "but",
    "really",
]


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


def sentiment_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """A learnable sentiment task: the label is which word family appears in the sentence."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    texts = []
    for label in y:
        words = list(rng.choice(FILLER, rng.integers(6, 20)))
        cue = POSITIVE if label else NEGATIVE
        for _ in range(rng.integers(1, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cue)))
        texts.append(" ".join(words))
    return texts, y.astype(np.int64)


def write_sentiment(
    directory: Path, splits=("train", "test"), n_train: int = 800, n_test: int = 200, fmt: str = "csv", seed: int = 0
) -> Path:
    import csv

    directory.mkdir(parents=True, exist_ok=True)
    for split, n, s in ((splits[0], n_train, seed), (splits[1], n_test, seed + 1)):
        texts, y = sentiment_texts(n, s)
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"text": texts, "label": y}), directory / f"{split}.parquet")
        else:
            with open(directory / f"{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["text", "label"])
                w.writerows(zip(texts, y.tolist()))
    return directory
