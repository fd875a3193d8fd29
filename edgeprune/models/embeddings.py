"""Start a text model's embedding from word vectors (`edgeprune train --embeddings FILE`).

The file is the GloVe / fastText / word2vec text format: one token per line followed by its
vector, separated by spaces; a first line of two integers (count and width, word2vec's header)
is skipped; `.gz` is read as gzip. Only the rows of the run's vocabulary are read, so a large
file costs one pass, not its size in memory. A vocabulary token found in the file starts from its
vector; the others (and <unk>) keep the model's random start; <pad> stays zero. Nothing else
changes: the embedding trains and is pruned like any other.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch
from torch import nn

from edgeprune.errors import UserError
from edgeprune.manifest import sha256_file


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        yield from f


def read_vectors(path: Path, tokens: list[str]) -> tuple[dict[int, list[float]], int]:
    """{vocabulary id: vector} for the tokens found in the file, and the vectors' width."""
    index = {t: i for i, t in enumerate(tokens)}
    found: dict[int, list[float]] = {}
    width = None
    try:
        for n, line in enumerate(_lines(path), 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's "count width" header
            if len(parts) < 2:
                if line.strip():
                    raise UserError(f"--embeddings {path}: line {n} holds no vector; each line is a token and numbers.")
                continue
            if width is None:
                width = len(parts) - 1
            elif len(parts) - 1 != width:
                raise UserError(
                    f"--embeddings {path}: line {n} has {len(parts) - 1} numbers where the first vector had {width}; "
                    "every vector must have the same width."
                )
            i = index.get(parts[0])
            if i is not None and i not in found:
                try:
                    found[i] = [float(x) for x in parts[1:]]
                except ValueError:
                    raise UserError(
                        f"--embeddings {path}: line {n} has a value that is not a number; "
                        "is it a word-vectors text file (GloVe / word2vec format)?"
                    ) from None
    except (OSError, EOFError, UnicodeError) as e:
        raise UserError(f"--embeddings {path} cannot be read ({e}); pass a word-vectors text file.") from None
    if width is None:
        raise UserError(f"--embeddings {path} holds no vectors; pass a word-vectors text file.")
    return found, width


def init_embedding(model: nn.Module, tokens: list[str], path: Path, pad: int = 0) -> dict:
    """Write the file's vectors into the model's embedding rows of the vocabulary `tokens`; returns
    what was done (recorded in the run's config.json)."""
    path = Path(path)
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == len(tokens)]
    if not tables:
        raise UserError(
            f"--embeddings starts a text model's embedding from word vectors, but this model has no nn.Embedding "
            f"with one row per vocabulary token ({len(tokens):,}); use it with a text model such as bilstm."
        )
    table = tables[0]
    found, width = read_vectors(path, tokens)
    if width != table.embedding_dim:
        raise UserError(
            f"--embeddings {path} holds vectors {width} wide but the model's embedding is {table.embedding_dim} "
            f"wide; pass --model-kwargs '{{\"embed_dim\": {width}}}' or vectors {table.embedding_dim} wide."
        )
    found.pop(pad, None)
    if not found:
        raise UserError(
            f"--embeddings {path}: none of the {len(tokens):,} vocabulary tokens is in the file; "
            "is it for this language, lower-cased like edgeprune's tokens?"
        )
    rows = torch.tensor(sorted(found))
    with torch.no_grad():
        table.weight[rows] = torch.tensor([found[int(i)] for i in rows], dtype=table.weight.dtype)
    return {
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "width": width,
        "tokens_found": len(found),
        "vocabulary": len(tokens),
    }
