"""Tiny datasets of "your own" kind, written as a user would have them: an image folder (PNG and
JPEG), CSV / JSONL / Parquet tables. Every set is learnable: the class shows in the data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog", "owl")
WORDS = {"bad": ["awful", "poor", "dull"], "good": ["great", "superb", "lovely"], "meh": ["okay", "fine", "average"]}
FILLER = ["the", "a", "film", "was", "it", "plot", "and", "really", "this"]


def image_array(label: int, size=(32, 32), channels: int = 3, seed: int = 0) -> np.ndarray:
    """H x W (x 3) uint8 noise with a bright band whose row (and colour) tells the class."""
    rng = np.random.default_rng(seed)
    h, w = size
    shape = (h, w, 3) if channels == 3 else (h, w)
    a = rng.integers(0, 60, shape).astype(np.uint8)
    rows = slice(label * h // 3, label * h // 3 + max(1, h // 4))
    if channels == 3:
        a[rows, :, label % 3] = 230
    else:
        a[rows, :] = 230
    return a


def write_image_folder(
    root: Path,
    classes=CLASSES,
    n: int = 10,
    size=(32, 32),
    channels: int = 3,
    formats=("png", "jpg"),
    seed: int = 0,
) -> Path:
    """root/<class>/<i>.png|jpg, alternating formats."""
    from PIL import Image

    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = image_array(ci, size, channels, seed=seed * 100_000 + ci * 1000 + i)
            Image.fromarray(a).save(root / c / f"{i}.{formats[i % len(formats)]}")
    return root


def sentiment_rows(n: int, classes=("bad", "good", "meh"), seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows, the label spelled as a string, classes in turn."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        words = list(rng.choice(FILLER, int(rng.integers(3, 8))))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(WORDS[label])))
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, header: list[str], rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path
