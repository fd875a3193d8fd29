"""The run directory's format, written by `edgeprune train` and read back by `edgeprune export`:
what config.json, checkpoint.pt and model.pt hold, the run-format check, saving and loading the
torch files, which run there is to resume, and reloading the data a run was trained on.

The paths and the atomic writes are edgeprune.run, which stays free of torch for bench/.
"""

from __future__ import annotations

import io
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Callable, Optional

from edgeprune.config import TrainConfig
from edgeprune.errors import UserError, os_error
from edgeprune.run import (
    RUN_FORMAT,
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    read_jsonl,
    write_jsonl,
)
from edgeprune.version import __version__

RESTART = "pass --restart to discard it and start over"
MODEL_FORMAT, MODEL_VERSION = "edgeprune.model", 1  # model.pt's "format" and "version"


# --- torch files ------------------------------------------------------------------------------------


def save_torch(path: Path, obj, midway: Optional[Callable[[], None]] = None) -> None:
    """`torch.save` of `obj`, written atomically (`midway`: the crash tests' fault hook)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), midway)


def load_torch(path: Path, what: str, fix: str = "re-create it with edgeprune train") -> dict:
    """A checkpoint or model file, read without unpickling code (weights_only); `fix` ends the
    sentence of a file that cannot be read."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; train the run first (edgeprune train --out {path.parent}).") from None
    except OSError as e:
        if os_error(e) is not None:
            raise  # the machine refused (permission...): the CLI's one sentence for OS errors says so
        raise UserError(f"{path} cannot be read ({e.strerror or e}); {fix}.") from None
    except Exception as e:
        raise UserError(
            f"{path} is not a readable {what} ({type(e).__name__}); it is corrupt or from another tool: {fix}."
        ) from None


def load_model(arch: dict, state_dict: dict):
    """The model of `arch` holding `state_dict`, at the (pruned) widths the tensors have: built from
    its description, then each layer resized to the saved shapes before the weights load."""
    from edgeprune.models import build_model
    from edgeprune.prune.surgery import load_resized

    return load_resized(build_model(arch), state_dict)


# --- config.json --------------------------------------------------------------------------------------


def check_run_format(root: Path, saved: dict, fix: str) -> None:
    """A run written in another layout (its data and vocabulary may be laid out otherwise) is refused;
    `fix` ends the sentence."""
    if saved.get("run_format") != RUN_FORMAT:
        raise UserError(
            f"{root} was written by another edgeprune version (run format {saved.get('run_format')}, "
            f"this is {RUN_FORMAT}); {fix}."
        )


def new_run_config(
    cfg: TrainConfig,
    meta: dict,
    data_source,
    baseline_params: int,
    embeddings_init: Optional[dict],
    weights_init: Optional[dict],
) -> dict:
    """What a new run's config.json holds (a copy travels in every checkpoint)."""
    return {
        "run_format": RUN_FORMAT,
        "edgeprune_version": __version__,
        "config": cfg.to_dict(),
        "input": meta,
        "data_source": data_source,
        "baseline_params": baseline_params,
        "embeddings_init": embeddings_init,
        "weights_init": weights_init,
    }


def readable_run_config(run: RunDir) -> Optional[dict]:
    """A run's config.json, or None when it is missing, or unreadable while a checkpoint can stand in."""
    if not run.config.exists():
        return None
    try:
        saved = read_json(run.config)
    except UserError:
        if not run.checkpoint.exists():
            raise
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        if not run.checkpoint.exists():
            raise UserError(f"{run.config} holds no training configuration; {RESTART} (or choose another --out).")
        return None
    return saved


def read_run_config(run: RunDir) -> tuple[dict, dict]:
    """(config.json, its training configuration) of a finished run, for the stages after training."""
    config = read_json(run.config)
    cfg = config.get("config") if isinstance(config, dict) else None
    if not isinstance(cfg, dict) or "dataset" not in cfg:
        raise UserError(f"{run.config} has no training configuration; re-create the run with edgeprune train.")
    check_run_format(run.root, config, "re-train it with this version")
    return config, cfg


