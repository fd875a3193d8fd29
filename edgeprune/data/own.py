"""Your own data as a dataset spec plus its source: an image folder, a table file or directory
(CSV / Parquet / JSONL), or a Hugging Face hub id (hf:owner/name[:config]).

resolve() finds what the spec needs (class names, image headers, table columns) without decoding
an image; read() carves the test split (when there is none) and shuffles with the seed, then
decodes. Labels come from the data: sorted class folder names, sorted label strings, integer
labels as given, or a hub dataset's own class names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from edgeprune.data import images, memory, tables
from edgeprune.data.options import DataOptions, coerce
from edgeprune.data.sources import RawData, RawSplit
from edgeprune.data.spec import DatasetSpec
from edgeprune.errors import DataNotFound, UserError

HUB_PREFIX = "hf:"
TEST_NAMES = ("test", "validation", "val", "valid")
SHARD_RE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")  # the hub's parquet export: train-00000-of-00001
FOLDER_ORDER = "the class sub-folder names, sorted"
CARVED = ""  # DatasetSpec.test_from when the test split is carved from the training data


def looks_like_path(name: str) -> bool:
    return any(s in name for s in ("/", os.sep)) or name.startswith((".", "~")) or _is_table_file(Path(name))


def is_own(name: str) -> bool:
    return name.startswith(HUB_PREFIX) or looks_like_path(name) or Path(name).exists()


def _is_table_file(p: Path) -> bool:
    return p.suffix.lower() in tables.SUFFIXES


@dataclass
class Part:
    """One split before decoding: image items (paths, PIL images, hub dicts) or texts, and labels."""

    x: list
    y: np.ndarray
    where: list[str]  # per example, where it came from (for messages)

    def take(self, idx) -> "Part":
        idx = np.asarray(idx, dtype=np.int64)
        return Part([self.x[i] for i in idx], self.y[idx], [self.where[i] for i in idx])


@dataclass
class Index:
    spec: DatasetSpec
    train: Part
    test: Optional[Part]  # None: carved from train by read()


# ---------------------------------------------------------------- resolve: what the data holds


def resolve(ref: str, options=None) -> Index:
    """Find the spec and the examples of your own data at `ref` (a path or hf:owner/name)."""
    opts = coerce(options)
    if ref.startswith(HUB_PREFIX):
        return hub_index(ref, load_hub(ref, opts), opts)
    path = Path(ref).expanduser()
    if not path.exists():
        raise UserError(
            f"{ref} does not exist; pass an image folder, a .csv/.parquet/.jsonl file, a directory of them, "
            "or hf:owner/name."
        )
    path = path.resolve()
    if path.is_file():
        if not _is_table_file(path):
            raise UserError(
                f"{path} is not a table; pass a .csv, .parquet or .jsonl file, or a folder of class sub-folders."
            )
        if opts.split:
            raise UserError(
                f"--split names the splits of a folder or a hub dataset, but {path} is one file; drop --split "
                "(its test split is carved, see --test-fraction) or pass the folder of split files."
            )
        return _table_index(path, [("train", [path])], opts)
    splits = _table_splits(path)
    train_name = opts.split[0] if opts.split else "train"
    if train_name in splits:
        chosen = _pick(list(splits), opts, str(path), "table file")
        return _table_index(path, [(s, splits[s]) for s in chosen], opts)
    if not _subdirs(path) and splits:
        raise UserError(
            f"{path} holds tables ({', '.join(sorted(splits))}) but none for training; name the files "
            "train.csv and test.csv (or .parquet/.jsonl), pass --split TRAIN,TEST, or pass one file itself."
        )
    return _folder_index(path, opts)


def _pick(available: list[str], opts: DataOptions, where: str, what: str) -> list[str]:
    """[train] or [train, test]: the --split names, else train and the first of test/validation/val."""
    if opts.split:
        for s in opts.split:
            if s not in available:
                raise UserError(
                    f"{where} has no {what} '{s}' (it has: {', '.join(sorted(available))}); "
                    "pass --split with those names."
                )
        return list(opts.split)
    if "train" not in available:
        raise UserError(
            f"{where} has no {what} 'train' (it has: {', '.join(sorted(available)) or 'none'}); "
            "pass --split TRAIN,TEST with those names."
        )
    test = next((t for t in TEST_NAMES if t in available), None)
    return ["train"] + ([test] if test else [])


def _spec(path_or_ref: str, name: str, kind: str, task: str, labels, order, opts, test_from, **kw) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        task=task,
        labels=tuple(labels),
        ref=path_or_ref,
        kind=kind,
        label_order=order,
        test_from=test_from,
        options=opts,
        default_model="cnn" if task == "image" else "bilstm",
        **kw,
    )


def _image_shape(parts: list[Part], opts: DataOptions, where: str) -> tuple[int, int, int]:
    probes = [images.probe(x, w) for part in parts for x, w in zip(part.x, part.where)]
    return images.shape_of(probes, opts.image_size, opts.channels, where)


# ---------------------------------------------------------------- image folders


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(root: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in _subdirs(root):
        files = sorted(
            p
            for p in d.rglob("*")
            if p.is_file() and p.suffix.lower() in images.SUFFIXES and not any(s.startswith(".") for s in p.parts)
        )
        if not files:
            raise UserError(
                f"{d} holds no PNG or JPEG images; add the images of class '{d.name}' or remove the folder."
            )
        classes[d.name] = files
    if not classes:
        raise UserError(
            f"{root} has no class sub-folders; put each class's PNG/JPEG images in its own sub-folder, "
            f"{root}/<class name>/."
        )
    return classes


def _folder_part(classes: dict[str, list[Path]], labels: tuple[str, ...]) -> Part:
    index = {c: i for i, c in enumerate(labels)}
    files = [f for c in classes for f in classes[c]]
    y = np.asarray([index[c] for c in classes for _ in classes[c]], dtype=np.int64)
    return Part(files, y, [str(f) for f in files])


def _folder_index(path: Path, opts: DataOptions) -> Index:
    names = [d.name for d in _subdirs(path)]
    if opts.split or "train" in names:
        chosen = _pick(names, opts, str(path), "sub-folder")
        roots = [path / s for s in chosen]
    else:
        roots = [path]
    train_classes = _class_files(roots[0])
    labels = tuple(sorted(train_classes))
    if len(labels) < 2:
        raise UserError(
            f"{roots[0]} has one class sub-folder only ('{labels[0]}'); add a sub-folder of images for "
            "each other class (at least two)."
        )
    train = _folder_part(train_classes, labels)
    test = None
    if len(roots) > 1:
        test_classes = _class_files(roots[1])
        unseen = sorted(set(test_classes) - set(labels))
        if unseen:
            raise tables.unseen_classes(str(roots[1]), unseen)
        test = _folder_part(test_classes, labels)
    shape = _image_shape([train] + ([test] if test else []), opts, str(path))
    test_from = f"{roots[1].name}/" if test else CARVED
    spec = _spec(str(path), path.name, "folder", "image", labels, FOLDER_ORDER, opts, test_from, image_shape=shape)
    return Index(spec, train, test)


# ---------------------------------------------------------------- tables (files or hub splits)


@dataclass
class TablePart:
    """One split of a table: its columns, a getter for one column's values, where paths start."""

    where: str
    columns: list[str]
    get: Callable[[str], list]
    base: Optional[Path] = None  # image paths are relative to this folder (a file's own)


