"""`--model hf:PATH_OR_ID`: a pretrained Hugging Face classifier, fine-tuned (and pruned) on the data.

- text: `AutoModelForSequenceClassification`, with the model's own (fast) tokenizer;
- images: `AutoModelForImageClassification`.

PATH is a directory written by `save_pretrained` (config.json, the weights, and for text the
tokenizer files); an ID is a hub model, read from the local cache or fetched by transformers (a
machine offline gets one sentence naming the fix). The classifier head is sized to the data's
classes (a head for another number is replaced). `transformers` is the optional extra
`edgeprune[hf]`.

A run records the model's config in its architecture (`HFClassifier.arch`), so resume, export and
bench rebuild it without the directory or the hub; the pruned head counts and FFN sizes are the
shapes of the saved tensors (edgeprune.prune.surgery.load_resized), which the attention code follows
(it reshapes to (-1, head size)).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import torch
from torch import nn

from edgeprune.data.tokenizer import IDS, MASK
from edgeprune.errors import UserError, first_line, import_extra

PREFIX = "hf:"
FORM = "hf:PATH_OR_ID"
# what a saved tokenizer leaves in its directory (one is enough for AutoTokenizer to rebuild it)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
TASK_CLASSES = {"text": "AutoModelForSequenceClassification", "image": "AutoModelForImageClassification"}
# --model-kwargs that would load or fetch weights some other way than the one path this module reads
REFUSED_KWARGS = ("pretrained_model_name_or_path", "hf_config", "trust_remote_code")


def _transformers():
    # a broken install is named by its error's type alone: transformers' import errors run to pages
    return import_extra("transformers", "--model hf:...", "hf", why=lambda e: type(e).__name__)


@contextlib.contextmanager
def _quiet():
    """transformers' load reports and progress bars: edgeprune says what matters in its own lines."""
    t = _transformers()
    level = t.utils.logging.get_verbosity()
    t.utils.logging.set_verbosity_error()
    t.utils.logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        t.utils.logging.set_verbosity(level)
        t.utils.logging.enable_progress_bar()


