"""The order examples go through the model in: text rows of similar length together.

A batch of texts is cut to its longest row (`Data.prepare`), so a batch that mixes a 128-token row
with 30-token ones costs 128 columns for every row. On the tweets with MiniLM's tokenizer, random
batches of 32 pay for 1.76x the tokens they hold; grouped by length, 1.04x
(benchmarks/results/group_by_length_minilm_tweets.json).

- Evaluation (`by_length`) runs rows shortest first and puts the outputs back in order: the same
  outputs (a model's output does not depend on trailing padding), for less work.
- Training (`length_grouped`, `--group-by-length`) keeps the epoch's shuffle, then sorts each run of
  GROUP batches by length and shuffles the batches of that run, so a batch holds texts of similar
  length and the epoch still visits long and short ones throughout (the scheme of Hugging Face's
  `group_by_length`). It changes which examples share a batch, so it is asked for, never a default.
"""

from __future__ import annotations

import torch

GROUP = 50  # batches sorted together: long enough to find rows of like length, short enough to stay shuffled


def epoch_order(
    n: int, seed: int, epoch: int, lengths: torch.Tensor | None = None, batch: int | None = None
) -> torch.Tensor:
    """The order of an epoch's `n` training examples: a shuffle drawn from (seed, epoch) alone, so a
    resumed run repeats it; with `lengths` (--group-by-length), grouped into batches of `batch`
    texts of like length (`length_grouped`)."""
    shuffle = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=shuffle)
    return perm if lengths is None else length_grouped(perm, lengths, batch, shuffle)


def padded_share(order: torch.Tensor, lengths: torch.Tensor, batch: int) -> float:
    """What batches of `batch` texts in `order` cost: the columns they pay for (each batch cut to
    its longest text) over the tokens the texts hold; 1.0 is no padding at all."""
    paid = sum(int(lengths[b].max()) * len(b) for b in order.split(batch))
    return paid / max(int(lengths[order].sum()), 1)


def by_length(lengths: torch.Tensor) -> torch.Tensor:
    """Row indices, shortest first (stable, so equal lengths keep their order)."""
    return torch.sort(lengths, stable=True).indices


def length_grouped(perm: torch.Tensor, lengths: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """`perm` (an epoch's shuffle) reordered so each run of `batch` examples has like lengths: every
    GROUP*batch examples are sorted by length, cut into batches, and those batches shuffled with
    `generator`. The same examples, each once; a short last batch stays last, so the batches of
    `batch` examples the trainer slices are the grouped ones. A function of its arguments, so a
    resumed epoch repeats it."""
    full = len(perm) - len(perm) % batch
    out = []
    for chunk in perm[:full].split(GROUP * batch):
        batches = chunk[torch.sort(lengths[chunk], stable=True, descending=True).indices].split(batch)
        out += [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat([*out, perm[full:]])
