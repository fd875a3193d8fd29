"""Models register here by decorator; tests are parametrized over everything registered."""

from __future__ import annotations

import difflib
from typing import Callable

from edgeprune.errors import UserError

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
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserError(f"Unknown model '{name}'; choose one of {', '.join(MODELS)}.{hint}")
    return MODELS[name]


def default_config(name: str, dataset_meta: dict) -> dict:
    entry = _entry(name)
    if entry["task"] != dataset_meta["task"]:
        fitting = [m for m, e in MODELS.items() if e["task"] == dataset_meta["task"]]
        raise UserError(
            f"Model '{name}' is for {entry['task']} data but {dataset_meta['dataset']} is "
            f"{dataset_meta['task']} data; use --model {' or '.join(fitting)}."
        )
    return entry["defaults"](dataset_meta)


def build_model(arch: dict):
    """Build a model from {"name": ..., "config": {...}} (what model.arch() returns)."""
    try:
        cls = _entry(arch["name"])["cls"]
        return cls(**arch["config"])
    except (KeyError, TypeError) as e:
        raise UserError(
            f"The architecture description {arch!r} is not valid ({e}); "
            "re-create the model with this edgeprune version."
        ) from None
