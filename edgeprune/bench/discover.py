"""What to benchmark: .onnx files and bundle directories turned into a list of models."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeprune.bench.onnxfile import check_model, input_shapes
from edgeprune.bench.runtimes import DEFAULT as DEFAULT_RUNTIME
from edgeprune.bench.runtimes import PRECISIONS, RUNTIMES, companion
from edgeprune.errors import UserError
from edgeprune.manifest import MANIFEST, changed_files


@dataclass(frozen=True)
class Model:
    name: str  # the row's name: "<bundle or run>/<variant>" or the file's stem
    variant: str  # the bundle's model name ("float", "int8") or the file's stem
    path: Path
    eval: Path | None = None
    meta: dict | None = None  # the bundle's meta.json
    run_dir: Path | None = None  # set when the bundle sits in a run directory
    problem: str | None = None  # known before measuring: the row fails with this reason
    runtime: str = DEFAULT_RUNTIME  # edgeprune.bench.runtimes name
    source: Path | None = None  # the ONNX file a converted model (ncnn, OpenVINO IR) was made from
    skip: str | None = None  # nothing to measure on this runtime: the row is skipped with this reason
    precision: str | None = None  # what float layers compute in, when the bundle's entry asks ("bf16"); else fp32

    @property
    def key(self) -> str:
        """The row's name within its bundle (the variant and, off the default runtime, the runtime): unique."""
        return self.name.rsplit("/", 1)[-1]


def _named_dir(root: Path) -> Path:
    """The directory a bundle's rows are named after: the run's, for a bundle inside a run directory
    (always called "bundle"; the run's name says more), else the bundle's own."""
    in_run = root.name == "bundle" and (root.parent / "config.json").is_file()
    return root.parent if in_run else root


