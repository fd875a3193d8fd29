"""Models built from the layers edge users bring: timm's norm+act layers and 'same'-padding convs,
a custom autograd activation, re-parameterizable blocks, and Python torch.fx cannot trace.
Shared by tests/test_trace.py (exactness, Adam, ONNX) and tests/test_ecosystem_models.py (the Pruner).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class SameConv(nn.Conv2d):
    """A user's TF-style 'same' convolution: a Conv2d subclass whose forward pads from the input's
    size with math.ceil (torch.fx cannot trace it) and calls F.conv2d on its own weight."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        pads = []
        for size, k, s in ((iw, kw, self.stride[1]), (ih, kh, self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _Swish(torch.autograd.Function):
    """A memory-saving swish with a hand-written backward, as timm and EfficientNet ports define it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s * (1 + x * (1 - s)))


class _ChannelShuffle(torch.autograd.Function):
    """A custom op that mixes channels: the tracer must freeze what it touches."""

    @staticmethod
    def forward(ctx, x):
        return x.roll(1, dims=1)

    @staticmethod
    def backward(ctx, g):
        return g.roll(-1, dims=1)


class SameSwishNet(nn.Module):
    """timm's pieces and a user's: timm's Conv2dSame and BatchNormAct2d (F.batch_norm on its own
    parameters), a stride-2 SameConv, depthwise, and a custom autograd activation."""

    def __init__(self):
        super().__init__()
        from timm.layers import BatchNormAct2d, Conv2dSame

        self.stem = Conv2dSame(3, 16, 3, stride=2, bias=False)
        self.bn1 = BatchNormAct2d(16, act_layer=nn.Hardswish)
        self.dw = SameConv(16, 16, 5, stride=2, groups=16, bias=False)
        self.bn2 = BatchNormAct2d(16)
        self.pw = SameConv(16, 24, 1)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        x = self.bn1(self.stem(x))
        x = _Swish.apply(self.bn2(self.dw(x)))
        x = _Swish.apply(self.pw(x))
        return self.head(x.mean((2, 3)))


class RepBlockNet(nn.Module):
    """RepVGG-style re-parameterizable blocks from timm (3x3 + 1x1 + identity-BN branches summed)."""

    def __init__(self):
        super().__init__()
        from timm.models.byobnet import RepVggBlock

        self.b1 = RepVggBlock(3, 16, stride=2)
        self.b2 = RepVggBlock(16, 16)
        self.b3 = RepVggBlock(16, 32, stride=2)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.b3(self.b2(self.b1(x))).mean((2, 3)))


class ShapeBranch(nn.Module):
    """Python on sizes that torch.fx cannot trace (a branch on the input's height, as MobileViT
    pads to whole patches): traced by running it, not refused."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        h = self.bn(self.conv1(x))
        if h.shape[-1] % 4 != 0:
            h = F.interpolate(h, size=(math.ceil(h.shape[-2] / 4) * 4, math.ceil(h.shape[-1] / 4) * 4))
        h = F.relu(self.conv2(h)) + h
        return self.fc(h.mean((2, 3)))


class MixNetLike(nn.Module):
    """timm's MixedConv2d (MixNet): the channels split at the sizes in its `splits` list, each piece
    to a conv of its own (1x1 pieces; depthwise 3x3, 5x5, 7x7), the outputs concatenated. A residual
    joins a block's input to its output; the last split (20 into 8, 6, 6) cuts across the first's
    pieces (10, 10). With `same`, that conv is 'same'-padded at stride 2 (Conv2dSame: torch.fx cannot
    trace it, so the model is traced by running it)."""

    def __init__(self, same: bool = False):
        super().__init__()
        from timm.layers import BatchNormAct2d, MixedConv2d

        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn0 = BatchNormAct2d(12)
        self.pw = MixedConv2d(12, 20, [1, 1])
        self.bn1 = BatchNormAct2d(20)
        self.dw = MixedConv2d(20, 20, [3, 5], depthwise=True)
        self.bn2 = BatchNormAct2d(20, apply_act=False)
        self.down = MixedConv2d(20, 20, [3, 5, 7], stride=2, padding="same" if same else "", depthwise=True)
        self.head = nn.Linear(20, 10)

    def forward(self, x):
        x = self.bn1(self.pw(self.bn0(self.stem(x))))
        x = x + self.bn2(self.dw(x))
        return self.head(F.relu(self.down(x)).mean((2, 3)))


class LevitMlp(nn.Module):
    """timm LeViT's LinearNorm (a Linear, then a BatchNorm1d over the tokens flattened into the batch
    and `reshape_as` back to tokens) in a residual MLP over a conv stem's tokens."""

    def __init__(self):
        super().__init__()
        from timm.models.levit import LinearNorm

        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.ln1, self.act, self.ln2 = LinearNorm(16, 32), nn.Hardswish(), LinearNorm(32, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = x + self.ln2(self.act(self.ln1(x)))
        return self.head(x.mean(1))


def timm_mobile():
    import timm

    return timm.create_model("mobilenetv3_small_050", num_classes=10)


class MixedByAutograd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)

    def forward(self, x):
        return self.conv2(_ChannelShuffle.apply(_Swish.apply(self.conv1(x))))


class GhostLike(nn.Module):
    """GhostNet's module: a primary conv, a cheap depthwise conv of it, both concatenated and sliced
    to the output width written in the code (`[:, :16]`, here the whole concatenation)."""

    def __init__(self):
        super().__init__()
        self.primary = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8))
        self.out_chs = 16
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], dim=1)[:, : self.out_chs, :, :]
        return self.head(out.mean((2, 3)))


class TinyBert(nn.Module):
    """A Hugging Face BertForSequenceClassification (random init, tiny config), logits out: its
    decorated forward and slicing by sequence length are what torch.fx cannot trace. Weights drawn
    wider than BERT's 0.02 so that a wrongly kept channel shows in the logits."""

    def __init__(self, attention: str = "sdpa", heads: int = 2):
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        cfg = BertConfig(
            vocab_size=40,
            hidden_size=8 * heads,
            num_hidden_layers=2,
            num_attention_heads=heads,
            intermediate_size=24,
            num_labels=3,
            initializer_range=0.3,
            attn_implementation=attention,
        )
        self.bert = BertForSequenceClassification(cfg)

    def forward(self, ids):
        return self.bert(ids).logits
