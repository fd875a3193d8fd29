"""What `edgeprune datasets --dataset X` shows: classes and their counts per split, where the data
was found, how it is read, and what it takes in memory. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgeprune.data import own, sources
from edgeprune.data.memory import human
from edgeprune.data.registry import find_local, registry_spec


def describe(name: str, options=None, data_dir: Optional[Path] = None, seed: int = 0) -> dict:
    """Plain data: name, task, where, labels with train/test counts, and how the data is read."""
    spec = registry_spec(name, options)
    if spec is not None:
        local = find_local(spec, data_dir)
        out = _base(spec, str(local) if local else f"not local (hub: {spec.hf_id})")
        out["label_order"] = "the registry's"
        if local:
            raw = sources.read_local(spec, local)
            out["counts"] = _counts(spec.labels, raw.train.y, raw.test.y)
            out["test"] = f"the {spec.test_split} split"
        return out
    index = own.resolve(name, options)
    spec = index.spec
    train, test = own.split_parts(index, seed)  # carved counts per class do not depend on the seed
    out = _base(spec, spec.ref)
    meta = own.input_meta(spec)
    out.update(kind=spec.kind, counts=_counts(spec.labels, train.y, test.y), **meta)
    out["test"] = meta["source"]["test"]
    if spec.columns:
        out["columns"] = f"{spec.task} '{spec.columns[0]}', label '{spec.columns[1]}'"
    n = len(train.y) + len(test.y)
    if spec.task == "image":
        c, h, w = spec.image_shape
        pre = meta["preprocessing"]
        out["reading"] = f"{pre['color']}, {h}x{w}" + (f", resized: {pre['resize']}" if pre["resize"] else "")
        out["memory"] = f"{human(n * c * h * w)} as uint8 (N*C*H*W = {n:,} x {c}x{h}x{w} bytes)"
    else:
        out["memory"] = f"{human(n * 256 * 8)} of token ids at --max-len 256 (N*T*8 = {n:,} x 256 x 8 bytes)"
    return out


def _base(spec, where: str) -> dict:
    shape = "x".join(str(v) for v in spec.image_shape[1:]) + f"x{spec.image_shape[0]}" if spec.image_shape else ""
    return {
        "name": spec.name,
        "dataset": spec.id,
        "task": f"image {shape}" if shape else spec.task,
        "num_classes": spec.num_classes,
        "found": where,
        "labels": list(spec.labels),
    }


def _counts(labels, y_train: np.ndarray, y_test: np.ndarray) -> list[dict]:
    k = len(labels)
    tr = np.bincount(y_train, minlength=k)
    te = np.bincount(y_test, minlength=k)
    return [{"index": i, "label": labels[i], "train": int(tr[i]), "test": int(te[i])} for i in range(k)]
