"""A pretrained model's own tokenizer, as one `tokenizer.json` read by the `tokenizers` package.

A run of `--model hf:...` on text saves the model's fast tokenizer (truncation to the run's
maximum length and padding set in the file) into the run directory, and training, export and the
device all tokenize with that one file: the ids cannot drift between them. Torch-free, and free of
`transformers`: a device needs only `pip install tokenizers`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from edgeprune.bench.feeds import IDS, MASK  # the packed layout below: bench (the lower layer) reads it too
from edgeprune.errors import UserError

FILE = "tokenizer.json"
# A text batch for such a model is one int64 array [N, 2, T]: row 0 the token ids, row 1 the
# attention mask. The training loop, the guard and DDP then move one tensor as for any other
# model; the model (edgeprune.models.hf), the exporter and bench (IDS, MASK: defined in
# edgeprune.bench.feeds, which the device runs) split it into its two inputs.
INPUT_NAMES = ("input", "attention_mask")


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError(
            "a Hugging Face text model tokenizes with the tokenizers package, which is not installed; "
            "pip install tokenizers (or 'edgeprune[hf]')."
        ) from None
    return tokenizers


class TokenizerFile:
    """tokenizer.json's tokenizer: `encode` gives the ids and attention mask the model trains on."""

    def __init__(self, text: str):
        tokenizers = _tokenizers()
        try:
            self.tok = tokenizers.Tokenizer.from_str(text)
        except Exception as e:  # noqa: BLE001 - the Rust side raises its own Exception type
            raise UserError(
                f"{FILE} is not a readable tokenizer ({' '.join(str(e).split())[:120]}); restore it from the run."
            ) from None
        self.text = text
        trunc, pad = self.tok.truncation, self.tok.padding
        if not trunc or not pad:
            raise UserError(f"{FILE} sets no truncation or no padding; it was not written by edgeprune train.")
        self.max_len = int(trunc["max_length"])
        self.pad_id = int(pad["pad_id"])

    @classmethod
    def read(cls, path) -> "TokenizerFile":
        from pathlib import Path

        try:
            return cls(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path} does not exist; the run's tokenizer is missing, restore it or re-train.") from None

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size(with_added_tokens=True))

    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def encode(self, texts: list[str], length: int | None = None) -> np.ndarray:
        """int64 [N, 2, length] (default the maximum length): token ids padded with the pad id, and
        the attention mask (1 on tokens, 0 on padding), as the model's own tokenizer makes them."""
        length = self.max_len if length is None else length
        out = np.zeros((len(texts), 2, length), dtype=np.int64)
        out[:, IDS] = self.pad_id
        for start in range(0, len(texts), 4096):  # the Rust side is fast; bounded memory for big sets
            for row, enc in enumerate(self.tok.encode_batch(list(texts[start : start + 4096])), start=start):
                ids = enc.ids[:length]
                out[row, IDS, : len(ids)] = ids
                out[row, MASK, : len(ids)] = enc.attention_mask[:length]
        return out


def configured(backend, max_len: int, pad_id: int, pad_token: str) -> str:
    """The JSON of `backend` (a tokenizers.Tokenizer, the fast tokenizer's) with truncation to
    `max_len` tokens (special tokens included) and padding to the longest text of a batch."""
    tokenizers = _tokenizers()
    tok = tokenizers.Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer stays as it was
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tok.to_str()
