"""A learnable synthetic sentiment task, in the layout of the hub's SST-2 / IMDB exports.

The label is which word family (positive or negative cues) appears among filler words: easy to
learn, so a model that fails it is broken, and small enough to train in seconds.

The negation variant is harder and not saturated: one or three cues of either family, each
flipped by a "not" right before it, decide the label by their net sign, and 5% of the labels
are flipped. A model must read word order to pass it, and none can score above 95% on average,
so accuracy lost to pruning shows.
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


def negation_texts(n: int, seed: int = 0, noise: float = 0.05) -> tuple[list[str], np.ndarray]:
    """The harder task: the net sentiment of one or three cues (never a tie), each negated by a
    "not" right before it with probability 0.3; then a `noise` share of labels is flipped, so
    the best possible accuracy is 1 - noise."""
    rng = np.random.default_rng(seed)
    texts, y = [], []
    for _ in range(n):
        units = [[str(w)] for w in rng.choice(FILLER, rng.integers(6, 20))]
        score = 0
        for _ in range(int(rng.choice([1, 3]))):
            positive = bool(rng.integers(0, 2))
            negated = bool(rng.random() < 0.3)
            cue = ["not"] * negated + [str(rng.choice(POSITIVE if positive else NEGATIVE))]
            score += 1 if positive != negated else -1
            units.insert(int(rng.integers(0, len(units) + 1)), cue)  # a cue stays whole
        label = int(score > 0)
        if rng.random() < noise:
            label = 1 - label
        texts.append(" ".join(w for u in units for w in u))
        y.append(label)
    return texts, np.array(y, dtype=np.int64)


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
    directory: Path,
    splits=("train", "test"),
    n_train: int = 800,
    n_test: int = 200,
    fmt: str = "csv",
    seed: int = 0,
    negation: bool = False,
) -> Path:
    import csv

    directory.mkdir(parents=True, exist_ok=True)
    make = negation_texts if negation else sentiment_texts
    for split, n, s in ((splits[0], n_train, seed), (splits[1], n_test, seed + 1)):
        texts, y = make(n, s)
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
