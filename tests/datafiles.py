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


def class_templates(classes: int = 10, shape=(28, 28), shared: float = 0.8, seed: int = 1234) -> np.ndarray:
    """Smooth random patterns, one per class, that share `shared` of their pattern (the classes overlap)."""
    rng = np.random.default_rng(seed)
    h, w = shape

    def smooth_field() -> np.ndarray:
        f = np.kron(rng.standard_normal((h // 4, w // 4)), np.ones((4, 4)))
        f = (f + np.roll(f, 1, 0) + np.roll(f, -1, 0)) / 3  # soften the 4x4 blocks
        f = (f + np.roll(f, 1, 1) + np.roll(f, -1, 1)) / 3
        return (f - f.mean()) / f.std()

    common = smooth_field()
    return np.stack([shared * common + (1 - shared) * smooth_field() for _ in range(classes)])


def noisy_template_images(
    n: int, seed: int = 0, noise: float = 35.0, flip: float = 0.1, contrast: float = 30.0, classes: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A learnable task that does not saturate: each image is its class's template plus Gaussian pixel noise,
    and a `flip` share of the labels is changed to another class at random. Returns images, labels and the
    predictions of an oracle that knows the templates (nearest template: about Bayes-optimal, as the noise
    is the same for every class); no model can beat the oracle on average, and it scores about
    (1 - flip) * 0.99."""
    templates = 128 + contrast * class_templates(classes, shape=(28, 28))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.clip(np.rint(templates[y] + noise * rng.standard_normal((n, 28, 28))), 0, 255).astype(np.uint8)
    dist = ((x[:, None].astype(np.float32) - templates[None].astype(np.float32)) ** 2).sum(axis=(2, 3))
    flipped = rng.random(n) < flip
    y[flipped] = (y[flipped] + rng.integers(1, classes, int(flipped.sum()))) % classes
    return x, y.astype(np.uint8), dist.argmin(axis=1)


def write_noisy_mnist_like(directory: Path, n_train: int = 2000, n_test: int = 1000, seed: int = 0) -> float:
    """noisy_template_images in the MNIST IDX layout; returns the ceiling: the oracle's test accuracy."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n, s in (("train", n_train, 2 * seed), ("t10k", n_test, 2 * seed + 1)):
        x, y, oracle = noisy_template_images(n, seed=s)
        write_idx(directory / f"{split}-images-idx3-ubyte", x, compress=True)
        write_idx(directory / f"{split}-labels-idx1-ubyte", y, compress=True)
    return float((oracle == y).mean())


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
