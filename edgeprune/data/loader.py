"""Turn a dataset into in-memory tensors: train / validation (carved with the seed) / test."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgeprune.data import memory, own, sources
from edgeprune.data.images import channel_stats
from edgeprune.data.registry import DatasetSpec, candidate_dirs, find_local, registry_spec
from edgeprune.data.text import PAD, Vocab
from edgeprune.data.tokenizer import FILE as TOKENIZER_FILE
from edgeprune.data.tokenizer import INPUT_NAMES, MASK, TokenizerFile
from edgeprune.errors import UserError


@dataclass
class Split:
    # uint8 [N, C, H, W] for images, int64 [N, T] for text; with a model's own tokenizer, int64
    # [N, 2, T]: token ids and attention mask (edgeprune.data.tokenizer)
    x: torch.Tensor
    y: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    spec: DatasetSpec
    train: Split
    val: Split
    test: Split
    source: str
    vocab: Optional[Vocab] = None
    tokenizer: Optional[TokenizerFile] = None  # a pretrained model's own tokenizer (replaces `vocab`)
    mean: torch.Tensor = field(default_factory=lambda: torch.zeros(1))
    std: torch.Tensor = field(default_factory=lambda: torch.ones(1))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Model-ready input for one batch: images scaled and normalized; text cut to the batch's
        longest row (--max-len stays the cap), so a short batch costs few LSTM steps."""
        if self.tokenizer is not None:
            return trim_masked(x)
        if self.spec.task == "text":
            return trim_padding(x)
        return (x.float().div_(255.0) - self.mean) / self.std

    def lengths(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """Tokens each text row of `x` uses (padding excluded), int64 [N]; None for images, which
        all have one size. Batches of rows of similar length trim to few columns (`prepare`)."""
        if self.tokenizer is not None:
            return x[:, MASK].sum(-1)
        if self.spec.task == "text":
            return (x != PAD).sum(-1)
        return None

    def input_meta(self) -> dict:
        """What a device needs to feed the model (goes into exports and bundles)."""
        meta = {"task": self.spec.task, "labels": list(self.spec.labels), "dataset": self.spec.name}
        if self.spec.task == "image":
            meta.update(
                input_dtype="float32",
                layout="NCHW",
                input_shape=["batch", *self.spec.image_shape],
                normalization={"scale": 1 / 255, "mean": list(self.spec.mean), "std": list(self.spec.std)},
            )
        elif self.tokenizer is not None:
            tok = self.tokenizer
            meta.update(
                input_dtype="int64",
                layout="NT",
                input_shape=["batch", "seq"],
                normalization=None,
                inputs=list(INPUT_NAMES),  # token ids, then the attention mask
                vocab_size=tok.vocab_size,
                max_len=tok.max_len,
                pad_id=tok.pad_id,
                tokenizer=TOKENIZER_FILE,
                tokenizer_sha256=tok.sha256(),
            )
        else:
            meta.update(
                input_dtype="int64",
                layout="NT",
                input_shape=["batch", "seq"],
                normalization=None,
                vocab_size=len(self.vocab),
                max_len=self.vocab.max_len,
                vocab_sha256=self.vocab.sha256(),
            )
        if self.spec.kind != "registry":
            meta.update(own.input_meta(self.spec))
        return meta


def trim_padding(x: torch.Tensor) -> torch.Tensor:
    """Token ids [N, T] without the trailing columns that are padding in every row (at least one
    column stays, so an all-pad batch is still a valid input)."""
    used = (x != PAD).any(0).nonzero()
    return x[:, : int(used.max()) + 1 if len(used) else 1]


def trim_masked(x: torch.Tensor) -> torch.Tensor:
    """Packed ids and masks [N, 2, T] without the trailing columns that no row attends to (one stays)."""
    used = x[:, MASK].any(0).nonzero()
    return x[..., : int(used.max()) + 1 if len(used) else 1]


def load_data(
    name: str,
    data_dir: Optional[Path] = None,
    seed: int = 0,
    limit: Optional[int] = None,
    val_fraction: float = 0.1,
    vocab_size: int = 20000,
    max_len: int = 256,
    vocab: Optional[Vocab] = None,
    options=None,
    tokenizer: Optional[TokenizerFile] = None,
) -> Data:
    """Load a dataset (a registry name from a local copy or the hub, or your own data at a path or
    hf:owner/name, read with the DataOptions `options`) and split it. `vocab` reuses a saved one;
    `tokenizer` (text) tokenizes with a pretrained model's own tokenizer instead of a vocabulary."""
    spec = registry_spec(name, options)
    if spec is None:
        index = own.resolve(name, options)
        spec = index.spec
        raw = own.read(index, seed=seed, limit=limit)
    else:
        local = find_local(spec, data_dir)
        raw = sources.read_local(spec, local) if local else sources.read_hub(spec, candidate_dirs(spec, data_dir))

    train_x, train_y = raw.train.x, raw.train.y
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    n = len(train_y)
    n_val = int(round(n * val_fraction))
    if n - n_val < 1:
        raise UserError(f"--limit {limit} leaves no training examples after the validation split; raise it.")
    perm = np.random.default_rng(seed).permutation(n)
    tr_idx, va_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    _check_labels(spec, train_y, raw.test.y)

    if spec.task == "text":
        n_texts = n + len(raw.test.y)
        t = tokenizer.max_len if tokenizer else (vocab.max_len if vocab else max_len)
        per = 16 if tokenizer else 8  # ids and attention mask, or ids alone
        memory.check_fits(
            n_texts * t * per,
            f"the token ids of {n_texts:,} texts at --max-len {t} (N*T*{per} bytes as int64)",
            "lower --max-len, or train on a subset with --limit N",
        )
        tr_text = [train_x[i] for i in tr_idx]
        if tokenizer is not None:
            enc = tokenizer.encode
            train = Split(torch.from_numpy(enc(tr_text)), torch.from_numpy(train_y[tr_idx]))
            val = Split(torch.from_numpy(enc([train_x[i] for i in va_idx])), torch.from_numpy(train_y[va_idx]))
            test = Split(torch.from_numpy(enc(list(raw.test.x))), torch.from_numpy(raw.test.y))
            return Data(spec, train, val, test, raw.source, tokenizer=tokenizer)
        vocab = vocab or Vocab.build(tr_text, vocab_size, max_len)
        enc = vocab.encode
        train = Split(torch.from_numpy(enc(tr_text)), torch.from_numpy(train_y[tr_idx]))
        val = Split(torch.from_numpy(enc([train_x[i] for i in va_idx])), torch.from_numpy(train_y[va_idx]))
        test = Split(torch.from_numpy(enc(raw.test.x)), torch.from_numpy(raw.test.y))
        return Data(spec, train, val, test, raw.source, vocab=vocab)

    train = Split(torch.from_numpy(train_x[tr_idx]), torch.from_numpy(train_y[tr_idx]))
    val = Split(torch.from_numpy(train_x[va_idx]), torch.from_numpy(train_y[va_idx]))
    test = Split(torch.from_numpy(np.ascontiguousarray(raw.test.x)), torch.from_numpy(raw.test.y))
    shape = tuple(train.x.shape[1:])
    if shape != spec.image_shape:
        raise UserError(
            f"{raw.source} holds images of shape {shape}, but {spec.name} images are "
            f"{spec.image_shape}; point --data-dir at the right files."
        )
    if spec.kind != "registry":  # your own images: normalized with the training split's statistics
        mean, std = channel_stats(train.x.numpy())
        spec = replace(spec, mean=mean, std=std)
    c = spec.image_shape[0]
    return Data(
        spec,
        train,
        val,
        test,
        raw.source,
        mean=torch.tensor(spec.mean).view(1, c, 1, 1),
        std=torch.tensor(spec.std).view(1, c, 1, 1),
    )


def _check_labels(spec: DatasetSpec, *label_arrays: np.ndarray) -> None:
    for y in label_arrays:
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise UserError(
                f"{spec.name} labels must lie in 0..{spec.num_classes - 1}, found "
                f"{int(y.min())}..{int(y.max())}; check the label column of your files."
            )