def _table_splits(d: Path) -> dict[str, list[Path]]:
    splits: dict[str, list[Path]] = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and _is_table_file(p):
            m = SHARD_RE.match(p.stem)
            splits.setdefault(m.group("split") if m else p.stem, []).append(p)
    return splits


def _file_part(files: list[Path]) -> TablePart:
    cols: dict[str, list] = {}
    for f in files:  # shards of one split, in name order
        t = tables.read_table(f)
        if cols and list(t) != list(cols):
            raise UserError(f"{f} has columns {', '.join(t)} but {files[0]} has {', '.join(cols)}; make them match.")
        for k, v in t.items():
            cols.setdefault(k, []).extend(v)
    where = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{files[0].name} (+{len(files) - 1} shards)"
    return TablePart(where, list(cols), lambda c: cols[c], files[0].parent)


def _table_index(path: Path, splits: list[tuple[str, list[Path]]], opts: DataOptions) -> Index:
    parts = [_file_part(files) for _, files in splits]
    name = path.stem if path.is_file() else path.name
    test_from = splits[1][1][0].name if len(splits) > 1 else CARVED
    return _columns_index(str(path), name, "table", parts, opts, test_from)


def _columns_index(
    ref: str, name: str, kind: str, parts: list[TablePart], opts: DataOptions, test_from: str, names=None
) -> Index:
    train_t, test_t = parts[0], (parts[1] if len(parts) > 1 else None)
    task, xcol, lcol = tables.pick_columns(
        train_t.columns, train_t.where, opts.text_column, opts.label_column, opts.image_column
    )
    if test_t is not None:  # the same columns, by the names found in train
        tables.pick_columns(
            test_t.columns,
            test_t.where,
            xcol if task == "text" else None,
            lcol,
            xcol if task == "image" else None,
        )
    labels, order, ytr, yte = tables.encode_labels(
        list(train_t.get(lcol)),
        list(test_t.get(lcol)) if test_t else None,
        train_t.where,
        test_t.where if test_t else "",
        lcol,
        names,
    )
    built = []
    for t, y in ((train_t, ytr), (test_t, yte)):
        if t is None:
            continue
        values = list(t.get(xcol))
        if task == "text":
            wheres = [f"{t.where} row {i + 1}" for i in range(len(y))]
            built.append(Part(tables.texts(values, t.where, xcol), y, wheres))
        else:
            items = [_image_item(v, t, i, xcol) for i, v in enumerate(values)]
            wheres = [str(v) if isinstance(v, Path) else f"{t.where} row {i + 1}" for i, v in enumerate(items)]
            built.append(Part(items, y, wheres))
    train, test = built[0], (built[1] if len(built) > 1 else None)
    extra = {"columns": (xcol, lcol)}
    if task == "image":
        extra["image_shape"] = _image_shape(built, opts, ref)
    return Index(_spec(ref, name, kind, task, labels, order, opts, test_from, **extra), train, test)


