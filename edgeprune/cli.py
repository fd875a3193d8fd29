"""The command line: options in, stage functions called. No logic of its own beyond parsing.

Heavy imports (torch, onnx) happen inside the commands so `edgeprune bench` works with the
runtime-only install.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from edgeprune.errors import BudgetWarning, GuardWarning, UserError, check_finite, os_error
from edgeprune.prune.guard import DEFAULT_MAX_DROP, DEFAULT_METRIC, DEFAULT_RECOVERY
from edgeprune.prune.schedule import PruneSchedule

# click's exception bases, wherever this typer takes click from (its own copy since typer 0.22)
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _finite(callback):
    """A parameter callback that refuses NaN and infinity (edgeprune.errors.check_finite), then runs
    the parameter's own callback, if it had one."""

    def check(ctx, param, value):
        for v in value if isinstance(value, (list, tuple)) else (value,):
            try:
                check_finite(param.opts[0] if param.opts else param.name, v)
            except UserError as e:
                raise _UsageError(str(e), ctx) from None
        return callback(ctx, param, value) if callback else value

    return check


def _finite_floats(group) -> None:
    """Every option and argument of every command gets the finite check (it looks at float values only):
    one rule, applied here once, so a new float option cannot forget it."""
    for command in group.commands.values():
        for param in command.params:
            if not getattr(param, "_finite", False):
                param.callback, param._finite = _finite(param.callback), True


class _OneLineUsageErrors(TyperGroup):
    """Click's usage errors (unknown flag, bad value, missing option) as one line naming the fix,
    like a UserError, instead of a usage block and a box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        _finite_floats(self)
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickException as e:
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                message = " ".join(e.format_message().split())
                message += "" if message.endswith((".", "?")) else "."
                ctx = getattr(e, "ctx", None)
                if ctx is not None:
                    message += f" See '{ctx.command_path} --help'."
                err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Prune neural networks while they train, export them small, measure them on edge CPUs.",
)
err = Console(stderr=True)


# What Ctrl-C leaves behind, per command (writes are atomic everywhere, so never a half-written file).
INTERRUPTED = {
    "train": "completed work was saved; re-run with --resume to continue",
    "experiment": "finished stages were saved; run the same command again to continue",
    "bench": "the worker processes were stopped",
}


def _print_error(e: UserError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)


def friendly(fn):
    """Turn a UserError into one clear sentence and a non-zero exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", BudgetWarning)  # each run's, even when two say the same
                warnings.simplefilter("always", GuardWarning)
                warnings.showwarning = _show_budget_warnings(warnings.showwarning)
                return fn(*args, **kwargs)
        except UserError as e:
            _print_error(e)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            # the machine refused (permission, read-only, full disk, name too long): one sentence too;
            # writes are atomic, so what was saved before is unchanged. Any other OSError is a bug.
            user_error = os_error(e)
            if user_error is None:
                raise
            _print_error(user_error)
            raise typer.Exit(user_error.exit_code) from None
        except KeyboardInterrupt:
            err.print(f"[yellow]interrupted[/]: {INTERRUPTED.get(fn.__name__, 'nothing half-written was kept')}.")
            raise typer.Exit(130) from None

    return wrapper


