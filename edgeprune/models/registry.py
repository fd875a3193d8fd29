"""Models register here by decorator; tests are parametrized over everything registered."""

from __future__ import annotations

from typing import Callable

from edgeprune.errors import UserError, unknown_choice

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
        raise unknown_choice("model", name, MODELS)
    return MODELS[name]


def check_fits(name: str, task: str, dataset: str) -> None:
    """A UserError unless model `name` exists and is made for `task` data."""
    entry = _entry(name)
    if entry["task"] != task:
        fitting = [m for m, e in MODELS.items() if e["task"] == task]
        raise UserError(
            f"Model '{name}' is for {entry['task']} data but {dataset} is "
            f"{task} data; use --model {' or '.join(fitting)}."
        )


def default_config(name: str, dataset_meta: dict) -> dict:
    check_fits(name, dataset_meta["task"], dataset_meta["dataset"])
    return MODELS[name]["defaults"](dataset_meta)


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
