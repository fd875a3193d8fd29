"""The resolved training configuration: the study's defaults plus the user's flags, validated."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edgeprune.data.options import coerce
from edgeprune.data.registry import check_data_dir, get_spec
from edgeprune.errors import ArgumentError, UserError, check_finite, unknown_choice
from edgeprune.models.external import canonical_name, slug
from edgeprune.models.registry import check_fits
from edgeprune.prune.guard import DEFAULT_MAX_DROP, DEFAULT_METRIC, check_metric, parse_max_drop, parse_recovery
from edgeprune.prune.schedule import PruneSchedule, default_warmup

HF_PREFIX = "hf:"
HF_DEFAULTS = {"epochs": 3, "batch_size": 32}  # a fine-tune of a pretrained transformer
HF_LR = 5e-5
GUARD_FLAGS = {"max_drop": "--max-accuracy-drop"}  # the guard's arguments whose flag is not --name

# The study's defaults, per model.
MODEL_DEFAULTS = {"cnn": {"epochs": 50, "batch_size": 64}, "bilstm": {"epochs": 25, "batch_size": 32}}
# Any other model (resnet20, torchvision:NAME, file.py:factory) starts from its task's study model's;
# a pretrained hf: model from a fine-tune's (HF_DEFAULTS).
TASK_DEFAULTS = {"image": MODEL_DEFAULTS["cnn"], "text": MODEL_DEFAULTS["bilstm"]}

# Documented pruning presets (README, "Pruning"). `experiment` uses "compact".
PRESETS = {
    "study": {},  # the study's setting: the threshold alone decides
    # ramp (cubic) to at most 10% of the baseline's parameters; from the first pruning on, learn half
    # from the labels and half from the dense model's own predictions at the end of the warm-up
    # (self-distillation); fine-tune with a cosine-decayed rate
    "compact": {"target_params": 0.1, "finetune_lr": "cosine", "distill": 0.5},
}


@dataclass
class TrainConfig:
    dataset: str
    model: str
    epochs: int
    batch_size: int
    lr: float = 1e-3
    seed: int = 0
    limit: Optional[int] = None
    data_dir: Optional[str] = None
    out: str = "runs/run"
    prune: bool = True
    # the pruning schedule's defaults are PruneSchedule's (one place for each)
    threshold: float = PruneSchedule.threshold
    warmup_epochs: int = 1
    prune_until: float = PruneSchedule.prune_until
    target_params: Optional[float] = None
    target_macs: Optional[float] = None
    target_latency_ms: Optional[float] = None
    latency_table: Optional[str] = None  # a table measured on the device (else measured here)
    latency_threads: Optional[int] = None  # onnxruntime threads of the latency model (default 1)
    latency_batch: int = 1
    target: Optional[str] = None  # device preset (edgeprune.targets): the latency model's threads
    round_to: int = PruneSchedule.round_to
    min_width: int = PruneSchedule.min_width
    prune_connections: bool = PruneSchedule.prune_connections
    progressive: bool = PruneSchedule.progressive
    finetune_lr: str = PruneSchedule.finetune_lr
    prune_every: Optional[int] = None  # prune every N optimizer steps (default: epoch ends, or steps in short runs)
    # The accuracy guard (edgeprune.prune.guard): points of validation `guard_metric` a pruning step may
    # cost against the dense model; None: off. On by default (DEFAULT_MAX_DROP) for a run with a budget.
    max_accuracy_drop: Optional[float] = None
    guard_metric: str = DEFAULT_METRIC
    guard_recovery: Optional[int] = None  # optimizer steps of training before a step is judged; None: auto
    guard_by_default: bool = False  # the guard is on because it is the default: said in the output and JSON
    distill: float = 0.0  # weight of the self-distillation loss (0 = off); see edgeprune.train
    distill_temperature: float = 4.0
    teacher: Optional[str] = None  # a finished run's model.pt to distill from (edgeprune.teacher)
    preset: Optional[str] = None
    vocab_size: int = 20000
    max_len: int = 256
    embeddings: Optional[str] = None  # word vectors the text model's embedding starts from
    weights: Optional[str] = None  # a state dict the model starts from (edgeprune.models.weights)
    val_fraction: float = 0.1
    keep_best: bool = False  # finish with the best-validation epoch at the final widths, not the last
    group_by_length: bool = False  # text: batches of texts of like length (edgeprune.data.order)
    threads: Optional[int] = None
    device: str = "auto"  # auto, cpu, cuda or mps (see edgeprune.distributed)
    amp: bool = False  # automatic mixed precision, CUDA only
    model_config: dict = field(default_factory=dict)  # overrides of the model's defaults (--model-kwargs)
    data_options: dict = field(default_factory=dict)  # how your own data is read (edgeprune.data.options)
    # defaults this configuration changed from what the flags' help says, in words (said at the start)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What must match for --resume to continue this run (not where files live)."""
        d = self.to_dict()
        for k in ("out", "data_dir", "threads", "device", "amp", "latency_table", "embeddings", "notes"):
            d.pop(k)
        # whether it distils from a finished run (not where that run lives: a resume reads the checkpoint's outputs)
        d["teacher"] = d["teacher"] is not None
        return d


