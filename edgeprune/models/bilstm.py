"""The study's text model: Embedding -> bidirectional LSTM (n layers) -> max over time -> Linear.

Each direction is its own nn.LSTM so that pruning can give the two directions different widths
(nn.LSTM(bidirectional=True) forces one hidden size on both). Binary tasks end in one logit read
through a sigmoid, as in the study; more classes end in a softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.models.registry import register_model


def _bilstm_defaults(meta: dict) -> dict:
    n = len(meta["labels"])
    return {
        "vocab_size": int(meta.get("vocab_size") or 20000),
        "embed_dim": 128,
        "hidden": [[128, 128]],
        "num_outputs": 1 if n == 2 else n,
    }


@register_model("bilstm", task="text", default_config=_bilstm_defaults)
class BiLSTM(nn.Module):
    def __init__(self, vocab_size: int = 20000, embed_dim: int = 128, hidden=((128, 128),), num_outputs: int = 1):
        super().__init__()
        hidden = [list(h) for h in hidden]
        self.config = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden": hidden, "num_outputs": num_outputs}
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
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
        x = self.embedding(tokens)
        for layer in self.layers:
            f, _ = layer.fwd(x)
            b, _ = layer.bwd(torch.flip(x, dims=[1]))
            x = torch.cat([f, torch.flip(b, dims=[1])], dim=2)
        return self.classifier(x.amax(dim=1))

    def arch(self) -> dict:
        return {"name": self.arch_name, "config": {**self.config, "hidden": [list(h) for h in self.config["hidden"]]}}

    def widths(self) -> dict[str, int]:
        w = {"embed": self.embedding.embedding_dim}
        for i, layer in enumerate(self.layers):
            w[f"lstm{i}.fwd"] = layer.fwd.hidden_size
            w[f"lstm{i}.bwd"] = layer.bwd.hidden_size
        return w

    def arch_with_widths(self, widths: dict[str, int]) -> dict:
        cfg = self.arch()["config"]
        cfg["embed_dim"] = widths["embed"]
        cfg["hidden"] = [[widths[f"lstm{i}.fwd"], widths[f"lstm{i}.bwd"]] for i in range(len(self.layers))]
        return {"name": self.arch_name, "config": cfg}