def _show_budget_warnings(show):
    """A budget the run cannot meet as one line on stderr, like an error (other warnings as Python shows them)."""

    def showwarning(message, category, *args, **kwargs):
        if issubclass(category, (BudgetWarning, GuardWarning)):
            err.print(f"[bold yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            show(message, category, *args, **kwargs)

    return showwarning


# The accuracy guard (edgeprune.prune.guard); shared by train and experiment.
MAX_ACCURACY_DROP = typer.Option(
    None,
    "--max-accuracy-drop",
    help="Roll back a pruning step that costs more than P points of validation accuracy against the dense "
    f"model (default with a budget: {DEFAULT_MAX_DROP}; none turns the guard off).",
)
GUARD_METRIC = typer.Option(DEFAULT_METRIC, "--guard-metric", help="What the guard compares: accuracy or f1 (macro).")
GUARD_RECOVERY = typer.Option(
    DEFAULT_RECOVERY,
    "--guard-recovery",
    help="Optimizer steps of training before the guard judges a pruning step (a rolled-back step discards them); "
    "auto: a quarter of the steps between pruning points; 0 judges at once.",
)

DATASET_HELP = (
    "mnist, fashion-mnist, cifar10, imdb or sst2; or your own: an image folder (one sub-folder per class), "
    "a .csv/.parquet/.jsonl file or a directory of train.*/test.* files, or hf:owner/name[:config]."
)
# The model and the pruned run's budget; shared by train and experiment.
MODEL = typer.Option(
    None,
    "--model",
    "-m",
    help="cnn, bilstm, resnet20, resnet56, torchvision:NAME, timm:NAME, hf:DIR_OR_ID (a pretrained Hugging Face "
    "classifier) or path/to/file.py:factory (default: the dataset's).",
)
WEIGHTS = typer.Option(
    None,
    "--weights",
    help="Start from this state dict (.pt, .pth or .safetensors; never downloaded); a classifier head for "
    "other classes is replaced, and the warm-up defaults to none.",
)
MODEL_KWARGS = typer.Option(
    None,
    "--model-kwargs",
    help="""JSON object of the model's options, over its defaults, e.g. '{"width": 32}'.""",
)
TARGET_PARAMS = typer.Option(None, "--target-params", help="Keep at most this fraction of the baseline's parameters.")
TARGET_MACS = typer.Option(None, "--target-macs", help="Keep at most this fraction of the baseline's MACs per example.")
TARGET_LATENCY_MS = typer.Option(
    None,
    "--target-latency-ms",
    help="Prune until the predicted latency (onnxruntime, --latency-threads, --latency-batch) is at most this.",
)
LATENCY_TABLE = typer.Option(
    None,
    "--latency-table",
    help="A latency table measured on the device (edgeprune bench --latency-probes); default: measured here.",
)
EMBEDDINGS = typer.Option(
    None,
    "--embeddings",
    help="Text: word vectors (GloVe / word2vec text format, .gz too) the embedding starts from; "
    "tokens not in the file keep a random start.",
)
# How your own data is read; shared by datasets, train and experiment (and recorded in the run).
IMAGE_SIZE = typer.Option(
    None, "--image-size", help="Your images: resize to N or HxW (default: their own size, when all are equal)."
)
CHANNELS = typer.Option(
    None, "--channels", help="Your images: 1 (grayscale) or 3 (RGB) (default: 1 when every image is grayscale)."
)
TEXT_COLUMN = typer.Option(None, "--text-column", help="Your table: the text column (default text, else sentence).")
LABEL_COLUMN = typer.Option(None, "--label-column", help="Your table: the label column (default label).")
IMAGE_COLUMN = typer.Option(
    None, "--image-column", help="Your table of images: the column of image paths (relative to the table file)."
)
SPLIT = typer.Option(
    None,
    "--split",
    help="Your data: TRAIN,TEST sub-folders, files or hub splits (default train and test, validation or val).",
)
TEST_FRACTION = typer.Option(
    None, "--test-fraction", help="Your data without a test split: share of each class carved as test (default 0.2)."
)


def _data_options(**flags) -> dict:
    from edgeprune.data.options import from_flags

    return from_flags(**flags).to_dict()


@app.command()
@friendly
def datasets(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Directory holding local copies."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", "-d", help="Describe this one (classes, counts, where found): " + DATASET_HELP
    ),
    image_size: Optional[str] = IMAGE_SIZE,
    channels: Optional[int] = CHANNELS,
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    image_column: Optional[str] = IMAGE_COLUMN,
    split: Optional[str] = SPLIT,
    test_fraction: Optional[float] = TEST_FRACTION,
):
    """List the known datasets, their task and classes, and where each is found (or describe one)."""
    from rich.table import Table

    from edgeprune.data.registry import check_data_dir

    check_data_dir(data_dir)

    if dataset is not None:
        from edgeprune.data.describe import describe

        options = _data_options(
            image_size=image_size,
            channels=channels,
            text_column=text_column,
            label_column=label_column,
            image_column=image_column,
            split=split,
            test_fraction=test_fraction,
        )
        d = describe(dataset, options, data_dir)
        console = Console()
        console.print(f"[bold]{d['name']}[/]: {d['task']}, {d['num_classes']} classes, found at {d['found']}")
        for key in ("label_order", "test", "columns", "reading", "memory"):
            if d.get(key):
                console.print(f"  {key.replace('_', ' ')}: {d[key]}", highlight=False, soft_wrap=True)
        if d.get("counts"):
            table = Table(title=f"classes of {d['name']}")
            for col in ("index", "label", "train", "test"):
                table.add_column(col, justify="right" if col != "label" else "left")
            for row in d["counts"]:
                table.add_row(str(row["index"]), row["label"], str(row["train"]), str(row["test"]))
            totals = [str(sum(r[k] for r in d["counts"])) for k in ("train", "test")]
            table.add_row("", "all", *totals)
            console.print(table)
        return

    from edgeprune.data.registry import describe_all

    table = Table(title="edgeprune datasets", caption="your own data: edgeprune datasets --dataset PATH|hf:owner/name")
    for col in ("name", "task", "classes", "found"):
        table.add_column(col)
    for row in describe_all(data_dir):
        table.add_row(row["name"], row["task"], str(row["num_classes"]), row["found"])
    Console().print(table)