def resolve_train_config(
    dataset: str,
    model: Optional[str] = None,
    epochs: Optional[int] = None,
    batch_size: Optional[int] = None,
    out: Optional[Path] = None,
    data_dir: Optional[Path] = None,
    warmup_epochs: Optional[int] = None,
    preset: Optional[str] = None,
    data_options=None,
    **kw,
) -> TrainConfig:
    check_data_dir(data_dir)
    for name, value in kw.items():  # the CLI checks its flags; this is the same rule for API callers
        check_finite(f"--{name.replace('_', '-')}", value)
    data_options = coerce(data_options).to_dict()  # canonical, so --resume compares like with like
    spec = get_spec(dataset, data_options)
    model = canonical_name(model or spec.default_model)  # a factory file's path made absolute
    check_fits(model, spec.task, spec.name)
    pretrained = model.startswith(HF_PREFIX)  # a Hugging Face model: fine-tuned from its weights
    defaults = HF_DEFAULTS if pretrained else MODEL_DEFAULTS.get(model, TASK_DEFAULTS[spec.task])
    epochs = defaults["epochs"] if epochs is None else epochs
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}.")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}.")
    notes = []
    if kw.get("lr") is None:  # the CLI passes None when --lr is not given
        kw["lr"] = HF_LR if pretrained else TrainConfig.lr
        if pretrained:
            notes.append(f"a pretrained hf: model is fine-tuned, so --lr defaults to {HF_LR:g} (--lr sets it)")
    if kw["lr"] <= 0:
        raise UserError(f"--lr must be positive, got {kw['lr']}.")
    if kw.get("limit") is not None and kw["limit"] < 1:
        raise UserError(f"--limit must be at least 1, got {kw['limit']}.")
    if not 0 <= kw.get("val_fraction", TrainConfig.val_fraction) < 1:
        raise UserError(f"--val-fraction must lie in [0, 1), got {kw['val_fraction']}.")
    if kw.get("keep_best") and kw.get("val_fraction", TrainConfig.val_fraction) == 0:
        raise UserError("--keep-best chooses an epoch by validation accuracy; set --val-fraction above 0.")
    if kw.get("group_by_length") and spec.task != "text":
        raise UserError(
            f"--group-by-length batches texts of like length, and {spec.name} holds images (all one size); drop it."
        )
    if kw.get("embeddings") is not None:
        if spec.task != "text":
            raise UserError(f"--embeddings starts a text model's embedding; {spec.name} is not a text dataset.")
        if not Path(kw["embeddings"]).is_file():
            raise UserError(f"--embeddings {kw['embeddings']} is not a file; pass a word-vectors text file.")
        kw["embeddings"] = str(Path(kw["embeddings"]).resolve())
    if kw.get("threads") is not None and kw["threads"] < 1:
        raise UserError(f"--threads must be at least 1, got {kw['threads']}.")
    for name in ("vocab_size", "max_len"):
        if kw.get(name) is not None and kw[name] < 3:
            raise UserError(f"--{name.replace('_', '-')} must be at least 3, got {kw[name]}.")
    explicit_distill = kw.get("distill") is not None
    prune = kw.get("prune", True)
    guard_flag = kw.pop("max_accuracy_drop", None)
    if preset is None and prune:
        # what a user who typed `train` wants is a smaller model: the compact preset (its budget,
        # with the threshold still applied); `--preset study` is the study's threshold-only setting.
        # An explicit budget of another kind replaces the preset's parameter budget.
        preset = "compact"
    if preset is not None:
        if preset not in PRESETS:
            raise unknown_choice("preset", preset, PRESETS)
        for k, v in PRESETS[preset].items() if prune else ():  # a preset configures pruning only
            if k == "target_params" and (kw.get("target_macs") or kw.get("target_latency_ms")) is not None:
                continue
            if kw.get(k) is None:
                kw[k] = v
    kw["max_accuracy_drop"], kw["guard_by_default"] = _guard(guard_flag, prune, kw)
    kw["guard_recovery"] = _recovery(kw.get("guard_recovery"), kw["max_accuracy_drop"])
    if kw.get("guard_metric") not in (None, DEFAULT_METRIC) and kw["max_accuracy_drop"] is None:
        raise UserError(
            f"--guard-metric {kw['guard_metric']} says what the accuracy guard compares, and this run has no guard "
            "(--max-accuracy-drop none, --no-prune, no budget or --val-fraction 0); leave it out."
        )
    if pretrained and kw.get("vocab_size") is not None:
        raise UserError(
            "--vocab-size sizes edgeprune's own vocabulary, and an hf: model tokenizes with its own; drop --vocab-size."
        )
    if pretrained and kw.get("weights") is not None:
        raise UserError("--weights sets a model's tensors, and an hf: model loads its own; pass one of them.")
    if pretrained and spec.task == "text":
        _hf_max_len(model, kw, notes)
    if kw.get("weights") is not None:
        if kw.get("embeddings") is not None:
            raise UserError(
                "--weights sets every tensor of the model, its embedding too, so --embeddings would be lost; "
                "pass one of them."
            )
        # the file is read when a new run starts (a resumed run has the weights in its checkpoint)
        kw["weights"] = str(Path(kw["weights"]).expanduser().resolve())
    if warmup_epochs is None:
        warmup_epochs = default_warmup(epochs)
        if (kw.get("weights") is not None or pretrained) and warmup_epochs > 0:
            # pretrained weights are the warm-up: pruning scores them from the first epoch on
            start = "pretrained hf: weights" if pretrained else "--weights"
            notes.append(
                f"starting from {start}, the run has no warm-up (the default would be {warmup_epochs} "
                f"epoch{'s' if warmup_epochs > 1 else ''}); pass --warmup-epochs N to warm up"
            )
            warmup_epochs = 0
    distill_before = kw.get("distill")
    _check_distill(kw, warmup_epochs, explicit_distill)
    if kw.get("teacher") is not None:
        notes.append(
            f"distilling from the teacher {kw['teacher']} with weight {kw['distill']:g} and temperature "
            f"{kw.get('distill_temperature') or TrainConfig.distill_temperature:g} (--distill, --distill-temperature)"
        )
    if distill_before and not kw.get("distill"):
        notes.append(f"with no warm-up there is no model to distill from, so the {preset} preset's distillation is off")
    if out is None:
        out = Path("runs") / f"{spec.name}-{slug(model)}{'' if prune else '-baseline'}"
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file; pass a directory for the run.")
    cfg = TrainConfig(
        dataset=spec.id,
        data_options=data_options,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        out=str(out),
        data_dir=str(data_dir) if data_dir else None,
        warmup_epochs=warmup_epochs,
        preset=preset,
        notes=notes,
        **{k: v for k, v in kw.items() if v is not None or k in ("target_params", "target_macs", "target_latency_ms")},
    )
    schedule_of(cfg)  # validates the schedule's flags (a baseline uses its timing too)
    _check_latency(cfg)
    if cfg.teacher is not None:
        note = split_note(Path(cfg.teacher), cfg.to_dict())
        if note:
            cfg.notes.append(note)
    return cfg