def _prefixes(roots: list[Path]) -> list[str]:
    """Each bundle's row-name prefix: its named directory's name, or, where bundles share it (the demo's
    baseline and another experiment's baseline), as many parent directories as tell them apart, so each
    model stays its own group when the fastest variant is chosen. The same bundle twice keeps one name."""
    parts = [_named_dir(r).absolute().parts for r in roots]
    depth = [1] * len(roots)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        clash = {i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])}
        clash = {i for i in clash if any(parts[j] != parts[i] for j, n in enumerate(names) if n == names[i])}
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def _bundle(root: Path, runtimes: tuple[str, ...] | None = None, prefix: str | None = None) -> list[Model]:
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise UserError(
            f"{root} is not a bundle (no meta.json); pass a bundle directory made by `edgeprune export` or .onnx files."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{meta_path} is not valid JSON ({e}); re-run `edgeprune export`.") from None
    models = meta.get("models") if isinstance(meta, dict) else None
    if not models or not all(isinstance(m, dict) and m.get("name") and m.get("file") for m in models):
        raise UserError(f"{meta_path} lists no models (each needs a name and a file); re-run `edgeprune export`.")
    run_dir = root.parent if (root.parent / "config.json").is_file() else None
    prefix = prefix or _named_dir(root).name
    changed = set(changed_files(root) or ())
    model_files = {str(m["file"]) for m in models} | {companion(str(m["file"])) for m in models}
    if changed - model_files:
        raise UserError(
            f"{', '.join(sorted(changed - model_files))} in {root} no longer match {MANIFEST} (changed or damaged "
            "since export); copy the bundle again or re-run `edgeprune export`."
        )
    eval_path = root / meta["eval"] if meta.get("eval") else None
    if eval_path is not None and not eval_path.is_file():
        eval_path = None  # benchmarked without accuracy; the row's eval_n stays null
    eval_x = _eval_header(eval_path) if eval_path is not None else None
    out = []
    for m, runtime in _entries(models, runtimes):
        path = root / m["file"]
        source = root / m["source"] if m.get("source") else None
        problem = None if path.is_file() else f"{m['file']} is listed in meta.json but missing"
        if runtime not in RUNTIMES:
            problem = f"{m['file']} is for the runtime {runtime!r}, which this edgeprune does not know"
        if m.get("precision") not in (None, *PRECISIONS):
            problem = f"{m['name']} asks for the precision {m['precision']!r}, which this edgeprune does not know"
        onnx = path.suffix == ".onnx"
        if problem is None and onnx:
            bad = check_model(path)
            problem = f"{m['file']} is not a valid ONNX model: {bad}" if bad else None
        if problem is None and not onnx and not (root / companion(m["file"])).is_file():
            problem = f"{companion(m['file'])} (the weights of {m['file']}) is missing"
        if problem is None and m["file"] in changed:
            problem = f"{m['file']} does not match {MANIFEST} (changed or damaged since export)"
        if problem is None and eval_x is not None and onnx:
            _check_fits(path, eval_path, eval_x)
        own = str(m.get("runtime") or DEFAULT_RUNTIME)
        shown = str(m["name"])
        if runtime != own and any(o["name"] == m["name"] and o.get("runtime") == runtime for o in models):
            shown += f"({m['file']})"  # onnxruntime's int8 file on OpenVINO, beside OpenVINO's own int8
        name = f"{prefix}/{shown}" + ("" if runtime == DEFAULT_RUNTIME else f"@{runtime}")
        out.append(
            Model(
                name=name,
                variant=str(m["name"]),
                path=path,
                eval=eval_path,
                meta=meta,
                run_dir=run_dir,
                problem=problem,
                runtime=runtime,
                source=source,
                precision=m.get("precision") if runtime == own else None,
            )
        )
    for runtime in runtimes or ():  # asked for, but nothing in this bundle runs on it: a row that says so
        if not any(m.runtime == runtime for m in out):
            out.append(
                Model(
                    name=f"{prefix}@{runtime}",
                    variant="-",
                    path=root / "meta.json",
                    meta=meta,
                    runtime=runtime,
                    skip=f"the bundle has no {runtime} model: re-export with `edgeprune export --runtimes {runtime}` "
                    "(an export that made one and refused it says why in the run's export/parity.json)",
                )
            )
    return out


def _entries(models: list[dict], runtimes: tuple[str, ...] | None) -> list[tuple[dict, str]]:
    """(meta.json entry, runtime) pairs to measure: every listed entry on its runtime (onnxruntime when
    it names none); with `runtimes`, only those, and each ONNX file also on every chosen runtime that
    reads ONNX and is not listed for it."""
    listed = [(m, str(m.get("runtime") or DEFAULT_RUNTIME)) for m in models]
    if runtimes is None:
        return listed
    out = [(m, r) for m, r in listed if r in runtimes]
    have = {(m["file"], r) for m, r in listed}
    for m, r in listed:
        if r == DEFAULT_RUNTIME and str(m["file"]).endswith(".onnx"):
            for other in runtimes:
                if (
                    other != DEFAULT_RUNTIME
                    and (m["file"], other) not in have
                    and RUNTIMES[other].reads(Path(m["file"]))
                ):
                    out.append((m, other))
                    have.add((m["file"], other))
    return out


def _eval_header(path: Path) -> tuple[tuple, str]:
    """(shape, dtype) of eval.npz's `x`, read from the array headers only (the data stays on disk); a
    UserError naming the file when it is not the numeric x and y arrays that export writes."""
    fix = "re-run `edgeprune export` to write it again, or copy the bundle again"
    try:
        with zipfile.ZipFile(path) as zf:
            headers = {}
            for key in ("x", "y"):
                with zf.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                    headers[key] = (shape, dtype)
    except KeyError as e:
        raise UserError(f"{path} has no array {e} (it needs x and y); {fix}.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable .npz file ({' '.join(str(e).split())[:120]}); {fix}.") from None
    for key, (_, dtype) in headers.items():
        if dtype.hasobject or dtype.kind not in "biuf":
            kind = "an object array" if dtype.hasobject else f"a {dtype} array"
            raise UserError(
                f"{path} holds {key} as {kind}, which bench does not load (an object array could run code); "
                f"{key} must be numeric: {fix}."
            )
    (x_shape, x_dtype), (y_shape, _) = headers["x"], headers["y"]
    if not x_shape or len(y_shape) < 1 or x_shape[0] != y_shape[0]:
        raise UserError(f"{path} holds x of shape {x_shape} but y of shape {y_shape} (one label per example); {fix}.")
    return x_shape, str(x_dtype)


def _check_fits(model: Path, eval_path: Path, eval_x: tuple[tuple, str]) -> None:
    """The bundle's eval examples have the shape its model takes (fixed axes; the batch and any
    symbolic axis are free); else a UserError, before any worker starts."""
    shapes = input_shapes(model)
    if not shapes or len(shapes) != 1:
        return  # several inputs are fed synthetic data; an unreadable file fails its row as before
    (name, dims), (x_shape, _) = next(iter(shapes.items())), eval_x
    example = tuple(x_shape[1:])
    fits = len(example) == len(dims) - 1 and all(d is None or d == e for d, e in zip(dims[1:], example))
    if not fits:
        declared = "x".join("?" if d is None else str(d) for d in dims[1:])
        raise UserError(
            f"{eval_path} holds examples of shape {'x'.join(map(str, example))} but {model.name}'s input "
            f"'{name}' takes {declared}; the model and its eval data are from different exports: re-run "
            "`edgeprune export`, or copy the whole bundle again."
        )


def _file(path: Path, runtimes: tuple[str, ...] | None = None) -> list[Model]:
    bad = check_model(path)
    if bad:
        raise UserError(f"{path} is not a valid ONNX model: {bad}; re-export it.")
    out = []
    for runtime in runtimes or (DEFAULT_RUNTIME,):
        if RUNTIMES[runtime].reads(path):
            name = path.stem if runtime == DEFAULT_RUNTIME else f"{path.stem}@{runtime}"
            out.append(Model(name=name, variant=path.stem, path=path, runtime=runtime))
    if not out:
        raise UserError(
            f"none of --runtime {','.join(runtimes or ())} reads {path.name}; ncnn runs the files `edgeprune export "
            "--runtimes ncnn` puts in a bundle: pass the bundle, or add onnxruntime or openvino."
        )
    return out


def discover(paths: list[Path], runtimes: tuple[str, ...] | None = None) -> list[Model]:
    """Every model named by `paths`, in order, on each runtime (`runtimes`: the chosen ones; None: what
    each bundle lists, onnxruntime for .onnx files); a UserError for input that cannot be benchmarked."""
    if not paths:
        raise UserError("give at least one .onnx file or bundle directory to benchmark.")
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"{p} does not exist; pass an .onnx file or a bundle directory.")
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    prefix = dict(zip(map(str, roots), _prefixes(roots)))
    models: list[Model] = []
    for p in map(Path, paths):
        models.extend(_bundle(p, runtimes, prefix[str(p)]) if p.is_dir() else _file(p, runtimes))
    seen: dict[str, int] = {}
    unique = []
    for m in models:  # two files called model.onnx must still be told apart
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m = replace(m, name=f"{m.name}#{seen[m.name]}")
        unique.append(m)
    return unique