@app.command()
@friendly
def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help=DATASET_HELP),
    model: Optional[str] = MODEL,
    model_kwargs: Optional[str] = MODEL_KWARGS,
    weights: Optional[Path] = WEIGHTS,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: CNN 50, BiLSTM 25, hf: 3."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: CNN 64, BiLSTM 32, hf: 32."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 1e-3; 5e-5 for hf:)."),
    seed: int = typer.Option(0, "--seed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N training examples."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local copies (else $EDGEPRUNE_DATA)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<dataset>-<model>)."),
    no_prune: bool = typer.Option(False, "--no-prune", help="Train the baseline: no pruning."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    restart: bool = typer.Option(
        False, "--restart", help="Discard the run already in --out (checkpoint, model, history) and start over."
    ),
    threshold: float = typer.Option(
        PruneSchedule.threshold, "--threshold", help="Normalized-score threshold for pruning."
    ),
    warmup_epochs: Optional[int] = typer.Option(
        None, "--warmup-epochs", help="Epochs before the first pruning (default: a tenth; none with --weights)."
    ),
    prune_until: float = typer.Option(
        PruneSchedule.prune_until, "--prune-until", help="Fraction of epochs after which the structure is frozen."
    ),
    target_params: Optional[float] = TARGET_PARAMS,
    target_macs: Optional[float] = TARGET_MACS,
    target_latency_ms: Optional[float] = TARGET_LATENCY_MS,
    latency_table: Optional[Path] = LATENCY_TABLE,
    latency_threads: Optional[int] = typer.Option(
        None, "--latency-threads", help="onnxruntime threads the latency budget is for (default 1, or --target's)."
    ),
    latency_batch: int = typer.Option(1, "--latency-batch", help="Batch size the latency budget is for."),
    target: Optional[str] = typer.Option(
        None, "--target", help="Device preset rpi4, rpi5 or x86: the latency budget's threads."
    ),
    round_to: int = typer.Option(
        PruneSchedule.round_to, "--round-to", help="Keep widths at multiples of this (1 = off)."
    ),
    min_width: int = typer.Option(PruneSchedule.min_width, "--min-width", help="No layer is pruned below this width."),
    prune_connections: bool = typer.Option(
        PruneSchedule.prune_connections,
        "--prune-connections/--no-prune-connections",
        help="Also mask single weights under the threshold.",
    ),
    progressive: bool = typer.Option(
        PruneSchedule.progressive,
        "--progressive/--masks-until-end",
        help="Compact after every pruning step (else hold masks and compact once at the end).",
    ),
    prune_every: Optional[int] = typer.Option(
        None,
        "--prune-every",
        help="Prune every N optimizer steps (default: at epoch ends; runs too short for that prune at 10 points "
        "spread over the pruning window).",
    ),
    max_accuracy_drop: Optional[str] = MAX_ACCURACY_DROP,
    guard_metric: str = GUARD_METRIC,
    guard_recovery: str = GUARD_RECOVERY,
    finetune_lr: Optional[str] = typer.Option(
        None,
        "--finetune-lr",
        help="constant (default) or cosine: decay the rate over the fine-tuning epochs (a baseline: the same epochs).",
    ),
    distill: Optional[float] = typer.Option(
        None,
        "--distill",
        help="Weight in [0, 1] of distillation: from --teacher, else from the model at the end of the warm-up "
        "(default 0 = off; 0.5 with --teacher).",
    ),
    distill_temperature: Optional[float] = typer.Option(
        None, "--distill-temperature", help="Softening temperature of distillation (default 4)."
    ),
    teacher: Optional[Path] = typer.Option(
        None,
        "--teacher",
        help="Distill from a finished run (its directory), e.g. the same model fine-tuned dense with --no-prune; "
        "weight --distill (default 0.5), no warm-up needed.",
    ),
    preset: Optional[str] = typer.Option(
        None,
        "--preset",
        help="compact (the default: a budget of 10%% of the parameters, distillation, cosine fine-tuning) "
        "or study (the study's exact setting: the threshold alone).",
    ),
    vocab_size: Optional[int] = typer.Option(
        None, "--vocab-size", help="Text: vocabulary size [default: 20000; an hf: model brings its own]."
    ),
    max_len: int = typer.Option(256, "--max-len", help="Text: tokens kept per example."),
    embeddings: Optional[Path] = EMBEDDINGS,
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of train held out for validation."),
    keep_best: bool = typer.Option(
        False,
        "--keep-best/--keep-last",
        help="Finish with the epoch of best validation accuracy among those at the final widths "
        "(after the last pruning step), not the last epoch.",
    ),
    group_by_length: bool = typer.Option(
        False,
        "--group-by-length",
        help="Text: batch texts of similar length together, so batches carry less padding and train faster "
        "(the epoch is still shuffled; which texts share a batch changes).",
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="torch CPU threads (default: all cores, shared by the processes on a machine)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps (auto: cuda, then mps, then cpu)."),
    amp: bool = typer.Option(
        False, "--amp/--no-amp", help="Automatic mixed precision on CUDA (bf16, or fp16 with loss scaling)."
    ),
    image_size: Optional[str] = IMAGE_SIZE,
    channels: Optional[int] = CHANNELS,
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    image_column: Optional[str] = IMAGE_COLUMN,
    split: Optional[str] = SPLIT,
    test_fraction: Optional[float] = TEST_FRACTION,
):
    """Train a model, pruning redundant neurons and connections as it trains (unless --no-prune).

    Under torchrun (torchrun --nproc_per_node N -m edgeprune train ...) every process trains a shard
    with DistributedDataParallel; --batch-size is the global batch."""
    from edgeprune.config import resolve_train_config
    from edgeprune.models import parse_model_kwargs
    from edgeprune.train import train_run

    cfg = resolve_train_config(
        dataset=dataset,
        model=model,
        model_config=parse_model_kwargs(model_kwargs),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        limit=limit,
        data_dir=data_dir,
        out=out,
        prune=not no_prune,
        threshold=threshold,
        warmup_epochs=warmup_epochs,
        prune_until=prune_until,
        target_params=target_params,
        target_macs=target_macs,
        target_latency_ms=target_latency_ms,
        latency_table=str(latency_table) if latency_table else None,
        latency_threads=latency_threads,
        latency_batch=latency_batch,
        target=target,
        round_to=round_to,
        min_width=min_width,
        prune_connections=prune_connections,
        progressive=progressive,
        prune_every=prune_every,
        max_accuracy_drop=max_accuracy_drop,
        guard_metric=guard_metric,
        guard_recovery=guard_recovery,
        finetune_lr=finetune_lr,
        distill=distill,
        distill_temperature=distill_temperature,
        teacher=str(teacher) if teacher else None,
        preset=preset,
        vocab_size=vocab_size,
        max_len=max_len,
        embeddings=str(embeddings) if embeddings else None,
        weights=str(weights) if weights else None,
        val_fraction=val_fraction,
        keep_best=keep_best,
        group_by_length=group_by_length,
        threads=threads,
        device=device,
        amp=amp,
        data_options=_data_options(
            image_size=image_size,
            channels=channels,
            text_column=text_column,
            label_column=label_column,
            image_column=image_column,
            split=split,
            test_fraction=test_fraction,
        ),
    )
    train_run(cfg, resume=resume, restart=restart)


