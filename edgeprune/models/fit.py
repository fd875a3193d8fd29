"""Any model against the data and against saved weights.

`check_model_fits` runs a model once on inputs shaped like the data's, so that a model built for
other images, other token ids or another number of classes fails with one sentence before training.
`load_resized` loads a pruned (smaller) state dict into a model built from its original config.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.errors import UserError, first_line

# What pruning can shrink: the first two dims of a tensor (output and input channels / features,
# hidden units, vocabulary rows and embedding columns); kernel sizes and the like never change.
PRUNABLE_DIMS = 2


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


@torch.no_grad()
def load_resized(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Load `state_dict` into `model` (built from its original, unpruned config) although pruning
    made some of its tensors smaller: each such tensor of `model` takes the saved shape, then the
    shape attributes of its layer follow (channels, features, groups, hidden size ...). Returns `model`.

    A UserError, before anything changes, when a key is missing or extra or a tensor differs in a
    way pruning never causes (another rank, a larger size, a kernel size)."""
    from edgeprune.prune.surgery import update_shapes

    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    own = model.state_dict()
    name = type(model).__name__

    def mismatch(why: str) -> UserError:
        return UserError(
            f"The saved state dict does not match the model {name} ({why}); was it trained with another --model?"
        )

    missing, extra = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
    if missing or extra:
        what = [f"missing {', '.join(missing[:3])}"] if missing else []
        what += [f"unexpected {', '.join(extra[:3])}"] if extra else []
        raise mismatch(", ".join(what))
    resized = {}
    for key, saved in state_dict.items():
        if not torch.is_tensor(saved):
            raise mismatch(f"{key} is a {type(saved).__name__}, not a tensor")
        have = own[key].shape
        if saved.shape == have:
            continue
        if (
            saved.dim() != len(have)
            or any(s != h for s, h in zip(saved.shape[PRUNABLE_DIMS:], have[PRUNABLE_DIMS:]))
            or any(s > h for s, h in zip(saved.shape, have))
            or key not in tensors
        ):
            raise mismatch(f"{key} is {list(saved.shape)} in the file, {list(have)} in the model")
        resized[key] = saved.shape
    for key, shape in resized.items():
        t = tensors[key]
        t.data = torch.empty(shape, dtype=t.dtype, device=t.device)
        if t.grad is not None:
            t.grad = None
    update_shapes(model, resized)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise mismatch(first_line(e)) from None
    return model
