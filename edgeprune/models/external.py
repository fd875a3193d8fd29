"""Models from outside the registry, named on the command line as

- `torchvision:NAME`: `torchvision.models.get_model(NAME, weights=None, **config)`, any torchvision
  classification model, always built from scratch (weights are never downloaded);
- `timm:NAME`: `timm.create_model(NAME, pretrained=False, **config)`, any timm model (timm is the
  optional extra `edgeprune[timm]`), built from scratch too, for the data's channels and classes;
- `path/to/file.py:factory`: the user's file imported by path and `factory(**config)` called; it
  must return an nn.Module that takes the data's inputs (float images [B, C, H, W] or int64 token
  ids [B, T]). This runs the user's code: that is the point, and the user's responsibility.

Every mistake is a UserError of one sentence naming the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Callable

from edgeprune.errors import UserError, first_line, import_extra

TORCHVISION = "torchvision:"
TIMM = "timm:"
HF = "hf:"
FORMS = "torchvision:NAME, timm:NAME, hf:PATH_OR_ID or path/to/file.py:factory"
LIST_MODELS = "torchvision.models.list_models(module=torchvision.models)"
PREFIXES = {"torchvision": TORCHVISION, "timm": TIMM}  # the library-named forms: kind -> prefix


def kind_of(name: str) -> str:
    """'torchvision', 'timm', 'hf', 'file' or 'registry' (a registered name such as cnn)."""
    if name.startswith(HF):  # before the file form: a directory may end in .py
        return "hf"
    for kind, prefix in PREFIXES.items():
        if name.startswith(prefix):
            return kind
    path, sep, _ = name.rpartition(":")
    if (sep and path.endswith(".py")) or name.endswith(".py"):
        return "file"
    return "registry"


def canonical_name(name: str) -> str:
    """The name with a factory file's path (an hf: directory) made absolute, so the run rebuilds it from anywhere."""
    if kind_of(name) == "hf":
        from edgeprune.models import hf

        return hf.canonical(name)
    if kind_of(name) != "file":
        return name
    path, factory = split_file_name(name)
    return f"{os.path.abspath(os.path.expanduser(path))}:{factory}"


def slug(name: str) -> str:
    """A short, path-safe name for a run directory: resnet18, mymodel-make."""
    kind = kind_of(name)
    if kind == "hf":
        from edgeprune.models import hf

        return hf.slug(name)
    if kind in PREFIXES:
        return name[len(PREFIXES[kind]) :]
    if kind == "file":
        path, factory = split_file_name(name)
        return f"{Path(path).stem}-{factory}"
    return name


def parse_model_kwargs(text: str | None) -> dict | None:
    """The JSON object of --model-kwargs (None when the flag is not given)."""
    if text is None:
        return None
    example = """'{"num_classes": 10}'"""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(
            f"--model-kwargs is not valid JSON ({e.msg} at character {e.pos}); pass an object such as {example}."
        ) from None
    if not isinstance(value, dict):
        kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
        got = kinds.get(type(value), "null")
        raise UserError(f"--model-kwargs must be a JSON object such as {example}, not {got}.")
    return value


def _a(obj) -> str:
    """'a list', 'an int': the article and type name of `obj`."""
    name = type(obj).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _call(factory: str, config: dict) -> str:
    return f"{factory}({', '.join(f'{k}={v!r}' for k, v in config.items())})"


def _accepts(fn: Callable, param: str, var_keyword: bool) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if param in params and params[param].kind not in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.POSITIONAL_ONLY,
    ):
        return True
    return var_keyword and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# --- torchvision:NAME ----------------------------------------------------------------------------


def _torchvision_models():
    try:
        import torchvision.models as tvm
    except ImportError:
        raise UserError("--model torchvision:NAME needs torchvision; pip install 'edgeprune[train]'.") from None
    return tvm


def torchvision_builder(name: str) -> Callable:
    """The builder of torchvision classification model `name` (the part after 'torchvision:')."""
    tvm = _torchvision_models()
    names = tvm.list_models(module=tvm)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UserError(
            f"torchvision has no classification model '{name}'{hint}; {LIST_MODELS} lists the names to use "
            "after --model torchvision:."
        )
    return tvm.get_model_builder(name)


def torchvision_defaults(name: str, meta: dict) -> dict:
    builder = torchvision_builder(name)
    return {"num_classes": len(meta["labels"])} if _accepts(builder, "num_classes", var_keyword=True) else {}


def build_torchvision(name: str, config: dict):
    torchvision_builder(name)
    if "weights" in config:
        raise UserError(
            "edgeprune builds torchvision models from scratch and never downloads weights; drop 'weights' "
            "from --model-kwargs and pass a weights file you fetched once with --weights FILE."
        )
    try:
        return _torchvision_models().get_model(name, weights=None, **config)
    except Exception as e:  # noqa: BLE001 - torchvision raises TypeError, ValueError or AssertionError
        raise UserError(
            f"torchvision's {name} cannot be built with {json.dumps(config)} ({first_line(e)}); fix --model-kwargs."
        ) from None


# --- timm:NAME ----------------------------------------------------------------------------------


# create_model options that fetch or read weights: edgeprune reads weights only through --weights
PRETRAINED_OPTIONS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def _timm():
    return import_extra("timm", "--model timm:NAME", "timm")