def _hf_max_len(model: str, kw: dict, notes: list) -> None:
    """The model's own tokenizer truncates: --max-len above what the model reads is lowered, and said."""
    from edgeprune.data.tokenizer import TokenizerFile
    from edgeprune.models.hf import tokenizer_json

    text, note = tokenizer_json(model, kw.get("max_len") or TrainConfig.max_len)
    if note:
        kw["max_len"] = TokenizerFile(text).max_len
        notes.append(note)


def _guard(flag, prune: bool, kw: dict) -> tuple[Optional[float], bool]:
    """(--max-accuracy-drop in points or None, whether it is the default): a run that prunes to a
    budget is guarded by default; `none` turns the guard off; the study's threshold-only setting
    (--preset study) has no budget and no default guard."""
    try:
        points = parse_max_drop(flag)
        check_metric(kw.get("guard_metric") or DEFAULT_METRIC)
    except ArgumentError as e:
        raise e.in_flags(GUARD_FLAGS) from None
    has_validation = kw.get("val_fraction", TrainConfig.val_fraction) > 0
    if flag is None:
        budget = any(kw.get(k) is not None for k in ("target_params", "target_macs", "target_latency_ms"))
        on = prune and budget and has_validation
        return (DEFAULT_MAX_DROP, True) if on else (None, False)
    if points is not None and not prune:
        raise UserError("--max-accuracy-drop guards pruning, and a --no-prune run prunes nothing; leave it out.")
    if points is not None and not has_validation:
        raise UserError(
            "--max-accuracy-drop compares validation accuracy; set --val-fraction above 0 "
            "(or pass --max-accuracy-drop none)."
        )
    return points, False


def _recovery(flag, max_drop: Optional[float]) -> Optional[int]:
    """--guard-recovery as optimizer steps (None: auto, the Pruner's rule); refused when the guard is off."""
    try:
        steps = parse_recovery(flag)
    except ArgumentError as e:
        raise e.in_flags(GUARD_FLAGS) from None
    if steps is not None and max_drop is None:
        raise UserError(
            "--guard-recovery says when the accuracy guard judges a pruning step, and this run has no guard "
            "(--max-accuracy-drop none, --no-prune, no budget or --val-fraction 0); leave it out."
        )
    return steps


