"""Distillation from a finished run (`--teacher RUN`): what a pruned fine-tune learns from besides
the labels when it starts from pretrained weights and has no warm-up to distill from.

The teacher is usually the same model fine-tuned dense (`--no-prune`) on the same data. Its
outputs on this run's training examples are taken once, before the first step, and kept in the
checkpoint (as self-distillation's are), so no second model runs during training and `--resume`
stays exact. This module loads the teacher's model file (found by config.teacher_file), checks
that it reads this run's inputs and predicts its classes, and runs it."""

from __future__ import annotations

from pathlib import Path

from edgeprune.config import teacher_file
from edgeprune.errors import UserError

# what the teacher must read exactly as this run does (its record's "input" against this run's)
# (max_len and pad_id before the tokenizer's hash, which covers them: the sentence names the difference)
SAME_INPUT = (
    "task", "labels", "input_shape", "layout", "normalization", "inputs", "vocab_sha256", "max_len", "pad_id",
    "tokenizer_sha256",
)  # fmt: skip


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


def teacher_outputs(path: Path, data, meta: dict, student, logits_of, device=None):
    """The teacher's logits on every training example of `data`, on the CPU (`logits_of` is the training
    loop's batched eval pass, run on `device`), checked to give as many outputs per example as `student`."""
    model_path = teacher_file(str(path))
    model = load_teacher(model_path, meta)
    if device is not None:
        model = model.to(device)
    probe = data.train.x[:2]
    width, theirs = (logits_of(m, data, probe).shape[1:] for m in (student, model))
    if theirs != width:
        raise UserError(
            f"the teacher {model_path} gives {'x'.join(map(str, theirs))} outputs per example and this run's model "
            f"{'x'.join(map(str, width))}; distill from a run of the same model family on the same data."
        )
    return logits_of(model, data, data.train.x)
