"""Pretrained weights (`train --weights FILE`) into a freshly built model, before any training.

A file is a state dict in `.pt` / `.pth` (read with `torch.load(weights_only=True)`: no code is
unpickled) or `.safetensors`. A state dict wrapped under 'state_dict' or 'model' (a training
checkpoint) is unwrapped, and a 'module.' prefix (DistributedDataParallel) is stripped.

Every tensor must match the model exactly, with two exceptions that fine-tuning a pretrained
model on other data needs, each recorded in what `load_weights` returns:

- the classifier head (the model's final layer) of another class count, e.g. 1000 ImageNet
  classes into a 10-class model: its tensors are not loaded, the model keeps its freshly
  initialized head;
- the first conv of RGB weights in a model for grayscale input: its kernel is summed over the
  three input channels, which gives a gray image (R = G = B) the response the RGB kernel gives it.

Anything else that differs is a UserError naming the first key that does not match.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from edgeprune.errors import UserError, first_line
from edgeprune.manifest import sha256_file

SUFFIXES = (".pt", ".pth", ".safetensors")
# torch fills a BatchNorm's step counter in when a file predates it; its value does not matter
OPTIONAL_KEYS = ("num_batches_tracked",)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (.pt, .pth or .safetensors), unwrapped and without a 'module.' prefix."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise UserError(
            f"--weights {path} is neither .pt, .pth nor .safetensors; pass a state dict saved with "
            "torch.save(model.state_dict(), 'w.pt') or safetensors.torch.save_file."
        )
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"--weights {path} {what}; pass the weights file (.pt, .pth or .safetensors).")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a truncated zip, a pickle of code, another format ...
            code = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            if code:  # torch.save(model): a pickle of classes, which weights_only never runs
                raise UserError(
                    f"--weights {path} holds pickled Python objects ({code.group(1)}), which edgeprune does not "
                    "unpickle; save model.state_dict() with torch.save instead."
                ) from None
            raise UserError(
                f"--weights {path} is not a torch file edgeprune can read ({type(e).__name__}); it is corrupt or cut "
                "short: fetch it again, or save model.state_dict() with torch.save."
            ) from None
    return _strip_module(_unwrap(state, path))


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(
            f"--weights {path} is a .safetensors file, which needs the safetensors package; "
            "pip install 'edgeprune[weights]'."
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError, OSError ...
        raise UserError(
            f"--weights {path} is not a readable .safetensors file ({first_line(e)}); it is corrupt or cut "
            "short: fetch it again."
        ) from None


def _is_state_dict(obj) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    return all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _unwrap(obj, path: Path) -> dict:
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                return obj[key]
    holds = f"a dict of {', '.join(map(repr, list(obj)[:4]))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise UserError(
        f"--weights {path} holds {holds}, not a state dict (names to tensors, or one under 'state_dict' or "
        "'model'); save model.state_dict() instead."
    )


def _strip_module(state: dict) -> dict:
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def classifier_name(model: nn.Module) -> str | None:
    """The module name of the model's final layer: timm's `get_classifier()`, else the last Linear or
    conv registered (torchvision's fc / classifier.N, squeezenet's final conv, the study's models)."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            head = get()
        except Exception:  # noqa: BLE001 - a user's model may define the name for something else
            head = None
        for name, m in model.named_modules():
            if head is not None and m is head and any(True for _ in m.parameters()):
                return name
    last = None
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            last = name
    return last


def first_conv_name(model: nn.Module) -> str | None:
    """The module name of the first conv registered (the stem, which reads the image's channels)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return name
    return None


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


@torch.no_grad()
def load_weights(model: nn.Module, path: Path, describe: str | None = None) -> dict:
    """Load the weights file `path` into `model` (just built, not yet trained). Returns what was
    done: {path, sha256, head_replaced: [keys], input_adapted: [keys]}; a replaced head or an
    adapted first conv is also a UserWarning (describe_load's sentence). A UserError, before the
    model changes, when the file is missing, unreadable or of another architecture."""
    path = Path(path).resolve()
    state = read_state_dict(path)
    own = model.state_dict()
    what = describe or type(model).__name__
    head = classifier_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head is not None else set()
    conv = first_conv_name(model)
    conv_key = f"{conv}.weight" if conv is not None else None

    def mismatch(why: str) -> UserError:
        return UserError(
            f"--weights {path} is not for {what}: {why}; pass weights saved from the same architecture "
            "(or --model the architecture they were saved from)."
        )

    missing = [k for k in own if k not in state and not k.endswith(OPTIONAL_KEYS)]
    extra = [k for k in state if k not in own]
    if missing and extra:
        raise mismatch(
            f"its keys differ from the model's, first '{extra[0]}' in the file where the model has '{missing[0]}' "
            f"({len(missing)} of the model's {len(own)} tensors are not in the file)"
        )
    if missing:
        raise mismatch(f"the file has no '{missing[0]}' ({len(missing)} of the model's {len(own)} tensors missing)")
    if extra:
        raise mismatch(f"the model has no '{extra[0]}' ({len(extra)} tensors of the file are not in the model)")
    load, head_replaced, adapted = {}, [], []
    for key, have in own.items():
        if key not in state:
            continue
        saved = state[key]
        if saved.shape == have.shape:
            load[key] = saved
        elif key in head_keys and saved.dim() == have.dim() and saved.shape[1:] == have.shape[1:]:
            head_replaced.append(key)  # another class count: the model keeps its fresh head
        elif key == conv_key and _gray_from_rgb(saved, have):
            load[key] = saved.sum(dim=1, keepdim=True)
            adapted.append(key)
        else:
            raise mismatch(f"'{key}' is {_shape(saved)} in the file but {_shape(have)} in the model")
    if head_replaced and len(head_replaced) != len([k for k in head_keys if k in own]):
        # half a head (a bias of the right size with a weight of another) is another architecture
        key = sorted(head_keys & set(own) - set(head_replaced))[0]
        raise mismatch(f"'{key}' fits the model but '{head_replaced[0]}' does not")
    model.load_state_dict(load, strict=False)
    record = {"path": str(path), "sha256": sha256_file(path), "head_replaced": head_replaced, "input_adapted": adapted}
    if head_replaced or adapted:
        warnings.warn(describe_load(record), stacklevel=2)
    return record


def _gray_from_rgb(saved: torch.Tensor, have: torch.Tensor) -> bool:
    """An RGB first-conv kernel [O, 3, ...] for a model of grayscale input [O, 1, ...]."""
    return (
        saved.dim() == have.dim() >= 3
        and saved.shape[1] == 3
        and have.shape[1] == 1
        and saved.shape[0] == have.shape[0]
        and saved.shape[2:] == have.shape[2:]
    )


def describe_load(record: dict) -> str:
    """One sentence for the output: what --weights loaded and what it replaced or adapted."""
    text = f"started from --weights {record['path']} (sha256 {record['sha256'][:12]})"
    if record["head_replaced"]:
        text += (
            f"; its classifier head ({', '.join(record['head_replaced'])}) is for another number of classes, "
            "so the model keeps a freshly initialized head that fits the data's classes"
        )
    if record["input_adapted"]:
        text += f"; {', '.join(record['input_adapted'])} takes RGB, so its kernel is summed over the 3 channels"
        text += " for the data's grayscale images"
    return text + "."