def _check_latency(cfg: TrainConfig) -> None:
    """A latency budget's model: a table from the device, or one measured here at these settings."""
    from edgeprune.targets import get_target

    if cfg.target is not None:
        preset = get_target(cfg.target)
        if cfg.latency_threads is None:
            cfg.latency_threads = preset.threads
    if cfg.latency_threads is not None and cfg.latency_threads < 1:
        raise UserError(f"--latency-threads must be at least 1, got {cfg.latency_threads}.")
    if cfg.latency_batch < 1:
        raise UserError(f"--latency-batch must be at least 1, got {cfg.latency_batch}.")
    if cfg.latency_table is not None:
        if cfg.target_latency_ms is None:
            raise UserError("--latency-table is the model of a latency budget; give --target-latency-ms too.")
        if not Path(cfg.latency_table).is_file():
            raise UserError(
                f"--latency-table {cfg.latency_table} does not exist; measure one with "
                "edgeprune bench --latency-probes DIR --json TABLE (or leave it out to measure here)."
            )


TEACHER_WEIGHT = 0.5  # the distillation weight of a --teacher run without --distill


def _check_distill(kw: dict, warmup_epochs: int, explicit: bool) -> None:
    """Distillation learns from a teacher: a finished run (--teacher, weight 0.5 unless --distill sets
    it), or else the model itself at the end of the warm-up, which needs at least one warm-up epoch: a
    preset's self-distillation is dropped without one, an explicit --distill is an error. (A baseline
    gets distillation only when asked: presets configure pruning; an explicit --distill trains the
    dense model with the pruned run's recipe.)"""
    alpha, temp = kw.get("distill"), kw.get("distill_temperature")
    if alpha is not None and not 0 <= alpha <= 1:
        raise UserError(f"--distill must be a weight in [0, 1] (0 turns it off), got {alpha}.")
    if temp is not None and temp <= 0:
        raise UserError(f"--distill-temperature must be positive, got {temp}.")
    if kw.get("teacher") is not None:
        if explicit and alpha == 0:
            raise UserError(
                "--teacher is distilled from with the --distill weight, and --distill 0 turns that off; drop one."
            )
        # found when the run starts (a resumed run has the teacher's outputs in its checkpoint)
        kw["teacher"] = str(teacher_file(kw["teacher"], must_exist=False))
        kw["distill"] = TEACHER_WEIGHT if alpha is None else alpha
        return
    if not alpha or warmup_epochs > 0:
        return
    if explicit:
        raise UserError(
            "--distill learns from the model at the end of the warm-up; use --warmup-epochs 1 or more, "
            "or --teacher RUN to learn from a finished run."
        )
    kw["distill"] = 0.0


def schedule_of(cfg: TrainConfig) -> PruneSchedule:
    """The run's pruning schedule; a bad value is reported with its flag (--threshold, not threshold=)."""
    try:
        return _schedule_of(cfg)
    except ArgumentError as e:
        raise e.in_flags() from None


def _schedule_of(cfg: TrainConfig) -> PruneSchedule:
    return PruneSchedule(
        epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        prune_until=cfg.prune_until,
        threshold=cfg.threshold,
        target_params=cfg.target_params,
        target_macs=cfg.target_macs,
        target_latency_ms=cfg.target_latency_ms,
        round_to=cfg.round_to,
        min_width=cfg.min_width,
        prune_connections=cfg.prune_connections,
        progressive=cfg.progressive,
        finetune_lr=cfg.finetune_lr,
        prune_every=cfg.prune_every,
    )


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- --teacher: which file the flag names, and whether its run drew this run's split -------------
TEACHER_MODEL_FILE = "model.pt"
# what decides which examples a run trained on: a teacher that differs may have seen this run's validation set
SAME_SPLIT = ("dataset", "limit", "val_fraction", "seed", "data_options")


def teacher_file(path: str, must_exist: bool = True) -> Path:
    """The teacher's model.pt: `path` itself, or the file in a run directory (absolute); UserError
    when it is not there and `must_exist` (a resumed run has the teacher's outputs in its checkpoint
    and need not find the teacher again)."""
    p = Path(path).expanduser().resolve()
    if p.is_dir() or (not p.exists() and p.suffix != ".pt"):
        p = p / TEACHER_MODEL_FILE
    if must_exist and not p.is_file():
        where = f"{p.parent} has no {TEACHER_MODEL_FILE}" if p.name == TEACHER_MODEL_FILE else f"{p} does not exist"
        raise UserError(f"--teacher {where}; pass a finished run's directory (train it first, e.g. with --no-prune).")
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