@app.command()
@friendly
def bench(
    paths: Optional[list[Path]] = typer.Argument(
        None, metavar="MODEL_OR_BUNDLE...", help="Bundle directories and/or .onnx files.", show_default=False
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="onnxruntime intra-op threads (default: the --target's, else all usable cores)."
    ),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated, e.g. 1,8,64."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs per batch size before timing."),
    runs: Optional[int] = typer.Option(None, "--runs", help="Timed runs per round (default 100)."),
    seconds: Optional[float] = typer.Option(
        None, "--seconds", help="Instead of --runs: timed seconds per batch size, split over the rounds."
    ),
    rounds: int = typer.Option(5, "--rounds", help="Interleaved rounds: A B C, A B C, ..."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON to this file."),
    target: Optional[str] = typer.Option(None, "--target", help="Device preset: rpi4, rpi5 or x86 (sets threads)."),
    arena: bool = typer.Option(True, "--arena/--no-arena", help="onnxruntime enable_cpu_mem_arena."),
    mem_pattern: bool = typer.Option(True, "--mem-pattern/--no-mem-pattern", help="onnxruntime enable_mem_pattern."),
    label: Optional[str] = typer.Option(
        None, "--label", help="Machine name in RUN/bench/<label>-<model>.json (default $EDGEPRUNE_DEVICE or hostname)."
    ),
    seq_len: Optional[int] = typer.Option(
        None, "--seq-len", help="Text models: time inputs of this many tokens (eval rows cut or padded to it)."
    ),
    latency_probes: Optional[Path] = typer.Option(
        None,
        "--latency-probes",
        help="Instead of models: time this directory of latency probes (edgeprune probes) into the "
        "latency table written to --json, at one --batch.",
    ),
    timeout: float = typer.Option(
        600.0,
        "--timeout",
        help="Seconds a worker may take to load its model, time one round or evaluate; then it is stopped "
        "and its row fails.",
    ),
    runtime: Optional[str] = typer.Option(
        None,
        "--runtime",
        help="Runtimes to time, comma-separated: onnxruntime, openvino, ncnn, or all (default: what each "
        "bundle lists; onnxruntime for .onnx files). One not installed is a skipped row.",
    ),
    max_acc_drop: float = typer.Option(
        1.0, "--max-acc-drop", help="Accuracy points a variant may lose and still be marked the one to ship."
    ),
):
    """Measure latency, memory, accuracy and size of ONNX models on onnxruntime, OpenVINO or ncnn (no torch).

    With --latency-probes DIR: measure a latency table for pruning to a latency budget instead."""
    from edgeprune.bench import make_settings, run

    if latency_probes is not None and paths:
        raise UserError("give either models to benchmark or --latency-probes DIR, not both.")
    if latency_probes is None and not paths:
        raise UserError(
            "Missing argument 'MODEL_OR_BUNDLE...': give .onnx files or bundle directories to benchmark "
            "(or --latency-probes DIR to measure a latency table). See 'edgeprune bench --help'."
        )

    with warnings.catch_warnings(record=True) as caught:  # said as one line each, not as Python warnings
        warnings.simplefilter("always")
        settings = make_settings(
            threads=threads,
            batch=batch,
            warmup=warmup,
            runs=runs,
            seconds=seconds,
            rounds=rounds,
            target=target,
            arena=arena,
            mem_pattern=mem_pattern,
            label=label,
            seq_len=seq_len,
            timeout=timeout,
            runtime=runtime,
            max_acc_drop=max_acc_drop,
        )
    for w in caught:
        err.print(f"[bold yellow]warning[/]: {escape(str(w.message))}", highlight=False, soft_wrap=True)
    if latency_probes is not None:
        from edgeprune.latency.table import run as run_probes

        code = run_probes(latency_probes, settings, json_out)
    else:
        code = run(paths or [], settings, json_out)
    if code:
        raise typer.Exit(code)


