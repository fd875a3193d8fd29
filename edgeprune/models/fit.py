"""Any model against the data.

`check_model_fits` runs a model once on inputs shaped like the data's, so that a model built for
other images, other token ids or another number of classes fails with one sentence before training.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.errors import UserError, first_line


def example_batch(meta: dict, batch: int = 2) -> torch.Tensor:
    """Inputs like the training data's: float images [B, C, H, W] or int64 token ids [B, T]."""
    g = torch.Generator().manual_seed(0)  # not the global generator: training's randomness stays as it was
    if meta["task"] == "text":
        vocab = max(2, int(meta.get("vocab_size") or 2))
        return torch.randint(1, vocab, (batch, _seq_len(meta)), generator=g, dtype=torch.int64)
    return torch.randn(batch, *[int(d) for d in meta["input_shape"][1:]], generator=g)


def _seq_len(meta: dict) -> int:
    t = meta["input_shape"][1] if len(meta.get("input_shape") or ()) > 1 else None
    return int(t) if isinstance(t, int) else int(meta.get("max_len") or 16)


def _describe_input(meta: dict, x: torch.Tensor) -> str:
    if meta["task"] == "text":
        return f"int64 token ids of shape {list(x.shape)} (ids 1..{int(meta.get('vocab_size') or 2) - 1})"
    return f"float images of shape {list(x.shape)}"


@torch.no_grad()
def check_model_fits(model: nn.Module, meta: dict) -> None:
    """A UserError unless `model` takes a batch of 2 inputs shaped like the data's (`meta`, as
    Data.input_meta() gives it) and returns logits [2, num_classes] ([2, 1] for two classes: one
    sigmoid logit). Runs in eval mode; every module's mode, every buffer and the global RNG are
    left as they were."""
    name = type(model).__name__
    n = len(meta["labels"])
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = example_batch(meta).to(device)
    modes = {m: m.training for m in model.modules()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    try:
        model.eval()
        with torch.random.fork_rng(devices=[]):
            out = model(x)
    except Exception as e:  # noqa: BLE001 - whatever the model raises, the input is what the user can change
        if meta["task"] == "text":
            fix = "its forward must take int64 token ids [batch, time] with ids below the vocabulary size"
        else:
            fix = (
                f"build it for {x.shape[1]}-channel {x.shape[2]}x{x.shape[3]} images "
                "(--model-kwargs) or convert the data with --channels / --image-size"
            )
        raise UserError(
            f"{name} does not run on {meta['dataset']}'s input, {_describe_input(meta, x)} ({first_line(e)}); {fix}."
        ) from None
    finally:
        for m, training in modes.items():
            m.training = training
        for k, v in model.named_buffers():
            if k in buffers and v.shape == buffers[k].shape:
                v.copy_(buffers[k])
    if not torch.is_tensor(out):
        kind = type(out).__name__
        raise UserError(
            f"{name} returns {'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}, not a tensor of logits [batch, {n}]; "
            "make its forward return the logits alone."
        )
    shape = list(out.shape)
    if shape == [2, n] or (n == 2 and shape == [2, 1]):
        return
    outputs = shape[1] if len(shape) == 2 and shape[0] == 2 else None
    got = f"{outputs} outputs" if outputs is not None else f"output of shape {shape} for a batch of 2"
    binary = " (or 1, a sigmoid logit)" if n == 2 else ""
    raise UserError(
        f"{name} gives {got} but {meta['dataset']} has {n} classes; pass --model-kwargs "
        f"'{{\"num_classes\": {n}}}' or make the factory build a model with {n} outputs{binary}."
    )


def layer_widths(model: nn.Module) -> dict[str, int]:
    """The current width of every conv, linear and recurrent layer by module name (for reports)."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            widths[name] = m.out_features
        elif isinstance(m, nn.RNNBase):
            widths[name] = m.hidden_size
    return widths
