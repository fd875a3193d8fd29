"""The training loop. The pruner plugs in through three hooks: after each backward pass (scores from
the gradients just computed), after each optimizer step (a pruning point of a schedule in steps)
and at the end of each epoch (prune, then compact). With the accuracy guard on (the default of a
run with a budget), each pruning step is validated on the validation split after --guard-recovery
optimizer steps of training, and rolled back when it would then put the model more than
--max-accuracy-drop points under the dense one (the kept steps' costs added up: prune/guard.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from rich.console import Console

from edgeprune import distributed, faults
from edgeprune.bench.metrics import majority_warning
from edgeprune.config import TrainConfig, default_threads, schedule_of
from edgeprune.data.loader import Data, Split
from edgeprune.data.order import by_length, epoch_order
from edgeprune.data.registry import get_spec
from edgeprune.data.text import Vocab
from edgeprune.errors import BudgetWarning, UserError
from edgeprune.metrics import f1_score, loss_fn, majority_share, predict, training_loss
from edgeprune.models import build_model, check_model_fits, default_config, layer_widths
from edgeprune.progress import EpochProgress
from edgeprune.prune import budget as budgets
from edgeprune.prune.bn import recalibrate_batchnorm
from edgeprune.prune.guard import DEFAULT_METRIC
from edgeprune.prune.pruner import Pruner, count_params, guard_line
from edgeprune.run import RunDir, append_jsonl, atomic_write_bytes, atomic_write_json, read_json
from edgeprune.rundir import (
    check_run_dir,
    check_same_data,
    checkpoint_record,
    clear_for_new_run,
    load_checkpoint,
    load_model,
    load_run_data,
    model_record,
    new_run_config,
    restore_history,
    save_torch,
    ship_vocab,
    training_vocab,
)

console = Console()
# what an epoch's record says about pruning: what went, the budget, where it pruned, the guard's steps
PRUNING_KEYS = ("removed", "budget", "pruning_points", "guard", "bn_recalibrated_batches")
BN_BATCHES = 20  # training batches that re-estimate BatchNorm statistics after a pruning step


@torch.no_grad()
def logits_of(model: torch.nn.Module, data: Data, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs for every example of `x`, in eval mode, on the CPU, in the order of `x`
    (texts run shortest first, so each batch trims to few columns: edgeprune.data.order)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lengths = data.lengths(x)
    order = None if lengths is None else by_length(lengths)
    rows = x if order is None else x[order]
    out = [
        model(distributed.to_device(data.prepare(rows[i : i + batch_size]), device)).float().cpu()
        for i in range(0, len(rows), batch_size)
    ]
    model.train(was_training)
    if not out:
        return torch.empty(0)
    out = torch.cat(out)
    if order is None:
        return out
    back = torch.empty_like(out)
    back[order] = out
    return back


def evaluate(model: torch.nn.Module, data: Data, split: Split) -> dict:
    if not len(split):
        return {"loss": None, "accuracy": None, "f1": None, "n": 0}
    logits = logits_of(model, data, split.x)
    pred = predict(logits)
    return {
        "loss": float(loss_fn(logits, split.y)),
        "accuracy": float((pred == split.y).float().mean()),
        "f1": f1_score(pred, split.y, data.spec.num_classes),
        "n": len(split),
    }


def train_run(cfg: TrainConfig, resume: bool = False, quiet: bool = False, restart: bool = False) -> dict:
    """Train (and prune) according to `cfg`, writing everything into the run directory.

    `resume` continues the run there; `restart` discards whatever run is there and starts over (without
    either, an existing run is refused). Started by torchrun, each process trains its shard with
    DistributedDataParallel; rank 0 writes."""
    ctx = distributed.from_env()
    device = distributed.resolve_device(cfg.device, ctx)
    amp = distributed.amp_dtype(device, cfg.amp)
    local_batch = distributed.local_batch_size(cfg.batch_size, ctx.world)
    with distributed.process_group(ctx, device):
        return _train(cfg, resume, restart, quiet or not ctx.is_main, ctx, device, amp, local_batch)


def _train(
    cfg: TrainConfig,
    resume: bool,
    restart: bool,
    quiet: bool,
    ctx: distributed.Dist,
    device: torch.device,
    amp: torch.dtype | None,
    local_batch: int,
) -> dict:
    progress = EpochProgress(console, quiet)  # before the run directory: a bad $EDGEPRUNE_LOG_EVERY touches nothing
    t = _Training(cfg, quiet, ctx, device, amp, local_batch)
    t.open(resume, restart)  # the run directory checked, the data loaded, the model built or resumed
    with progress:
        for epoch in range(t.start, cfg.epochs + 1):
            record = t.train_epoch(epoch, progress)  # the steps, then pruning at the epoch's end
            t.save_epoch(record)  # validation, checkpoint (atomic), history line
    return t.finish()  # final compaction, test metrics, model.pt


class _Training:
    """One run's state: what the loop in `_train` reads as a flow, one method a stage."""

    def __init__(self, cfg, quiet, ctx, device, amp, local_batch):
        self.cfg, self.quiet, self.ctx, self.device, self.local_batch = cfg, quiet, ctx, device, local_batch
        self.run = RunDir(Path(cfg.out))
        # The schedule also times a baseline's learning rate (--finetune-lr) and teacher (--distill),
        # so a dense run can follow the pruned run's recipe; only a pruner prunes.
        self.schedule = schedule_of(cfg)
        # fp16 needs loss scaling to keep small gradients; bf16 has float32's range and does not
        self.scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        self.autocast = (lambda: torch.autocast("cuda", dtype=amp)) if amp else contextlib.nullcontext
        self.start, self.train_seconds = 1, 0.0
        self.history: list[dict] = []  # every epoch's record so far; travels inside the checkpoint
        # Self-distillation (cfg.distill > 0): the dense model's outputs on the training set at the end
        # of the warm-up, taken once before the first pruning; the pruned model then learns from them.
        self.teacher: Optional[torch.Tensor] = None
        self.pruner: Optional[Pruner] = None
        self.latency_table: Optional[str] = None  # the latency budget's table, when there is one
        # --keep-best: the best-validation epoch at the final widths so far ({epoch, val_accuracy,
        # model}, rank 0), carried in the checkpoint so a resumed run keeps it
        self.best: Optional[dict] = None
        self.embeddings_init: Optional[dict] = None  # what --embeddings wrote (a new run only)
        self.weights_init: Optional[dict] = None  # what --weights loaded: {path, sha256, head_replaced, ...}
        self.bn_batches = 0  # batches of BatchNorm re-estimation in the epoch under way (its history line)
        self.run_config: Optional[dict] = None  # config.json's contents (rank 0), also kept in each checkpoint

    # --- opening ---------------------------------------------------------------------------------
    def open(self, resume: bool, restart: bool = False) -> None:
        cfg, ctx, run = self.cfg, self.ctx, self.run
        has_ckpt = distributed.on_main(ctx, lambda: check_run_dir(run, cfg, resume, restart, console))
        torch.set_num_threads(cfg.threads or max(1, default_threads() // ctx.local_world))
        torch.manual_seed(cfg.seed)
        self._load_data(has_ckpt)
        self.spec = {"name": cfg.model, "config": {**default_config(cfg.model, self.meta), **cfg.model_config}}
        model = fresh = build_model(self.spec)
        if getattr(model, "load_info", None) is not None and ctx.is_main:
            # a pretrained hf: model: what it started from, as --weights records it (kept on resume)
            self.weights_init = model.load_info if not has_ckpt else read_json(run.config).get("weights_init")
        check_model_fits(model, self.meta)  # channels and classes: one sentence, before anything is written
        self.baseline_params = count_params(model)
        ckpt = distributed.on_main(ctx, lambda: load_checkpoint(run)) if has_ckpt else None
        if cfg.embeddings and ckpt is None:  # a resumed run's embedding is in its checkpoint
            from edgeprune.models.embeddings import init_embedding

            self.embeddings_init = init_embedding(model, self.data.vocab.tokens, Path(cfg.embeddings))
        if cfg.weights and ckpt is None:  # before any training or pruning; a resumed run's are in its checkpoint
            from edgeprune.models.weights import load_weights

            with warnings.catch_warnings():  # its warning is the run's first line (_say_start) and in config.json
                warnings.simplefilter("ignore", UserWarning)
                self.weights_init = load_weights(model, Path(cfg.weights), describe=cfg.model)
        elif cfg.weights and ctx.is_main:
            self.weights_init = read_json(run.config).get("weights_init")
        if ckpt is not None:
            model = load_model(ckpt["arch"], ckpt["model"])
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        n = len(self.data.train)
        self.steps = (len(distributed.shard(torch.arange(n), ctx)) + self.local_batch - 1) // self.local_batch
        # the schedule knows the run's steps: a run too short for a pruning epoch prunes within epochs
        self.schedule = dataclasses.replace(self.schedule, steps_per_epoch=self.steps)
        if ckpt is not None:
            self._resume(ckpt)
        if cfg.teacher and self.teacher is None:  # before a new run directory: a teacher that cannot serve is refused
            self.teacher = self._teacher_outputs()
        if cfg.prune:  # before a new run directory is written: a table that cannot apply is refused here
            self._make_pruner(ckpt, fresh)
        if ckpt is None and ctx.is_main:
            self._start_run_dir(restart)
            self._say_start()
        self.net = distributed.wrap(self.model, self.device, ctx)

    def _load_data(self, has_ckpt: bool) -> None:
        cfg, ctx = self.cfg, self.ctx
        saved_vocab = distributed.on_main(ctx, lambda: training_vocab(self.run) if has_ckpt else None)
        tokenizer = _model_tokenizer(cfg, self.run, has_ckpt)
        self.data = load_run_data(
            cfg.to_dict(), vocab=Vocab.from_json(saved_vocab) if saved_vocab else None, tokenizer=tokenizer
        )
        self.meta = self.data.input_meta()
        if cfg.keep_best and not len(self.data.val):
            raise UserError(
                f"--keep-best chooses an epoch by validation accuracy, but --val-fraction {cfg.val_fraction} of "
                f"{len(self.data.train)} training examples leaves none for validation; raise --val-fraction or --limit."
            )
        if has_ckpt and ctx.is_main:
            check_same_data(self.run, self.meta)

    def _teacher_outputs(self) -> torch.Tensor:
        """--teacher: the finished run's outputs on every training example, taken once (edgeprune.teacher)."""
        from edgeprune.teacher import teacher_outputs

        return teacher_outputs(Path(self.cfg.teacher), self.data, self.meta, self.model, logits_of, self.device)

    def _resume(self, ckpt: dict) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start, self.train_seconds = ckpt["epoch"] + 1, ckpt["train_seconds"]
        self.teacher = ckpt.get("teacher_logits")
        self.best = ckpt.get("best")
        if ckpt.get("rng") is not None:  # dropout draws continue where they stopped, as if never interrupted
            torch.set_rng_state(ckpt["rng"])
        if self.ctx.is_main:
            self.run_config = read_json(self.run.config)  # _check_run_dir read it (or rebuilt it) just now
            self.history = restore_history(self.run, ckpt, console)
            console.print(f"resuming {self.run.root} at epoch {self.start}/{self.cfg.epochs}")

    def _start_run_dir(self, restart: bool = False) -> None:
        run, data = self.run, self.data
        clear_for_new_run(run, restart)
        if data.vocab is not None:
            atomic_write_json(run.vocab, data.vocab.to_json())
        if data.tokenizer is not None:
            atomic_write_bytes(run.tokenizer, data.tokenizer.text.encode())
        self.run_config = new_run_config(
            self.cfg, self.meta, data.source, self.baseline_params, self.embeddings_init, self.weights_init
        )
        atomic_write_json(run.config, self.run_config)

    def _say_start(self) -> None:
        """What this run does differently from the flags' defaults, and what --weights replaced."""
        if self.quiet:
            return
        lines = [f"{note}." for note in self.cfg.notes]
        if self.weights_init is not None:
            if self.cfg.weights:
                from edgeprune.models.weights import describe_load
            else:
                from edgeprune.models.hf import describe_load

            lines.insert(0, describe_load(self.weights_init))
        for line in lines:
            console.print(f"note: {line}", highlight=False, soft_wrap=True)

    def _latency_model(self, fresh: torch.nn.Module, example: torch.Tensor) -> tuple:
        """(latency model, its table's absolute path) for the dense (fresh) model: a table from the device
        (--latency-table, checked to be for this model, threads and batch), or probes of it timed
        here into RUN/latency/ (reused on --resume)."""
        cfg = self.cfg
        threads = cfg.latency_threads if cfg.latency_threads is not None else (None if cfg.target else 1)
        if cfg.latency_table:
            from edgeprune.latency import load_latency_model
            from edgeprune.latency.probes import model_fingerprint

            fp = model_fingerprint(fresh, example)
            lm = load_latency_model(Path(cfg.latency_table), fingerprint=fp, threads=threads, batch=cfg.latency_batch)
            path = Path(cfg.latency_table)
        else:
            from edgeprune.latency.host import host_latency_model

            if not self.quiet:
                console.print(f"measuring a latency table for this model here ({self.run.root / 'latency'})")
            lm, path = host_latency_model(
                fresh,
                example,
                self.run.root / "latency",
                threads=threads,
                batch=cfg.latency_batch,
                round_to=cfg.round_to,
                min_width=cfg.min_width,
                meta=self.meta,
            )
        if not self.quiet:
            from edgeprune.latency.table import fit_summary

            where = "emulated" if lm.emulated else "measured"
            console.print(
                f"latency model: {path} ({where}, {threads or 'all'} thread(s), batch {cfg.latency_batch}); "
                + fit_summary(lm.report),
                soft_wrap=True,
                highlight=False,
            )
        return lm, str(Path(path).resolve())

    def _make_pruner(self, ckpt: Optional[dict], fresh: torch.nn.Module) -> None:
        """Traced (any model) or declared (the study's two) coupling; the model is compacted in
        place, so `self.model` and `self.optimizer` stay the objects this loop trains."""
        example = self.data.prepare(self.data.train.x[:2].clone())
        lm = None
        if self.cfg.target_latency_ms is not None:
            lm, self.latency_table = distributed.on_main(self.ctx, lambda: self._latency_model(fresh, example))
        reduce = distributed.all_reduce_scores if self.ctx.enabled else None
        guard = self._guard_options()
        with warnings.catch_warnings():
            if ckpt is not None or not self.ctx.is_main:
                # one rank says it; a resumed pruner is built on the pruned model, so it says it
                # below, once its state holds the dense model's costs again
                warnings.simplefilter("ignore", BudgetWarning)
            self.pruner = Pruner(
                self.model,
                example,
                self.optimizer,
                schedule=self.schedule,
                reduce_scores=reduce,
                baseline_params=self.baseline_params,
                latency_model=lm,
                **guard,
            )
        if self.pruner.guard is not None:
            self.pruner.guard.by_default = self.cfg.guard_by_default
            if ckpt is None and self.ctx.is_main and not self.quiet:
                console.print(guard_announcement(self.pruner.guard), soft_wrap=True, highlight=False)
        if self.guard_note and self.ctx.is_main and not self.quiet and ckpt is None:
            console.print(f"[bold yellow]note[/]: {self.guard_note}", soft_wrap=True, highlight=False)
        if ckpt is not None:
            self.pruner.load_state_dict(ckpt["pruner"])
            if self.ctx.is_main:
                self.pruner.warn_budget()
        elif self.pruner.frozen and self.ctx.is_main and not self.quiet:
            console.print(
                "not pruned (the tracer cannot follow them): " + "; ".join(self.pruner.frozen), soft_wrap=True
            )

    def _guard_options(self) -> dict:
        """The Pruner's accuracy-guard arguments: validation `--guard-metric` of the model (rank 0's,
        handed to every rank so all decide alike), BatchNorm re-estimated before each evaluation."""
        cfg = self.cfg
        self.guard_note: Optional[str] = None
        if cfg.max_accuracy_drop is None:
            return {}
        if not len(self.data.val):
            why = f"--val-fraction {cfg.val_fraction} of {len(self.data.train)} training examples leaves no validation"
            if not cfg.guard_by_default:
                raise UserError(f"--max-accuracy-drop compares validation accuracy, but {why}; raise --val-fraction.")
            self.guard_note = f"the accuracy guard is off: {why} examples"
            unused = [f"--guard-recovery {cfg.guard_recovery}"] if cfg.guard_recovery is not None else []
            if cfg.guard_metric != DEFAULT_METRIC:
                unused.append(f"--guard-metric {cfg.guard_metric}")
            if unused:  # said, not dropped in silence
                self.guard_note += f", so {' and '.join(unused)} go{'es' if len(unused) == 1 else ''} unused"
            return {}

        def validation(model):
            return distributed.on_main(self.ctx, lambda: evaluate(model, self.data, self.data.val)[cfg.guard_metric])

        return {
            "max_drop": cfg.max_accuracy_drop,
            "evaluate": validation,
            "val_labels": self.data.val.y,  # the guard tries no step while the model is no better than guessing
            "guard_metric": cfg.guard_metric,
            "guard_recovery": cfg.guard_recovery,
            "recalibrate": lambda model: self._recalibrate_bn(),
        }

    def _recalibrate_bn(self) -> int:
        """Re-estimate BatchNorm statistics on the first batches of this epoch's order (the same on every rank);
        the batches used are counted for the epoch's history (the guard's trials recalibrate through here too)."""
        calib = self.perm[: BN_BATCHES * self.local_batch].split(self.local_batch)
        batches = (distributed.to_device(self.data.prepare(self.data.train.x[i]), self.device) for i in calib)
        used = recalibrate_batchnorm(self.model, batches)
        self.bn_batches += used
        return used

    # --- one epoch -----------------------------------------------------------------------------
    def train_epoch(self, epoch: int, progress: EpochProgress) -> dict:
        cfg, data, pruner = self.cfg, self.data, self.pruner
        phase = self.schedule.phase(epoch) if pruner else "train"
        for group in self.optimizer.param_groups:  # a function of the epoch, so resume-safe
            group["lr"] = cfg.lr * self.schedule.lr_scale(epoch)
        progress.start(f"epoch {epoch}/{cfg.epochs} {phase}", self.steps)
        t0 = time.perf_counter()
        if cfg.distill and not cfg.teacher and self.teacher is None and self.schedule.phase(epoch) != "warmup":
            self.teacher = logits_of(self.model, data, data.train.x)
        self.net.train()
        lengths = data.lengths(data.train.x) if cfg.group_by_length else None  # texts of like length share a batch
        perm = epoch_order(len(data.train), cfg.seed, epoch, lengths, self.local_batch * self.ctx.world)
        self.perm = perm
        mine = distributed.shard(perm, self.ctx)
        sums = [0.0, 0, 0]  # loss x examples, correct, examples
        reports, self.bn_batches = [], 0
        for step in range(self.steps):
            self._step(mine[step * self.local_batch : (step + 1) * self.local_batch], sums)
            if pruner:
                report = pruner.step()  # a pruning point of a schedule in steps (None between points)
                if report is not None:
                    reports.append(report)
                    self._after_pruning(report)
            faults.crash("step", (epoch - 1) * self.steps + step + 1)
            if step % 25 == 0 or step == self.steps - 1:
                stats = f"loss {sums[0] / sums[2]:.4f} acc {sums[1] / sums[2]:.4f}"
                progress.update(step + 1, stats)
        loss_sum, correct, seen = distributed.sum_over_ranks(sums, self.device, self.ctx)
        if pruner:
            report = pruner.end_epoch(epoch)
            if report.at is not None:
                reports.append(report)
                self._after_pruning(report)
        distributed.check_in_sync(self.model, self.ctx)
        seconds = time.perf_counter() - t0
        self.train_seconds += seconds
        progress.end()
        record = {
            "epoch": epoch,
            "phase": phase,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "seconds": seconds,
        }
        if pruner is not None:
            units: dict[str, int] = {}
            for r in reports:
                for k, v in r.removed_units.items():
                    units[k] = units.get(k, 0) + v
            record["removed"] = {"units": units, "connections": sum(r.removed_connections for r in reports)}
            record["budget"] = next((r.budget for r in reversed(reports) if r.budget is not None), None)
            points = [r.at for r in reports if r.at is not None]  # (a report may only judge an earlier step)
            if len(points) > 1 or (points and self.schedule.in_steps):
                record["pruning_points"] = points
        written = sum(len(r.get("guard") or ()) for r in self.history)  # (rank 0's; the others write nothing)
        if pruner is not None and pruner.guard is not None and len(pruner.guard.events) > written:
            # the guard's records since the last epoch's: the reference, steps kept and rolled back
            record["guard"] = pruner.guard.events[written:]
        if self.bn_batches:
            record["bn_recalibrated_batches"] = self.bn_batches
        return record

    def _after_pruning(self, report) -> None:
        """After a pruning point: a fresh DDP wrapper, and BatchNorm statistics for the new widths
        (a guarded step recalibrated before its validation already)."""
        # the pruner resized the model's tensors or moved it through the CPU (either detaches
        # DDP's gradient hooks): wrap it afresh; the old wrapper is freed
        self.net = distributed.wrap(self.model, self.device, self.ctx)
        if report.removed_units and not report.guard:
            self._recalibrate_bn()

    def _step(self, idx: torch.Tensor, sums: list) -> None:
        cfg, data, device, optimizer, scaler = self.cfg, self.data, self.device, self.optimizer, self.scaler
        x = distributed.to_device(data.prepare(data.train.x[idx]), device)
        y = distributed.to_device(data.train.y[idx], device)
        with self.autocast():
            logits = _logits(self.net(x))
            soft = None if self.teacher is None else distributed.to_device(self.teacher[idx], device)
            loss = training_loss(logits, y, soft, cfg.distill, cfg.distill_temperature)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            finite = True
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # the pruner scores true gradients, not scaled ones
            finite = _finite_grads(self.model)  # scaler.step skips this step; so do the scores
        if self.pruner and finite:
            self.pruner.after_backward()
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        with torch.no_grad():
            sums[0] += float(loss) * len(y)
            sums[1] += int((predict(logits) == y).sum())
            sums[2] += len(y)

    def save_epoch(self, partial: dict) -> None:
        """Validation, then the checkpoint and the history line (rank 0); every rank waits for them."""
        if self.ctx.is_main:
            epoch = partial["epoch"]
            val = evaluate(self.model, self.data, self.data.val)
            record = {
                **{k: partial[k] for k in ("epoch", "phase", "train_loss", "train_accuracy")},
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "val_f1": val["f1"],
                "seconds": partial["seconds"],
                **_structure(self.model, self.pruner, self.baseline_params),
                **{k: partial[k] for k in PRUNING_KEYS if k in partial},
            }
            if self.pruner is not None and self.pruner.guard is not None:
                # a step masked but not judged yet: the validation and the counts above are of the model with
                # it masked (it may yet be rolled back); said here and in the epoch line
                record["guard_pending"] = _pending(self.pruner)
            self.history.append(record)
            self._remember_best(epoch, val["accuracy"], val["loss"])
            ckpt = checkpoint_record(
                epoch=epoch,
                train_seconds=self.train_seconds,
                arch=_arch(self.model, self.spec),
                model=_cpu(self.model.state_dict()),
                optimizer=_cpu(self.optimizer.state_dict()),
                pruner=self.pruner.state_dict() if self.pruner else None,
                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                teacher_logits=self.teacher,
                best=self.best,
                rng=torch.get_rng_state(),
                history=self.history,
                run_config=self.run_config,
            )
            faults.crash("before-checkpoint", epoch)
            save_torch(self.run.checkpoint, ckpt, midway=faults.crasher("mid-checkpoint", epoch))
            faults.crash("after-checkpoint", epoch)
            append_jsonl(self.run.history, record, midway=faults.crasher("mid-history", epoch))
            _print_epoch(record, self.cfg, self.quiet)
        distributed.barrier(self.ctx)  # the checkpoint is complete before any rank moves on

    def _remember_best(self, epoch: int, val_accuracy: Optional[float], val_loss: Optional[float]) -> None:
        """--keep-best: a copy of the weights when this epoch is the best so far on validation among
        those whose structure is final (every epoch of a baseline; from the last pruning step on),
        so loading it at the end fits the model and its pruner's masks as they are then. Equal
        accuracies (common on a small validation split) go to the lower validation loss."""
        if not self.cfg.keep_best or val_accuracy is None:
            return
        if self.pruner is not None and (epoch < self.schedule.last_prune_epoch or self.pruner.trial is not None):
            return  # the structure is not final yet (a step under the guard's trial may be rolled back)
        key = (val_accuracy, -val_loss)
        if self.best is None or key > (self.best["val_accuracy"], -self.best["val_loss"]):
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.best = {"epoch": epoch, "val_accuracy": val_accuracy, "val_loss": val_loss, "model": weights}

    def _latency_record(self) -> Optional[dict]:
        lm = self.pruner.latency_model if self.pruner else None
        if lm is None:
            return None
        return {
            "table": self.latency_table,
            "threads": lm.threads,
            "batch": lm.batch,
            "emulated": lm.emulated,
            "held_out_mean_rel_error": lm.report.get("held_out_mean_rel_error"),
            "held_out_max_rel_error": lm.report.get("held_out_max_rel_error"),
        }

    # --- the end ---------------------------------------------------------------------------------
    def finish(self) -> Optional[dict]:
        ctx, model, pruner = self.ctx, self.model, self.pruner
        best = distributed.on_main(ctx, lambda: self.best)  # every rank loads rank 0's choice
        if best is not None:
            model.load_state_dict(best["model"])
        if pruner:
            pruner.finalize()
        distributed.check_in_sync(model, ctx)
        live = pruner.live_params() if pruner else count_params(model)
        metrics = self._write_final(live, best["epoch"] if best is not None else None) if ctx.is_main else None
        return distributed.on_main(ctx, lambda: metrics)  # every rank returns rank 0's metrics

    def _write_final(self, live: int, kept_best: Optional[int]) -> dict:
        """Test metrics, model.pt and metrics.json (rank 0); `kept_best` is the epoch --keep-best
        loaded, None when the weights are the last epoch's."""
        cfg, ctx, model, pruner, run = self.cfg, self.ctx, self.model, self.pruner, self.run
        test = evaluate(model, self.data, self.data.test)
        majority = majority_share(self.data.test.y)
        warning = majority_warning(test["accuracy"], majority, test["n"])
        budget = pruner.budget_status() if pruner else None
        guard = pruner.guard if pruner else None
        noisy = [guard.noise_warning(), guard.spent_warning()] if guard is not None else []
        metrics = {
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "test_f1": test["f1"],
            "f1_average": "macro",
            "test_n": test["n"],
            "test_majority_share": majority,
            "warnings": [
                w for w in (warning, budget and not budget["met"] and budgets.status_line(budget), *noisy) if w
            ],
            "params": live,
            "dense_params": count_params(model),
            "baseline_params": self.baseline_params,
            "compression": self.baseline_params / max(live, 1),
            "train_seconds": self.train_seconds,
            "widths": _widths(model, pruner),
            "macs": pruner.macs() if pruner else None,
            "baseline_macs": pruner.baseline_macs if pruner else None,
            "latency_ms_predicted": pruner.latency_ms() if pruner else None,
            "baseline_latency_ms_predicted": pruner.baseline_latency_ms if pruner else None,
            "target_latency_ms": cfg.target_latency_ms,
            **budgets.to_metrics(budget),
            # what ended pruning (budget, guard or schedule) and the accuracy guard's outcome: its
            # tolerance, whether it is on by default, the dense reference, n, steps kept and rolled back
            "pruning_ended_by": pruner.ended_by if pruner else None,
            "guard": None if guard is None else {k: v for k, v in guard.to_dict().items() if k != "seconds"},
            "guard_seconds": None if guard is None else guard.seconds,  # wall-clock: its validation passes
            "guard_note": getattr(self, "guard_note", None),
            "latency_model": self._latency_record(),
            "epochs": cfg.epochs,
            "kept_epoch": cfg.epochs if kept_best is None else kept_best,  # the epoch whose weights these are
            "kept_by": "last epoch" if kept_best is None else "best validation accuracy at the final widths",
            "weights_init": self.weights_init,
            "notes": list(cfg.notes),
            "device": self.device.type,
            "world_size": ctx.world,
        }
        faults.crash("before-model", cfg.epochs)
        shipped, shipped_meta = ship_vocab(run, model, self.data.vocab, self.meta)
        save_torch(
            run.model,
            model_record(run, _arch(shipped, self.spec), _cpu(shipped.state_dict()), shipped_meta, live),
        )
        atomic_write_json(run.metrics, metrics)
        if not self.quiet:
            done = "[bold green]done[/]" if budget is None or budget["met"] else "[bold yellow]done, budget not met[/]"
            console.print(
                f"{done}: test accuracy {_score(metrics['test_accuracy'])} (n={test['n']:,}), "
                f"macro-F1 {_score(metrics['test_f1'])}, {live:,} live parameters "
                f"({metrics['compression']:.1f}x fewer than {self.baseline_params:,}), {self.train_seconds:.0f}s; "
                + ("" if kept_best is None else f"weights of epoch {kept_best} (best validation); ")
                + f"wrote {run.root}",
                soft_wrap=True,
            )
            if pruner is not None and pruner.ended_by is not None:
                console.print(f"pruning ended by the {pruner.ended_by}", highlight=False)
            if guard is not None:
                share = f" ({guard.seconds / max(self.train_seconds, 1e-9):.0%} of the training time)"
                console.print(guard_line(guard.to_dict()) + share, soft_wrap=True, highlight=False)
            for w in metrics["warnings"]:
                console.print(f"[bold yellow]warning[/]: {w}", soft_wrap=True, highlight=False)
        return metrics


def guard_announcement(guard) -> str:
    """The line that says the accuracy guard is on, and how to turn it off when that is the default."""
    when = f"after {guard.recovery_steps} step(s) of training" if guard.recovery_steps else "at once"
    what = (
        f"accuracy guard: a pruning step that would put the model more than {guard.max_drop:g} point(s) of "
        f"validation {guard.metric} (n={guard.n}) under the dense one (each step's cost against the model just "
        f"before it, judged {when} (--guard-recovery), added to the kept steps' costs) is rolled back and retried "
        "smaller"
    )
    if guard.floor is not None:
        what += f"; no step is tried while validation is within noise of {guard.guess_text()} ({guard.floor:.4f})"
    if guard.by_default:
        return f"{what} (on by default with a budget; --max-accuracy-drop none turns it off)"
    return what


def _score(v) -> str:
    """A score for a printed line; "-" when there is none (no validation split, e.g. a tiny --limit)."""
    return "-" if v is None else f"{v:.4f}"


def _model_tokenizer(cfg: TrainConfig, run: RunDir, has_ckpt: bool):
    """A pretrained hf: text model's own tokenizer: the run's tokenizer.json when resuming (the ids
    the checkpoint learned), else made from the model's files; None for every other model."""
    from edgeprune.models.external import kind_of

    if kind_of(cfg.model) != "hf" or get_spec(cfg.dataset, cfg.data_options).task != "text":
        return None
    from edgeprune.data.tokenizer import TokenizerFile

    if has_ckpt and run.tokenizer.exists():
        return TokenizerFile.read(run.tokenizer)
    from edgeprune.models.hf import tokenizer_json

    return TokenizerFile(tokenizer_json(cfg.model, cfg.max_len)[0])


def _cpu(obj):
    """A (nested) state dict with every tensor on the CPU, loadable anywhere: not a copy where a
    tensor is on the CPU already, so save it before training changes it (or clone it, as --keep-best does)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _finite_grads(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))) if grads else True


def _arch(model, spec: dict) -> dict:
    """What rebuilds the model: the study's models describe themselves at their current widths;
    any other model is its builder and arguments, and its (compacted) tensors give the widths
    (rundir.load_model)."""
    return model.arch() if hasattr(model, "arch") else spec


def _logits(out):
    """The main output of a model that returns auxiliary ones in training (torchvision's
    inception_v3 and googlenet return a named tuple with .logits)."""
    if torch.is_tensor(out):
        return out
    return getattr(out, "logits", None) if hasattr(out, "logits") else out[0]


def _widths(model, pruner: Optional[Pruner]) -> dict[str, int]:
    if pruner is not None:
        return pruner.widths(live=False)  # what the model holds; masked units go at the end
    return model.widths() if hasattr(model, "widths") else layer_widths(model)


def _structure(model, pruner: Optional[Pruner], baseline_params: int) -> dict:
    live = pruner.live_params() if pruner else count_params(model)
    return {
        "params_alive": live,
        "params_dense": count_params(model),
        "compression": baseline_params / max(live, 1),
        "connection_sparsity": pruner.connection_sparsity() if pruner else 0.0,
        "macs": pruner.macs() if pruner else None,
        "latency_ms_predicted": pruner.latency_ms() if pruner else None,
        "widths": _widths(model, pruner),
    }


def _pending(pruner: Pruner) -> Optional[dict]:
    """The step under the guard's trial as the epoch ends: {at, judge_at} (None: none is)."""
    t = pruner.trial
    return None if t is None else {"at": t["at"], "judge_at": t["judge_at"]}


def _guard_summary(r: dict) -> str:
    """The epoch's accuracy-guard decisions in a few words, and the step still under trial ("" without any)."""
    events = r.get("guard") or []
    pending = r.get("guard_pending")
    trial = (
        f"step from {pending['at']} under trial (masked in these figures), judged at step {pending['judge_at']}"
        if pending
        else ""
    )
    if not events:
        return f"  guard: {trial}" if trial else ""
    said = []
    for action in ("reference", "kept", "rolled back", "stopped", "passed"):
        mine = [e for e in events if e["action"] == action]
        if not mine:
            continue
        if action == "reference":  # the last: one at chance level is retaken once the model learns
            said.append(f"reference {mine[-1]['value']:.4f}")
        elif action == "stopped":
            said.append("pruning stopped")
        elif action == "passed":  # points that tried no step (deferred, taken up, a retry under trial, guessing)
            whys = {"no better than guessing" if e.get("untrained") else e["why"].split(" (")[0] for e in mine}
            said.append(f"{len(mine)} point(s) passed ({'; '.join(sorted(whys))})")
        else:
            worst = f"worst drop {max(e['drop'] for e in mine):.2f} pts"
            steps = [e["step_drop"] for e in mine if e.get("step_drop") is not None]
            if steps:  # a step's cost against the model just before it, and the sum it would make
                worst = f"worst step cost {max(steps):.2f} pts"
                estimates = [e["estimate"] for e in mine if e.get("estimate") is not None]
                if estimates:
                    worst += f", estimated drop under the dense model {max(estimates):.2f}"
            said.append(f"{len(mine)} {action} ({worst})")
    return "  guard: " + ", ".join(said + ([trial] if trial else []))


def _print_epoch(r: dict, cfg: TrainConfig, quiet: bool) -> None:
    if quiet:
        return
    widths = " ".join(f"{k}={v}" for k, v in r["widths"].items())
    ms = r.get("latency_ms_predicted")
    latency = f"  predicted {ms:.4f} ms" if ms is not None else ""
    console.print(
        f"epoch {r['epoch']:>3}/{cfg.epochs} {r['phase']:<8} loss {r['train_loss']:.4f}  "
        f"val acc {_score(r['val_accuracy'])} macro-F1 {_score(r['val_f1'])}  params {r['params_alive']:,} "
        # the [ is escaped: rich drops [a=1 b=2] as markup
        f"({r['compression']:.1f}x){latency}  \\[{widths}]  {r['seconds']:.1f}s" + _guard_summary(r),
        highlight=False,
        soft_wrap=True,
    )