def _image_item(value, t: TablePart, i: int, column: str):
    """A path (relative to the table's folder) becomes a checked Path; hub images pass as they are."""
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise UserError(
                f"{t.where} row {i + 1} has no image path in column '{column}'; fill it in or remove the row."
            )
        p = Path(value).expanduser()
        p = p if p.is_absolute() or t.base is None else t.base / p
        if not p.is_file():
            raise UserError(
                f"{t.where} row {i + 1} names the image {value}, which is not a file; fix the path "
                f"(relative paths start at {t.base})."
            )
        return p
    if value is None:
        raise UserError(f"{t.where} row {i + 1} has no image in column '{column}'; fill it in or remove the row.")
    return value


# ---------------------------------------------------------------- the Hugging Face hub


def parse_hub(ref: str) -> tuple[str, Optional[str]]:
    """hf:owner/name[:config] -> (owner/name, config)."""
    hf_id, _, config = ref[len(HUB_PREFIX) :].partition(":")
    if not hf_id.strip():
        raise UserError(f"{ref!r} names no dataset; write hf:owner/name (or hf:owner/name:config).")
    return hf_id.strip(), (config.strip() or None)


def load_hub(ref: str, opts: DataOptions) -> dict:
    """The splits of a hub dataset ({name: datasets.Dataset}); offline and not cached: DataNotFound."""
    from edgeprune.data.sources import hub_reachable

    hf_id, config = parse_hub(ref)
    missing = (
        f"{ref} is not in the local Hugging Face cache and the hub is unreachable{{why}}; connect once to download "
        "it (it is cached after), or save it as files and pass that folder or table with --dataset."
    )
    try:
        import datasets as hf
    except ImportError:
        raise DataNotFound(f"{ref} needs the 'datasets' package; pip install 'edgeprune[train]'.") from None
    import logging

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    offline = not hub_reachable()
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # fail at once (or use the local HF cache) instead of retrying
        hf.config.HF_HUB_OFFLINE = True
    try:
        if opts.split:
            return {s: hf.load_dataset(hf_id, config, split=s) for s in opts.split}
        return dict(hf.load_dataset(hf_id, config))
    except Exception as e:  # ConnectionError, DatasetNotFoundError, ValueError (bad config / split), ...
        if offline:
            raise DataNotFound(missing.format(why=f" ({type(e).__name__})")) from None
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{ref} could not be loaded from the Hugging Face hub ({type(e).__name__}: {first}); check the id "
            "(hf:owner/name or hf:owner/name:config) and --split."
        ) from None