@app.command()
@friendly
def probes(
    run_dir: Path = typer.Argument(
        ..., help="Run directory (its config.json: the dataset's input and the model).", show_default=False
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Probe directory (default RUN/latency/probes)."),
    n: Optional[int] = typer.Option(
        None,
        "--n",
        help="Number of probes, a quarter held out to measure the fit's error [default: enough for a cost per "
        "layer group, at least 32].",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampled widths."),
    min_width: int = typer.Option(
        PruneSchedule.min_width, "--min-width", help="No layer below this width (as train's --min-width)."
    ),
    round_to: int = typer.Option(
        PruneSchedule.round_to, "--round-to", help="Widths at multiples of this (as train's --round-to)."
    ),
):
    """Write latency probes of a run's model: ONNX files of its architecture at sampled widths.

    Measure them where the model will run: edgeprune bench --latency-probes DIR --json TABLE."""
    from edgeprune.latency.probes import run_probes

    with err.status("exporting probes") as spinner:
        manifest, where = run_probes(
            run_dir, out, n=n, seed=seed, min_width=min_width, round_to=round_to, progress=spinner.update
        )
    err.print(
        f"wrote {len(manifest['probes'])} probes of {manifest['arch']} (fingerprint {manifest['fingerprint'][:12]}) "
        f"to {where}; measure them with: edgeprune bench --latency-probes {where} --threads N --batch B "
        "--json latency.json",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@friendly
def latency(
    table: Path = typer.Argument(
        ..., help="Latency table written by edgeprune bench --latency-probes.", show_default=False
    ),
    probes_dir: Optional[Path] = typer.Option(
        None, "--probes", help="Check the table was measured for the model of these probes."
    ),
    fingerprint: Optional[str] = typer.Option(None, "--fingerprint", help="Check the table's model fingerprint."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Check it was measured with this many threads."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Check it was measured at this batch size."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="Check it was measured on this runtime."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the table with this fit to this file."),
):
    """Fit a latency table (numpy only), show its held-out error, check it fits a model and settings."""
    from edgeprune.latency.model import LatencyModel, check_table, read_table
    from edgeprune.latency.table import fit_summary, read_probes

    data = read_table(table)
    if probes_dir is not None:
        fingerprint = fingerprint or read_probes(probes_dir).get("fingerprint")
    if runtime is not None:
        from edgeprune.bench.runtimes import parse as parse_runtimes

        names = parse_runtimes(runtime)
        if len(names) != 1:
            raise UserError(f"give one --runtime to check the table against, not {','.join(names)}.")
        runtime = names[0]
    check_table(data, fingerprint, threads, batch, name=str(table), runtime=runtime)
    data["fit"] = LatencyModel.fit(data, name=str(table)).report
    console = Console()
    where = data.get("machine") or {}
    console.print(
        f"{table}: {data.get('arch')} (fingerprint {data['fingerprint'][:12]}) on {where.get('label')} "
        f"({where.get('cpu_model')}), {data.get('runtime') or 'onnxruntime'}, {data['threads']} threads, "
        f"batch {data['batch']}" + (" [bold red]EMULATED[/]: not device timings" if data.get("emulated") else ""),
        highlight=False,
        soft_wrap=True,
    )
    console.print(fit_summary(data["fit"]), highlight=False, soft_wrap=True)
    if json_out is not None:
        from edgeprune.run import atomic_write_json

        atomic_write_json(json_out, data)
        err.print(f"wrote {json_out}", highlight=False)


@app.command()
@friendly
def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by edgeprune train.", show_default=False),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    quantize: str = typer.Option(
        "auto", "--quantize", help="none, static, dynamic or auto (measure and keep the fastest within --max-acc-drop)."
    ),
    per_channel: Optional[bool] = typer.Option(
        None, "--per-channel/--no-per-channel", help="Per-channel INT8 weights (default: the --target's, else on)."
    ),
    simplifier: str = typer.Option(
        "onnxsim", "--simplifier", help="onnxsim, onnxslim or none (onnxsim falls back to onnxslim)."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset."),
    max_acc_drop: float = typer.Option(
        1.0, "--max-acc-drop", help="Accuracy points an INT8 model may lose against float."
    ),
    target: Optional[str] = typer.Option(
        None, "--target", help="Device preset rpi4, rpi5 or x86: picks the quantization recipe."
    ),
    calib: int = typer.Option(256, "--calib", help="Training samples for static calibration."),
    eval_limit: Optional[int] = typer.Option(
        None, "--eval-limit", help="At most N test examples for accuracy and eval.npz (default: the whole test split)."
    ),
    eval_n: Optional[int] = typer.Option(None, "--eval-n", hidden=True),  # the former name of --eval-limit
    tar: bool = typer.Option(False, "--tar", help="Also write RUN/bundle.tar.gz."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local dataset copies (default: the run's)."),
    runtimes: str = typer.Option(
        "onnxruntime",
        "--runtimes",
        help="Also make variants for openvino and/or ncnn (comma-separated, or all), each checked for parity; "
        "the bundle records the fastest within --max-acc-drop, measured here.",
    ),
):
    """Export a run to ONNX, simplify, quantize to INT8, check each step, and write the device bundle."""
    from edgeprune.export.pipeline import export_run
    from edgeprune.export.table import render

    with err.status("exporting"):
        summary = export_run(
            run_dir,
            format=format,
            quantize=quantize,
            per_channel=per_channel,
            simplifier=simplifier,
            opset=opset,
            max_acc_drop=max_acc_drop,
            target=target,
            calib=calib,
            eval_limit=eval_limit if eval_limit is not None else eval_n,
            tar=tar,
            data_dir=str(data_dir) if data_dir else None,
            runtimes=runtimes,
        )
    console = Console()
    Console(width=max(console.width, 110)).print(render(summary))  # the table needs ~110 columns


@app.command()
@friendly
def report(
    runs: list[Path] = typer.Argument(
        ...,
        metavar="RUN...",
        help="Run directories (the one trained with --no-prune is the baseline).",
        show_default=False,
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Directory for report.md/.html/.json and the figures (default: the first run)."
    ),
):
    """Compare runs, their exported variants and every machine they were benchmarked on."""
    from edgeprune.report import render, write_report

    result = write_report(runs, out)
    Console(width=max(Console().width, 140)).print(render(result))  # the table needs ~140 columns
    err.print(f"wrote {result['out_dir']}/report.md, report.html, report.json", highlight=False)


@app.command()
@friendly
def experiment(
    dataset: str = typer.Option(..., "--dataset", "-d", help=DATASET_HELP),
    model: Optional[str] = MODEL,
    model_kwargs: Optional[str] = MODEL_KWARGS,
    weights: Optional[Path] = WEIGHTS,
    target_params: Optional[float] = TARGET_PARAMS,
    target_macs: Optional[float] = TARGET_MACS,
    target_latency_ms: Optional[float] = TARGET_LATENCY_MS,
    latency_table: Optional[Path] = LATENCY_TABLE,
    max_accuracy_drop: Optional[str] = MAX_ACCURACY_DROP,
    guard_metric: str = GUARD_METRIC,
    guard_recovery: str = GUARD_RECOVERY,
    embeddings: Optional[Path] = EMBEDDINGS,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of each training run (default: the model's)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on the first N training examples."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Experiment directory (default runs/experiment-<dataset>)."
    ),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local dataset copies (else $EDGEPRUNE_DATA)."),
    preset: str = typer.Option("compact", "--preset", help="Pruning preset of the pruned run: 'compact' or 'study'."),
    quantize: str = typer.Option("auto", "--quantize", help="none, static, dynamic or auto (see edgeprune export)."),
    target: Optional[str] = typer.Option(
        None, "--target", help="Device preset rpi4, rpi5 or x86: quantization recipe and bench threads."
    ),
    bench_runs: Optional[int] = typer.Option(None, "--bench-runs", help="Timed runs per bench round (default 100)."),
    image_size: Optional[str] = IMAGE_SIZE,
    channels: Optional[int] = CHANNELS,
    text_column: Optional[str] = TEXT_COLUMN,
    label_column: Optional[str] = LABEL_COLUMN,
    image_column: Optional[str] = IMAGE_COLUMN,
    split: Optional[str] = SPLIT,
    test_fraction: Optional[float] = TEST_FRACTION,
):
    """The whole study in one command: baseline and pruned runs, exported, quantized, benchmarked, reported.

    Any model (--model) on any data; the pruned run's budget in parameters, MACs or milliseconds.
    Finished stages are skipped and an interrupted training resumes, so re-running continues.
    """
    from edgeprune.experiment import ExperimentOptions, run_experiment
    from edgeprune.models import parse_model_kwargs

    run_experiment(
        ExperimentOptions(
            dataset=dataset,
            model=model,
            model_kwargs=parse_model_kwargs(model_kwargs) or {},
            weights=weights,
            target_params=target_params,
            target_macs=target_macs,
            target_latency_ms=target_latency_ms,
            latency_table=latency_table,
            max_accuracy_drop=max_accuracy_drop,
            guard_metric=guard_metric,
            guard_recovery=guard_recovery,
            embeddings=embeddings,
            epochs=epochs,
            limit=limit,
            out=out,
            data_dir=data_dir,
            preset=preset,
            quantize=quantize,
            target=target,
            bench_runs=bench_runs,
            data_options=_data_options(
                image_size=image_size,
                channels=channels,
                text_column=text_column,
                label_column=label_column,
                image_column=image_column,
                split=split,
                test_fraction=test_fraction,
            ),
        )
    )


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="edgeprune")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
