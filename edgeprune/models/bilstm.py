"""The study's text model: Embedding -> bidirectional LSTM (n layers) -> max over time -> Linear.

Each direction is its own nn.LSTM so that pruning can give the two directions different widths
(nn.LSTM(bidirectional=True) forces one hidden size on both). Binary tasks end in one logit read
through a sigmoid, as in the study; more classes end in a softmax.

Padding never reaches the prediction: a row's length is one past its last non-pad token (pad id
0), the backward direction reads each row reversed within its own length, and the max over time
covers valid positions only. So the model gives the same answer at any padding, and the
exported graph takes any sequence length.

With `source_vocab` set, the model carries a `token_map` buffer (original token id -> embedding
row; a removed token -> <unk>), which makes vocabulary rows prunable while the training data
keeps its original ids; `without_token_map` folds it away for shipping.

`dropout` (default 0, the study's model) drops embedding features and the pooled features
before the classifier while training (`--model-kwargs '{"dropout": 0.3}'`): on a few thousand
short texts the 2.8M-parameter default otherwise learns the training set by heart.
`word_dropout` (default 0) reads each real token as <unk> with that probability while training
(never a pad, so lengths stay), which teaches the model to do without any one word.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.errors import UserError
from edgeprune.models.registry import register_model

PAD, UNK = 0, 1  # as edgeprune.data.text lays out every vocabulary


def _bilstm_defaults(meta: dict) -> dict:
    n = len(meta["labels"])
    vocab = int(meta.get("vocab_size") or 20000)
    return {
        "vocab_size": vocab,
        "embed_dim": 128,
        "hidden": [[128, 128]],
        "num_outputs": 1 if n == 2 else n,
        "source_vocab": vocab,
    }


def reverse_index(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the time index that reverses the row within its length (positions past it stay),
    and the mask of valid positions. An all-pad row counts as length 1."""
    pos = torch.ones_like(tokens).cumsum(1)  # 1..T in every row; stays dynamic in an ONNX graph
    lengths = (pos * (tokens != PAD).long()).amax(1, keepdim=True).clamp(min=1)
    pos = pos - 1
    valid = pos < lengths
    return torch.where(valid, lengths - 1 - pos, pos), valid


def _along_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))


@register_model("bilstm", task="text", default_config=_bilstm_defaults)
class BiLSTM(nn.Module):
    def __init__(
        self,
        vocab_size: int = 20000,
        embed_dim: int = 128,
        hidden=((128, 128),),
        num_outputs: int = 1,
        source_vocab: int | None = None,
        dropout: float = 0.0,
        word_dropout: float = 0.0,
    ):
        super().__init__()
        hidden = [list(h) for h in hidden]
        self.config = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden": hidden, "num_outputs": num_outputs}
        if not 0.0 <= float(dropout) < 1.0:
            raise UserError(f"The BiLSTM's dropout must be a fraction in [0, 1), e.g. 0.3, got {dropout}.")
        if dropout:
            self.config["dropout"] = float(dropout)
        if not 0.0 <= float(word_dropout) < 1.0:
            raise UserError(f"The BiLSTM's word_dropout must be a fraction in [0, 1), e.g. 0.1, got {word_dropout}.")
        self.word_dropout = float(word_dropout)
        if word_dropout:
            self.config["word_dropout"] = float(word_dropout)
        self.drop = nn.Dropout(float(dropout))
        if source_vocab is not None:
            self.config["source_vocab"] = int(source_vocab)
            ids = torch.arange(int(source_vocab))
            self.register_buffer("token_map", torch.where(ids < vocab_size, ids, UNK))
        else:
            self.token_map = None
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.layers = nn.ModuleList()
        prev = embed_dim
        for hf, hb in hidden:
            layer = nn.Module()
            layer.fwd = nn.LSTM(prev, hf, batch_first=True)
            layer.bwd = nn.LSTM(prev, hb, batch_first=True)
            self.layers.append(layer)
            prev = hf + hb
        self.classifier = nn.Linear(prev, num_outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        rev, valid = reverse_index(tokens)
        if self.training and self.word_dropout:
            dropped = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens > UNK)
            tokens = tokens.masked_fill(dropped, UNK)
        if self.token_map is not None:
            tokens = self.token_map[tokens]
        x = self.drop(self.embedding(tokens))
        for layer in self.layers:
            f, _ = layer.fwd(x)
            b, _ = layer.bwd(_along_time(x, rev))
            x = torch.cat([f, _along_time(b, rev)], dim=2)
        return self.classifier(self.drop(x.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)))

    def arch(self) -> dict:
        """The description that rebuilds this model at its current widths (pruning shrinks layers in place)."""
        return self.arch_with_widths(self.widths())

    def widths(self) -> dict[str, int]:
        w = {"vocab": self.embedding.num_embeddings} if self.token_map is not None else {}
        w["embed"] = self.embedding.embedding_dim
        for i, layer in enumerate(self.layers):
            w[f"lstm{i}.fwd"] = layer.fwd.hidden_size
            w[f"lstm{i}.bwd"] = layer.bwd.hidden_size
        return w

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        cfg = {**self.config, "hidden": [list(h) for h in self.config["hidden"]]}
        cfg["vocab_size"] = widths.get("vocab", cfg["vocab_size"])
        cfg["embed_dim"] = widths["embed"]
        cfg["hidden"] = [[widths[f"lstm{i}.fwd"], widths[f"lstm{i}.bwd"]] for i in range(len(self.layers))]
        return {"name": self.arch_name, "config": cfg}

    @torch.no_grad()
    def without_token_map(self) -> tuple[BiLSTM, list[int]]:
        """The same model reading embedding rows directly, and for each row the original token id
        it holds (the vocabulary to ship is the original tokens in that order)."""
        if self.token_map is None:
            return self, list(range(self.embedding.num_embeddings))
        m = self.token_map.cpu()
        rows = self.embedding.num_embeddings
        origin = torch.full((rows,), -1, dtype=torch.long)
        ids = torch.arange(len(m))
        own = m != UNK  # every other id (the removed tokens) is read as <unk>
        origin[m[own]] = ids[own]
        origin[UNK] = UNK
        if (origin < 0).any() or len(torch.unique(m[own])) != int(own.sum()):
            raise ValueError("token_map must send each kept token to its own row and leave no row unread")
        cfg = {k: v for k, v in self.arch()["config"].items() if k != "source_vocab"}
        folded = type(self)(**cfg)
        folded.load_state_dict({k: v for k, v in self.state_dict().items() if k != "token_map"})
        folded.train(self.training)
        return folded.to(self.embedding.weight.device), origin.tolist()