# --- resume --------------------------------------------------------------------------------------------


def check_run_dir(run: RunDir, cfg: TrainConfig, resume: bool, restart: bool, console) -> bool:
    """Validate an existing run directory; returns True when there is a checkpoint to resume.

    Nothing already saved is overwritten unless `restart` says so: a checkpoint whose config.json is
    missing or corrupt is resumed with config.json rebuilt from the copy the checkpoint holds, or
    refused, never silently replaced by a new run."""
    if restart:
        if resume:
            raise UserError("--resume continues a run and --restart discards it; pass one of them.")
        return False
    if resume and not run.root.is_dir():
        raise UserError(
            f"--resume: {run.root} does not exist, so there is no run to continue; fix the --out path, "
            "or drop --resume to start a new run there."
        )
    saved = readable_run_config(run)
    if saved is None:
        saved = config_from_checkpoint(run, resume, console)
    if saved is None:
        if resume:
            raise UserError(
                f"--resume: {run.root} holds no run to continue (no config.json, no checkpoint.pt); fix the --out "
                "path, or drop --resume to start a new run there."
            )
        return False
    check_run_format(run.root, saved, "train into a new --out")
    saved_id = TrainConfig(**saved["config"]).identity()
    diff = sorted(k for k in set(saved_id) | set(cfg.identity()) if saved_id.get(k) != cfg.identity().get(k))
    if diff:
        raise UserError(
            f"{run.root} holds a run with a different configuration ({', '.join(diff)} differ); "
            f"choose another --out, or {RESTART}."
        )
    if not resume:
        state = "a finished run" if run.metrics.exists() else "an unfinished run"
        raise UserError(
            f"{run.root} already holds {state} with this configuration; pass --resume to "
            f"continue it, choose another --out, or {RESTART}."
        )
    return run.checkpoint.exists()


def config_from_checkpoint(run: RunDir, resume: bool, console) -> Optional[dict]:
    """With config.json missing or corrupt: None when nothing of a run is there; else, on --resume,
    config.json rebuilt from the checkpoint's copy; else a UserError whose advice loses nothing."""
    saved_files = [p.name for p in (run.checkpoint, run.model, run.metrics) if p.exists()]
    if not saved_files:
        return None
    state = "is missing" if not run.config.exists() else "is corrupt"
    if not run.checkpoint.exists():
        raise UserError(
            f"{run.config} {state} but {run.root} holds {', '.join(saved_files)} of a run and no checkpoint to "
            f"rebuild it from; restore config.json from a backup, choose another --out, or {RESTART}."
        )
    if not resume:
        raise UserError(
            f"{run.config} {state} but {run.checkpoint} holds a run; pass --resume to rebuild config.json from "
            f"the checkpoint and continue, or {RESTART}."
        )
    ckpt = load_checkpoint(run)
    saved = ckpt.get("run_config") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict):
        raise UserError(
            f"{run.config} {state} and {run.checkpoint} (from an older edgeprune) holds no copy of it; restore "
            f"config.json from a backup to continue, or {RESTART}."
        )
    atomic_write_json(run.config, saved)
    console.print(f"{run.config} {state}; rebuilt it from {run.checkpoint}", highlight=False, soft_wrap=True)
    return saved


def clear_for_new_run(run: RunDir, restart: bool) -> None:
    """Remove what an earlier run left that a new one would otherwise pass off as its own."""
    run.root.mkdir(parents=True, exist_ok=True)
    for p in (run.history, run.metrics, run.checkpoint, run.model, run.train_vocab, *run.partial_writes()):
        p.unlink(missing_ok=True)
    if restart:  # the old run's export, bundle and timings would pass for the new run's
        import shutil

        for d in (run.export, run.bundle, run.bench):
            shutil.rmtree(d, ignore_errors=True)
        (run.root / "bundle.tar.gz").unlink(missing_ok=True)


