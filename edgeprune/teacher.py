"""Distillation from a finished run (`--teacher RUN`): what a pruned fine-tune learns from besides
the labels when it starts from pretrained weights and has no warm-up to distill from.

The teacher is usually the same model fine-tuned dense (`--no-prune`) on the same data. Its
outputs on this run's training examples are taken once, before the first step, and kept in the
checkpoint (as self-distillation's are), so no second model runs during training and `--resume`
stays exact. This module finds the teacher's model file, checks that it reads this run's inputs
and predicts its classes, and says when its training split may hold this run's validation
examples."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeprune.errors import UserError

MODEL_FILE = "model.pt"
# what the teacher must read exactly as this run does (its record's "input" against this run's)
# (max_len and pad_id before the tokenizer's hash, which covers them: the sentence names the difference)
SAME_INPUT = (
    "task", "labels", "input_shape", "layout", "normalization", "inputs", "vocab_sha256", "max_len", "pad_id",
    "tokenizer_sha256",
)  # fmt: skip
# what decides which examples a run trained on: a teacher that differs may have seen this run's validation set
SAME_SPLIT = ("dataset", "limit", "val_fraction", "seed", "data_options")


def teacher_file(path: str, must_exist: bool = True) -> Path:
    """The teacher's model.pt: `path` itself, or the file in a run directory (absolute); UserError
    when it is not there and `must_exist` (a resumed run has the teacher's outputs in its checkpoint
    and need not find the teacher again)."""
    p = Path(path).expanduser().resolve()
    if p.is_dir() or (not p.exists() and p.suffix != ".pt"):
        p = p / MODEL_FILE
    if must_exist and not p.is_file():
        raise UserError(
            f"--teacher {path} has no {MODEL_FILE}; pass a finished run's directory "
            "(train it first, e.g. with --no-prune)."
        )
    return p


def split_note(model_path: Path, config: dict) -> Optional[str]:
    """A sentence when the teacher's run drew its training examples differently from this run (then
    it may have trained on this run's validation examples, and the guard's numbers flatter), else None."""
    from edgeprune.run import read_json

    run_config = model_path.parent / "config.json"
    if not model_path.is_file():  # a resumed run whose teacher has moved: its outputs are in the checkpoint
        return None
    if not run_config.is_file():
        return (
            f"the teacher {model_path} has no config.json beside it, "
            "so whether it saw this run's validation examples is unknown"
        )
    theirs = (read_json(run_config) or {}).get("config") or {}
    differ = [k for k in SAME_SPLIT if theirs.get(k) != config.get(k)]
    if not differ:
        return None
    first = differ[0]
    return (
        f"the teacher trained on another split ({first} {theirs.get(first)!r}, this run {config.get(first)!r}), "
        "so it may have seen this run's validation examples and the validation scores may flatter"
    )


def load_teacher(model_path: Path, meta: dict):
    """The teacher's model in eval mode, checked to read this run's inputs (`meta`); UserError naming
    the first difference otherwise."""
    from edgeprune.rundir import load_run_model

    model, record = load_run_model(model_path)
    theirs = record.get("input") or {}
    for key in SAME_INPUT:
        if theirs.get(key) != meta.get(key):
            raise UserError(
                f"the teacher {model_path} reads other inputs than this run ({key} {theirs.get(key)!r} there, "
                f"{meta.get(key)!r} here); distill from a run of the same model family on the same data."
            )
    return model


def teacher_outputs(path: Path, data, meta: dict, width: int, logits_of, device=None):
    """The teacher's logits on every training example of `data`, on the CPU (`logits_of` is the training
    loop's batched eval pass, run on `device`), checked to have the student's `width` outputs per example."""
    model_path = teacher_file(str(path))
    model = load_teacher(model_path, meta)
    if device is not None:
        model = model.to(device)
    probe = logits_of(model, data, data.train.x[:2])
    theirs = probe.shape[-1] if probe.ndim == 2 else tuple(probe.shape[1:])
    if theirs != width:
        raise UserError(
            f"the teacher {model_path} gives {theirs} outputs per example and this run's model {width}; "
            "distill from a run of the same model family on the same data."
        )
    return logits_of(model, data, data.train.x)