def hub_index(ref: str, splits: Mapping[str, object], opts: DataOptions) -> Index:
    """An index over hub splits ({name: datasets.Dataset}, e.g. a DatasetDict): columns mapped by
    the same flags as a table; a ClassLabel column keeps the dataset's class names and order."""
    import datasets as hf

    chosen = _pick(list(splits), opts, ref, "split")
    parts = []
    for s in chosen:
        ds = splits[s]
        for col, feature in ds.features.items():
            if isinstance(feature, hf.Image) and feature.decode:
                ds = ds.cast_column(col, hf.Image(decode=False))  # decode later, one image at a time
        parts.append(TablePart(f"{ref} ({s})", list(ds.column_names), lambda c, ds=ds: list(ds[c])))
    task, _, lcol = tables.pick_columns(
        parts[0].columns, parts[0].where, opts.text_column, opts.label_column, opts.image_column
    )
    feature = splits[chosen[0]].features.get(lcol)
    names = list(feature.names) if isinstance(feature, hf.ClassLabel) else None
    test_from = f"split {chosen[1]}" if len(chosen) > 1 else CARVED
    return _columns_index(ref, parse_hub(ref)[0].replace("/", "-"), "hub", parts, opts, test_from, names)


# ---------------------------------------------------------------- read: splits, decoded


def carve(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Test indices: round(fraction * n) examples of each class drawn at random, each class keeping
    at least one for training."""
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = min(len(members) - 1, int(np.floor(len(members) * fraction + 0.5)))
        picked.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def split_parts(index: Index, seed: int) -> tuple[Part, Part]:
    """(train, test) in a shuffled order (so --limit takes a random subset); carved when needed."""
    train, test = index.train, index.test
    if test is None:
        fraction = index.spec.options.carve_fraction
        test_idx = carve(train.y, fraction, np.random.default_rng([seed, 1]))
        if not len(test_idx):
            raise UserError(
                f"{index.spec.ref} has too few examples ({len(train.y)}) to carve a test split at "
                f"--test-fraction {fraction:g}; add examples, raise --test-fraction or give a test split."
            )
        keep = np.setdiff1d(np.arange(len(train.y)), test_idx)
        train, test = train.take(keep), train.take(test_idx)
    rng = np.random.default_rng([seed, 2])
    return train.take(rng.permutation(len(train.y))), test.take(rng.permutation(len(test.y)))


def read(index: Index, seed: int = 0, limit: Optional[int] = None) -> RawData:
    """The splits as arrays (images uint8 [N, C, H, W]) or texts; only the first `limit` training
    examples of the shuffled order are decoded."""
    spec = index.spec
    train, test = split_parts(index, seed)
    if limit is not None:
        train = train.take(np.arange(min(limit, len(train.y))))
    if spec.task == "text":
        return RawData(RawSplit(train.x, train.y), RawSplit(test.x, test.y), spec.ref)
    c, h, w = spec.image_shape
    n = len(train.y) + len(test.y)
    memory.check_fits(
        n * c * h * w,
        f"the {n:,} images of {spec.ref} at {c}x{h}x{w} (N*C*H*W bytes as uint8)",
        "pass a smaller --image-size (or --channels 1), or train on a subset with --limit N",
    )
    return RawData(
        RawSplit(images.decode_all(train.x, train.where, spec.image_shape), train.y),
        RawSplit(images.decode_all(test.x, test.where, spec.image_shape), test.y),
        spec.ref,
    )


def input_meta(spec: DatasetSpec) -> dict:
    """What a run, a bundle and an ONNX file record about your own data beyond labels and shape."""
    opts = spec.options or DataOptions()
    test = spec.test_from or f"carved: {opts.carve_fraction:.0%} of each class, drawn with the run's seed"
    source = {"kind": spec.kind, "ref": spec.ref, "test": test}
    if spec.columns:
        column = "text_column" if spec.task == "text" else "image_column"
        source.update({column: spec.columns[0], "label_column": spec.columns[1]})
    meta = {"label_order": spec.label_order, "source": source}
    if spec.task == "image":
        c, h, w = spec.image_shape
        meta["preprocessing"] = {
            "color": "grayscale" if c == 1 else "RGB",
            "image_size": [h, w],
            "resize": f"{images.RESAMPLE}, stretched (no crop)" if opts.image_size else None,
            "layout": "NCHW",
        }
    return meta
