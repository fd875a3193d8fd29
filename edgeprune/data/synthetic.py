"""A learnable synthetic sentiment task, in the layout of the hub's SST-2 / IMDB exports.

The label is which word family (positive or negative cues) appears among filler words: easy to
learn, so a model that fails it is broken, and small enough to train in seconds.
"""

from __future__ import annotations

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
