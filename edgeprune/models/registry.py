"""Models register here by decorator; tests are parametrized over everything registered.

Besides registered names, a model name may be `torchvision:NAME`, `timm:NAME`,
`path/to/file.py:factory` (edgeprune.models.external) or `hf:PATH_OR_ID` (edgeprune.models.hf);
check_fits, default_config and build_model take every form.
"""

from __future__ import annotations

import inspect
from typing import Callable

from edgeprune.errors import UserError, unknown_choice
from edgeprune.models import external

MODELS: dict[str, dict] = {}


def register_model(name: str, task: str, default_config: Callable[[dict], dict]):
    """Register a model class for a task; `default_config(dataset_meta)` gives its defaults."""

    def deco(cls):
        MODELS[name] = {"cls": cls, "task": task, "defaults": default_config}
        cls.arch_name = name
        return cls

    return deco


def _entry(name: str) -> dict:
    if name not in MODELS:
        raise unknown_choice("model", name, [*MODELS, external.FORMS])
    return MODELS[name]


def check_fits(name: str, task: str, dataset: str) -> None:
    """A UserError unless model `name` exists and is made for `task` data. (A factory file's model
    may be for either task: only running it on the data tells, see check_model_fits.)"""
    kind = external.kind_of(name)
    if kind == "hf":  # a pretrained classifier: its config says text or image
        from edgeprune.models import hf

        hf.check_fits(name, task, dataset)
        return
    if kind in external.PREFIXES:  # torchvision:NAME, timm:NAME: image classifiers
        if kind == "torchvision":
            external.torchvision_builder(name[len(external.TORCHVISION) :])
        else:
            external.check_timm(name[len(external.TIMM) :])
        if task != "image":
            fitting = [m for m, e in MODELS.items() if e["task"] == task]
            raise UserError(
                f"--model {name} is an image model but {dataset} is {task} data; use --model "
                f"{' or '.join(fitting)} or your own path/to/file.py:factory."
            )
        return
    if kind == "file":
        external.check_file(name)
        return
    entry = _entry(name)
    if entry["task"] != task:
        fitting = [m for m, e in MODELS.items() if e["task"] == task]
        raise UserError(
            f"Model '{name}' is for {entry['task']} data but {dataset} is "
            f"{task} data; use --model {' or '.join(fitting)}."
        )


def default_config(name: str, dataset_meta: dict) -> dict:
    """The model's configuration for this data (the user's --model-kwargs go on top)."""
    check_fits(name, dataset_meta["task"], dataset_meta["dataset"])
    kind = external.kind_of(name)
    if kind == "hf":
        from edgeprune.models import hf

        return hf.defaults(name, dataset_meta)
    if kind == "torchvision":
        return external.torchvision_defaults(name[len(external.TORCHVISION) :], dataset_meta)
    if kind == "timm":
        return external.timm_defaults(name[len(external.TIMM) :], dataset_meta)
    if kind == "file":
        return external.file_defaults(name, dataset_meta)
    return MODELS[name]["defaults"](dataset_meta)


def build_model(arch: dict):
    """Build a model from {"name": ..., "config": {...}} (what model.arch() returns); the name may
    also be torchvision:NAME, timm:NAME or path/to/file.py:factory."""
    name, config = arch.get("name"), arch.get("config", {})
    kind = external.kind_of(name) if isinstance(name, str) and isinstance(config, dict) else "registry"
    if kind == "hf":
        from edgeprune.models import hf

        return hf.build(name, config)
    if kind == "torchvision":
        return external.build_torchvision(name[len(external.TORCHVISION) :], config)
    if kind == "timm":
        return external.build_timm(name[len(external.TIMM) :], config)
    if kind == "file":
        return external.build_from_file(name, config)
    if isinstance(name, str) and name in MODELS and isinstance(config, dict):
        _check_options(name, config)
    try:
        cls = _entry(arch["name"])["cls"]
        return cls(**arch["config"])
    except (KeyError, TypeError) as e:
        raise UserError(
            f"The architecture description {arch!r} is not valid ({e}); "
            "re-create the model with this edgeprune version."
        ) from None


def _check_options(name: str, config: dict) -> None:
    params = inspect.signature(MODELS[name]["cls"]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # takes any option: the constructor decides
    unknown = sorted(set(config) - set(params))
    if unknown:
        raise UserError(
            f"Model '{name}' has no option {', '.join(unknown)} (its options: {', '.join(params)}); "
            "fix --model-kwargs (a saved model: re-create it with this edgeprune version)."
        )