def restore_history(run: RunDir, ckpt: dict, console) -> list[dict]:
    """The checkpoint's history, written back to history.jsonl (which a crash may have left one
    line short, or with a torn last line); older checkpoints without one keep the file's lines."""
    for p in run.partial_writes():
        p.unlink()
    saved = ckpt.get("history")
    if saved is None:
        history = [h for h in read_jsonl(run.history) if h["epoch"] <= ckpt["epoch"]]
    else:
        try:
            on_disk = read_jsonl(run.history)
        except UserError:
            on_disk = None  # corrupt in the middle: the checkpoint's copy replaces it
        if on_disk != saved:
            console.print(
                f"{run.history} did not match the checkpoint (an interrupted write); rewrote its "
                f"{len(saved)} epoch(s) from the checkpoint",
                highlight=False,
                soft_wrap=True,
            )
        history = list(saved)
    write_jsonl(run.history, history)
    return history


# --- checkpoint.pt and model.pt ------------------------------------------------------------------------


def checkpoint_record(
    *,
    epoch: int,
    train_seconds: float,
    arch: dict,
    model: dict,
    optimizer: dict,
    pruner: Optional[dict],
    scaler: Optional[dict],
    teacher_logits,
    best: Optional[dict],
    rng,
    history: list[dict],
    run_config: Optional[dict],
) -> dict:
    """What checkpoint.pt holds: everything --resume needs to continue as if never interrupted."""
    return {
        "format": RUN_FORMAT,
        "edgeprune_version": __version__,
        "epoch": epoch,
        "train_seconds": train_seconds,
        "arch": arch,
        "model": model,
        "optimizer": optimizer,
        "pruner": pruner,
        "scaler": scaler,
        "teacher_logits": teacher_logits,
        "best": best,
        "rng": rng,  # the generator dropout and word dropout draw from
        # The history is part of the atomic checkpoint, so the two cannot disagree:
        # history.jsonl is a copy for readers, rewritten from here on resume.
        "history": history,
        # config.json's contents: if that file is lost or damaged, --resume rebuilds it from here
        "run_config": run_config,
    }


def load_checkpoint(run: RunDir) -> dict:
    """checkpoint.pt, read; a UserError when it cannot be."""
    return load_torch(run.checkpoint, "checkpoint", fix=f"restore it from a backup, or {RESTART}")


def model_record(run: RunDir, arch: dict, state_dict: dict, meta: dict, params: int) -> dict:
    """What model.pt holds: the compact model, its input and its size."""
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "edgeprune_version": __version__,
        "arch": arch,
        "state_dict": state_dict,
        "input": meta,
        "params": params,
        "source_run": str(run.root),
    }