def check_timm(name: str) -> None:
    """A UserError unless timm is installed and knows model `name` (the part after 'timm:')."""
    timm = _timm()
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=4)
    hint = f" (close: {', '.join(close)})" if close else ""
    raise UserError(
        f"timm {timm.__version__} has no model '{name}'{hint}; timm.list_models() lists the names to use after "
        "--model timm:."
    )


def timm_defaults(name: str, meta: dict) -> dict:
    """The data's classes and image channels: every timm model takes num_classes and in_chans."""
    check_timm(name)
    return {"num_classes": len(meta["labels"]), "in_chans": int(meta["input_shape"][1])}


def build_timm(name: str, config: dict):
    timm = _timm()
    check_timm(name)
    asked = sorted(k for k in PRETRAINED_OPTIONS if k in config)
    if asked:
        raise UserError(
            f"edgeprune builds timm models from scratch and never downloads weights; drop {', '.join(asked)} "
            "from --model-kwargs and pass a weights file you fetched once with --weights FILE."
        )
    try:
        return timm.create_model(name, pretrained=False, **config)
    except Exception as e:  # noqa: BLE001 - timm raises TypeError, ValueError, AssertionError ...
        raise UserError(
            f"timm's {name} cannot be built with {json.dumps(config)} ({first_line(e)}); fix --model-kwargs."
        ) from None


# --- path/to/file.py:factory ---------------------------------------------------------------------

_MODULES: dict[Path, tuple[tuple[int, int], ModuleType]] = {}  # imported once per file version


def split_file_name(name: str) -> tuple[str, str]:
    """(path, factory) of 'path/to/file.py:factory'."""
    path, sep, factory = name.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise UserError(
            f"--model {name} names a file but no factory function; pass --model {name}:make_model "
            "with the function in that file that returns your model."
        )
    if not factory.isidentifier():
        raise UserError(
            f"--model {name}: '{factory}' is not a Python function name; pass --model {path}:make_model "
            "with the function in that file that returns your model."
        )
    return path, factory


def check_file(name: str) -> Path:
    """The factory file's absolute path; a UserError when it does not exist."""
    path, _ = split_file_name(name)
    file = Path(os.path.abspath(os.path.expanduser(path)))
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "does not exist"
        raise UserError(
            f"The model file {file} {what}; pass --model path/to/file.py:factory with the file that defines your model."
        )
    return file


def _where(e: BaseException, file: Path) -> str:
    """'file:line' of the deepest frame in the user's file (else the deepest frame at all)."""
    if isinstance(e, SyntaxError) and e.filename and e.lineno:
        return f"{e.filename}:{e.lineno}"
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if Path(f.filename) == file]
    frame = (mine or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame else str(file)


def _import(file: Path) -> ModuleType:
    stat = file.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _MODULES.get(file)
    if cached and cached[0] == version:
        return cached[1]
    module_name = "edgeprune_user_model_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise UserError(f"{file} cannot be imported as a Python file; pass --model path/to/file.py:factory.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickling and typing look their module up here
    sys.path.insert(0, str(file.parent))  # as `python file.py` would: the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - whatever the user's file raises
        sys.modules.pop(module_name, None)
        raise UserError(
            f"Importing the model file {file} raises {first_line(e)} at {_where(e, file)}; "
            "fix the file or point --model at another one."
        ) from None
    finally:
        _remove_path(file.parent)
    _MODULES[file] = (version, module)
    return module


def _remove_path(directory: Path) -> None:
    try:
        sys.path.remove(str(directory))
    except ValueError:
        pass


def load_factory(name: str) -> Callable:
    """The factory function of 'path/to/file.py:factory', its file imported."""
    file = check_file(name)
    _, factory = split_file_name(name)
    module = _import(file)
    if not hasattr(module, factory):
        defined = sorted(
            k
            for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        has = f" (it defines {', '.join(defined[:6])})" if defined else ""
        raise UserError(
            f"The model file {file} has no function '{factory}'{has}; pass --model {file}:NAME with the "
            "function that returns your model."
        )
    fn = getattr(module, factory)
    if not callable(fn):
        raise UserError(
            f"'{factory}' in {file} is {_a(fn)}, not a function; pass --model {file}:NAME with the "
            "function that returns your model."
        )
    return fn


def file_defaults(name: str, meta: dict) -> dict:
    """{} (the factory decides), plus num_classes from the data when the factory has that parameter."""
    fn = load_factory(name)
    return {"num_classes": len(meta["labels"])} if _accepts(fn, "num_classes", var_keyword=False) else {}


def build_from_file(name: str, config: dict):
    from torch import nn

    fn = load_factory(name)
    file, factory = check_file(name), split_file_name(name)[1]
    try:
        inspect.signature(fn).bind(**config)
    except TypeError as e:
        raise UserError(
            f"{factory}() in {file} does not accept the keyword arguments {json.dumps(config)} ({e}); "
            "fix --model-kwargs or the factory's parameters."
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): the call will tell
    sys.path.insert(0, str(file.parent))
    try:
        model = fn(**config)
    except Exception as e:  # noqa: BLE001 - whatever the user's factory raises
        raise UserError(
            f"{_call(factory, config)} in {file} raises {first_line(e)} at {_where(e, file)}; "
            "fix the factory or --model-kwargs."
        ) from None
    finally:
        _remove_path(file.parent)
    if not isinstance(model, nn.Module):
        raise UserError(
            f"{_call(factory, config)} in {file} returns {_a(model)}, not a torch.nn.Module; make it return the model."
        )
    return model