def is_hf(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _looks_like_path(ref: str) -> bool:
    """A hub id is owner/name; anything else with a separator, or starting like a path, is a path."""
    return ref.startswith(("/", ".", "~")) or os.sep in ref.strip("/").replace("/", "", 1) or "\\" in ref


def ref_of(name: str) -> str:
    """The directory (absolute) or hub id that `hf:...` names; a UserError for a path that is not there."""
    ref = name[len(PREFIX) :].strip()
    if not ref:
        raise UserError(
            "--model hf: names no model; pass --model hf:DIR (a save_pretrained directory) or hf:owner/name."
        )
    path = Path(ref).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or _looks_like_path(ref):
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise UserError(
            f"--model {name}: {path} {what}; pass the directory save_pretrained wrote (config.json and the weights)."
        )
    return ref


def canonical(name: str) -> str:
    """hf: with a local directory made absolute, so the run finds it again from anywhere."""
    return PREFIX + ref_of(name)


def slug(name: str) -> str:
    return Path(name[len(PREFIX) :].rstrip("/")).name or "hf"


def _offline_fix(ref: str) -> str:
    return (
        f"download it once on a machine with internet (hf download {ref} --local-dir DIR, or "
        "save_pretrained) and pass --model hf:DIR"
    )


def load_config(name: str):
    """The model's transformers config (config.json), without its weights."""
    t = _transformers()
    ref = ref_of(name)
    if Path(ref).is_dir() and not (Path(ref) / "config.json").is_file():
        raise UserError(f"--model {name}: {ref} has no config.json; pass a directory written by save_pretrained.")
    try:
        with _quiet():
            return t.AutoConfig.from_pretrained(ref)
    except (OSError, ValueError) as e:
        if Path(ref).is_dir():
            raise UserError(
                f"--model {name}: {ref}/config.json cannot be read ({first_line(e, 200)}); fix or replace it."
            ) from None
        raise UserError(
            f"--model {name}: transformers cannot get '{ref}' from its cache or the hub ({first_line(e, 200)}); "
            f"{_offline_fix(ref)}."
        ) from None


def task_of(name: str, config=None) -> str:
    """'text' or 'image': which of the two auto classes has a head for this architecture."""
    t = _transformers()
    config = config if config is not None else load_config(name)
    from transformers.models.auto import modeling_auto

    kind = getattr(config, "model_type", None)
    if kind in modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return "text"
    if kind in modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image"
    raise UserError(
        f"--model {name} is a '{kind}' model, which transformers {t.__version__} has no sequence or image "
        "classification head for; hf: takes models that AutoModelForSequenceClassification or "
        "AutoModelForImageClassification builds (BERT, MiniLM, DistilBERT, ViT, DeiT, ...)."
    )


def check_fits(name: str, task: str, dataset: str) -> None:
    """A UserError unless the model exists and is a classifier for `task` data."""
    have = task_of(name)
    if have != task:
        raise UserError(
            f"--model {name} is {'a text' if have == 'text' else 'an image'} classifier but {dataset} is {task} "
            f"data; pass an {TASK_CLASSES[task]} model."
        )


def defaults(name: str, meta: dict) -> dict:
    """A head for the data's classes (a two-class model keeps two logits, as transformers builds it)."""
    check_fits(name, meta["task"], meta["dataset"])
    return {"num_labels": len(meta["labels"])}


class HFClassifier(nn.Module):
    """A transformers classifier with edgeprune's calling convention: logits out; for text, the
    token ids and the attention mask as two inputs, or packed as one [B, 2, T] tensor (the form
    the training loop moves, edgeprune.data.tokenizer), or the ids alone (every token attended)."""

    def __init__(self, model: nn.Module, name: str, task: str):
        super().__init__()
        self.hf = model
        self.hf_name, self.task = name, task

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.task == "image":
            return self.hf(pixel_values=x).logits
        if x.dim() == 3:
            x, attention_mask = x[:, IDS], x[:, MASK]
        logits = self.hf(input_ids=x, attention_mask=attention_mask).logits
        if attention_mask is not None and torch.onnx.is_in_onnx_export():
            # a model whose every attention went whole (prune/sublayers.py) reads no mask, and an
            # exporter drops an input the graph does not read: the device feeds it all the same
            logits = logits + 0 * attention_mask[:, :1].to(logits.dtype)
        return logits

    def arch(self) -> dict:
        """What rebuilds it with no directory or hub at hand: the config (the weights come from the
        state dict, whose shapes carry the pruned widths)."""
        config = json.loads(self.hf.config.to_json_string(use_diff=False))
        return {"name": self.hf_name, "config": {"hf_config": config}}


def build(name: str, config: dict) -> HFClassifier:
    """The pretrained model (`config`: num_labels and config overrides from --model-kwargs), or,
    with `hf_config` (a run's saved architecture), the same model built from its config alone."""
    t = _transformers()
    config = dict(config)
    saved = config.pop("hf_config", None)
    if saved is not None:
        return _from_saved(t, name, saved, config)
    refused = sorted(k for k in REFUSED_KWARGS if k in config)
    if refused:
        raise UserError(f"--model-kwargs {', '.join(refused)} cannot be set for an hf: model; drop it.")
    ref = ref_of(name)
    hf_config = load_config(name)
    task = task_of(name, hf_config)
    auto = getattr(t, TASK_CLASSES[task])
    try:
        with _quiet():
            model, info = auto.from_pretrained(ref, ignore_mismatched_sizes=True, output_loading_info=True, **config)
    except UserError:
        raise
    except OSError as e:
        if Path(ref).is_dir():
            raise UserError(
                f"--model {name}: {ref} holds no weights transformers can read ({first_line(e, 200)}); "
                "pass a directory written by save_pretrained (model.safetensors)."
            ) from None
        raise UserError(
            f"--model {name}: transformers cannot get its weights ({first_line(e, 200)}); {_offline_fix(ref)}."
        ) from None
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(
            f"--model {name} cannot be built with {json.dumps(config)} ({first_line(e, 200)}); fix --model-kwargs."
        ) from None
    wrapped = HFClassifier(model, name, task)
    wrapped.load_info = {
        "path": ref,
        "head_replaced": sorted({k for k, *_ in info.get("mismatched_keys", [])}),
        "newly_initialized": sorted(set(info.get("missing_keys", []))),
    }
    return wrapped


def _from_saved(t, name: str, saved: dict, extra: dict) -> HFClassifier:
    saved = dict(saved)
    kind = saved.pop("model_type", None)
    try:
        hf_config = t.AutoConfig.for_model(kind, **saved)
        task = task_of(name, hf_config)
        with _quiet():
            model = getattr(t, TASK_CLASSES[task]).from_config(hf_config)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - another transformers version may not know the config
        raise UserError(
            f"the saved {name} ({kind}) cannot be rebuilt by transformers {t.__version__} ({first_line(e, 200)}); "
            "use the transformers version it was trained with."
        ) from None
    return HFClassifier(model, name, task)


def describe_load(info: dict) -> str:
    """One sentence for the run's start: where the weights came from and what was not in them."""
    text = f"started from the pretrained weights of {info['path']}"
    if info["head_replaced"]:
        text += (
            f"; its classifier ({', '.join(info['head_replaced'])}) is for another number of classes, so a "
            "freshly initialized one fits the data's classes"
        )
    others = [k for k in info["newly_initialized"] if k not in info["head_replaced"]]
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        text += f"; not in the checkpoint, so freshly initialized: {shown}"
    return text + "."


# --- the tokenizer (text) -------------------------------------------------------------------------


def tokenizer_json(name: str, max_len: int) -> tuple[str, str | None]:
    """(tokenizer.json's text for the run, a note when the model's limit lowered `max_len`): the
    model's fast tokenizer, truncating to min(`max_len`, the model's limit) tokens and padding with
    its pad token."""
    t = _transformers()
    ref = ref_of(name)
    # without its files transformers 5 still builds a tokenizer, with an empty vocabulary: refuse
    if Path(ref).is_dir() and not any((Path(ref) / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(
            f"--model {name}: {ref} has no tokenizer files; a text model needs its tokenizer (tokenizer.json and "
            "tokenizer_config.json, as the tokenizer's save_pretrained writes them) beside config.json."
        )
    try:
        with _quiet():
            tok = t.AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError, TypeError) as e:
        where = (
            f"{ref} has no tokenizer transformers can read" if Path(ref).is_dir() else "its tokenizer cannot be read"
        )
        raise UserError(
            f"--model {name}: {where} ({first_line(e, 200)}); a text model needs its tokenizer files "
            "(tokenizer.json and tokenizer_config.json, as save_pretrained writes them) beside config.json."
        ) from None
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or not getattr(tok, "is_fast", True):
        raise UserError(
            f"--model {name}: its tokenizer ({type(tok).__name__}) has no tokenizer.json (a fast tokenizer), which "
            "the device tokenizes with; save one with AutoTokenizer.from_pretrained(use_fast=True).save_pretrained."
        )
    if tok.pad_token_id is None:
        raise UserError(
            f"--model {name}: its tokenizer has no padding token; set tokenizer.pad_token and save it again."
        )
    limit = _model_limit(tok, load_config(name))
    note = None
    if limit is not None and max_len > limit:
        note = f"{name} reads at most {limit} tokens, so --max-len {max_len} is lowered to {limit}"
        max_len = limit
    from edgeprune.data.tokenizer import configured

    return configured(backend, max_len, int(tok.pad_token_id), str(tok.pad_token)), note


def _model_limit(tok, config) -> int | None:
    limits = []
    n = getattr(tok, "model_max_length", None)
    if isinstance(n, int) and 0 < n < 1_000_000:  # transformers' "no limit" is a huge sentinel
        limits.append(n)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits) if limits else None