def load_run_model(model_path: Path):
    """The compact model of a run (eval mode) and its saved record; UserError when unusable."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UserError(
            f"{model_path} does not exist; train the run first (edgeprune train --out {model_path.parent})."
        )
    record = load_torch(model_path, "edgeprune model")
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT or "arch" not in record:
        raise UserError(f"{model_path} is not an edgeprune model file; re-create it with edgeprune train.")
    if record.get("version") != MODEL_VERSION:
        raise UserError(
            f"{model_path} has model format version {record.get('version')}, this edgeprune "
            f"reads version {MODEL_VERSION}; re-train with this version."
        )
    _check_factory_still_there(model_path, record["arch"])
    try:
        model = load_model(record["arch"], record["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{model_path} holds weights that do not fit its architecture ({first}); re-create it with edgeprune train."
        ) from None
    return model.eval(), record


def _check_factory_still_there(model_path: Path, arch: dict) -> None:
    """A model built by your own file.py:factory is rebuilt from that file, at the path model.pt records;
    when the file has moved, the one fix is the file back at that path (export has no --model)."""
    from edgeprune.models import external

    name = arch.get("name") if isinstance(arch, dict) else None
    if not isinstance(name, str) or external.kind_of(name) != "file":
        return
    file, factory = external.split_file_name(name)
    if not Path(file).is_file():
        raise UserError(
            f"{model_path} is built by {factory}() in {file}, which is no longer there; put that file back at "
            "that path (a copy will do) and export again."
        )


# --- the run's data ------------------------------------------------------------------------------------


def load_run_data(cfg: dict, data_dir=None, vocab=None, tokenizer=None):
    """The data of a run configured by `cfg` (config.json's "config"), loaded as training loads it: same
    seed, limit, validation share and text settings (TrainConfig's defaults for any not recorded);
    `data_dir` overrides the recorded one."""
    from edgeprune.data.loader import load_data

    known = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    setting = {**known, **cfg}
    data_dir = data_dir or cfg.get("data_dir")
    return load_data(
        cfg["dataset"],
        Path(data_dir) if data_dir else None,
        seed=setting["seed"],
        limit=setting["limit"],
        val_fraction=setting["val_fraction"],
        vocab_size=setting["vocab_size"],
        max_len=setting["max_len"],
        vocab=vocab,
        options=cfg.get("data_options"),
        tokenizer=tokenizer,
    )


def check_same_data(run: RunDir, meta: dict) -> None:
    """Resuming on data whose classes or input changed would train a model that cannot fit it."""
    saved = read_json(run.config).get("input") or {}
    for key in ("labels", "input_shape"):
        if key in saved and saved[key] != meta.get(key):
            raise UserError(
                f"the data of {run.root} changed since the run started ({key} {saved[key]} then, "
                f"{meta.get(key)} now); restore it or train into a new --out."
            )


def check_data_still_there(run: RunDir, dataset: str) -> None:
    """Your own data is found again at the path training recorded; when it has moved, the advice is
    what export itself can follow: the path back, or config.json's "dataset" field pointed at it."""
    from edgeprune.data.own import HUB_PREFIX, is_own

    if is_own(dataset) and not dataset.startswith(HUB_PREFIX) and not Path(dataset).expanduser().exists():
        raise UserError(
            f"the data {run.root} was trained on, {dataset}, is no longer there; put it back at that path, "
            f'or set "dataset" under "config" in {run.config} to where it is now, and export again.'
        )


def training_vocab(run: RunDir) -> dict | None:
    """The vocabulary the checkpoint's model reads: vocab.json until pruning shrinks it at the end."""
    for path in (run.train_vocab, run.vocab):
        if path.exists():
            return read_json(path)
    return None


def model_tokens(run: RunDir, meta: dict):
    """(vocabulary, tokenizer) that model.pt reads, checked against the hashes its input records: a
    pretrained model's own tokenizer.json, else a text model's (possibly shrunk) vocab.json."""
    from edgeprune.data.text import Vocab

    vocab = tokenizer = None
    if meta.get("tokenizer"):  # a pretrained model's own tokenizer, saved by training
        from edgeprune.data.tokenizer import TokenizerFile

        tokenizer = TokenizerFile.read(run.tokenizer)
        if tokenizer.sha256() != meta.get("tokenizer_sha256"):
            raise UserError(f"{run.tokenizer} is not the tokenizer the model was trained with; restore it or re-train.")
    elif meta["task"] == "text":
        vocab = Vocab.from_json(read_json(run.vocab))
        if meta.get("vocab_sha256") and vocab.sha256() != meta["vocab_sha256"]:
            raise UserError(f"{run.vocab} is not the vocabulary the model was trained with; restore it or re-train.")
    return vocab, tokenizer


def ship_vocab(run: RunDir, model, vocab, meta: dict):
    """The model to save as model.pt and its input description. A BiLSTM's token map is folded into
    its embedding; when vocabulary rows were pruned, vocab.json becomes the shrunk vocabulary (in the
    new row order) and the training one is kept as vocab.train.json, which --resume reads."""
    fold = getattr(model, "without_token_map", None)
    if fold is None or vocab is None:
        return model, meta
    shipped, ids = fold()
    if ids == list(range(len(vocab))):
        return shipped, meta
    small = vocab.select(ids)
    if not run.train_vocab.exists():
        atomic_write_json(run.train_vocab, vocab.to_json())
    atomic_write_json(run.vocab, small.to_json())
    return shipped, {**meta, "vocab_size": len(small), "vocab_sha256": small.sha256()}
