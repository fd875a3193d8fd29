"""Tokenizing once, with a vocabulary built from the training split. Torch-free."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import numpy as np

TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
PAD, UNK = 0, 1


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower().replace("<br />", " "))


@dataclass
class Vocab:
    tokens: list[str]  # index -> token; 0 is <pad>, 1 is <unk>
    max_len: int

    @classmethod
    def build(cls, texts: Iterable[str], size: int, max_len: int) -> "Vocab":
        counts = Counter(tok for t in texts for tok in tokenize(t))
        # most frequent first; ties broken alphabetically so the vocabulary is reproducible
        common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, size - 2)]
        return cls(["<pad>", "<unk>"] + [tok for tok, _ in common], max_len)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Token ids [N, max_len], truncated and right-padded with 0."""
        index = {t: i for i, t in enumerate(self.tokens)}
        out = np.zeros((len(texts), self.max_len), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [index.get(tok, UNK) for tok in tokenize(text)[: self.max_len]]
            out[row, : len(ids)] = ids
        return out

    def select(self, ids: list[int]) -> "Vocab":
        """The vocabulary whose id i is this one's token ids[i] (a pruned, renumbered vocabulary)."""
        if ids[:2] != [PAD, UNK]:
            raise ValueError("a vocabulary keeps <pad> and <unk> as ids 0 and 1")
        return Vocab([self.tokens[i] for i in ids], self.max_len)

    def to_json(self) -> dict:
        return {
            "format": 1,
            "pad": PAD,
            "unk": UNK,
            "max_len": self.max_len,
            "lowercase": True,
            "token_pattern": TOKEN_RE.pattern,
            "tokens": self.tokens,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "Vocab":
        return cls(list(obj["tokens"]), int(obj["max_len"]))

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.tokens).encode()).hexdigest()
