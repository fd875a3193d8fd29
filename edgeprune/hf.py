"""Pruning inside a Hugging Face `transformers.Trainer`: the Pruner's calls, made by a callback.

    pruner = Pruner(model, (input_ids, attention_mask), epochs=3, steps_per_epoch=len(train_loader),
                    warmup_epochs=0, target_macs=0.5)
    trainer = Trainer(model=model, args=args, train_dataset=..., callbacks=[EdgepruneCallback(pruner)])
    trainer.train()   # heads and FFN neurons pruned and removed in place while it fine-tunes

The Trainer makes its optimizer when training starts, after the pruner: the callback hands it to
the pruner then, so compaction slices its state (Adam/AdamW moments) and re-points its param
groups. Per optimizer step: scores after the backward (`on_pre_optimizer_step`, the gradients of
the whole accumulated step), then `pruner.step()`; at each epoch's end `pruner.end_epoch()`; at
the end `pruner.finalize()`.

`load_best_model_at_end=True` is refused when training starts: the Trainer would load a checkpoint
saved before later pruning steps (wider layers than the model has by then) into the pruned model,
and then call `finalize()` on weights the pruner never saw. The accuracy guard is edgeprune's way to
keep the best model a budget allows.
"""

from __future__ import annotations

from edgeprune.errors import UserError
from edgeprune.prune.pruner import Pruner

try:
    from transformers import TrainerCallback
except ImportError:  # the module imports without transformers; using the callback says what to install
    TrainerCallback = object


class EdgepruneCallback(TrainerCallback):
    """A `transformers.TrainerCallback` that drives `pruner` (an edgeprune Pruner built on the
    Trainer's model, with or without an optimizer) through training."""

    def __init__(self, pruner: Pruner):
        if TrainerCallback is object:
            raise UserError("EdgepruneCallback is a transformers.TrainerCallback; pip install 'edgeprune[hf]'.")
        if not isinstance(pruner, Pruner):
            raise UserError(f"EdgepruneCallback takes an edgeprune Pruner, not {type(pruner).__name__}.")
        self.pruner = pruner

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        """Checks the Trainer trains the pruner's model and hands the pruner the Trainer's optimizer."""
        if getattr(args, "load_best_model_at_end", False):
            raise UserError(
                "EdgepruneCallback cannot be used with load_best_model_at_end=True (the best checkpoint may be "
                "wider than the pruned model); set it to False and guard the fine-tune (Pruner(max_drop=...))."
            )
        if model is not None and model is not self.pruner.model:
            raise UserError("The Trainer trains another model than the Pruner's; build the Pruner on trainer.model.")
        if optimizer is not None:
            self.pruner.use_optimizer(getattr(optimizer, "optimizer", optimizer))  # accelerate wraps it

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        """Accumulates scores from the gradients of the whole (accumulated) step."""
        self.pruner.after_backward()

    def on_step_end(self, args, state, control, **kwargs):
        """Counts the optimizer step; prunes here when the schedule is in steps."""
        self.pruner.step()

    def on_epoch_end(self, args, state, control, **kwargs):
        """Ends the epoch: prunes and compacts there on a pruning epoch (`Pruner.end_epoch`)."""
        self.pruner.end_epoch()

    def on_train_end(self, args, state, control, **kwargs):
        """Removes the units that are still only masked (`Pruner.finalize`)."""
        self.pruner.finalize()
