"""Tables of your own data: CSV / Parquet / JSONL files read into columns, the text, image and label
columns picked, labels turned into class indices. Torch-free."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgeprune.errors import UserError

SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
TEXT_COLUMNS = ("text", "sentence")
IMAGE_COLUMNS = ("image", "img", "image_path", "path", "file", "filename")
LABEL_COLUMN = "label"
INT_RE = re.compile(r"[+-]?\d+")

Columns = dict[str, list]


def read_table(path: Path) -> Columns:
    """The columns of a CSV (UTF-8, header row), Parquet or JSON-lines file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path).to_pydict()
        elif suffix in (".jsonl", ".ndjson"):
            table = _read_jsonl(path)
        else:
            table = _read_csv(path)
    except UserError:
        raise
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
    except Exception as e:  # pyarrow and csv raise many kinds
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"{path} could not be read as a {suffix.lstrip('.') or 'CSV'} table ({type(e).__name__}: {first}); "
            "fix or re-export the file."
        ) from None
    if not table or not any(len(v) for v in table.values()):
        raise UserError(f"{path} holds no rows; it needs a header (column names) and at least one example per row.")
    return table


def _read_csv(path: Path) -> Columns:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents (reviews) exceed the 128 KB default
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = [n for n in (reader.fieldnames or []) if n is not None]
        rows = list(reader)
    return {n: [r.get(n) for r in rows] for n in names}


def _read_jsonl(path: Path) -> Columns:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {number} is not valid JSON ({e.msg}); fix that line.") from None
            if not isinstance(row, dict):
                raise UserError(f"{path} line {number} is not a JSON object; write one {{column: value}} per line.")
            rows.append(row)
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {n: [r.get(n) for r in rows] for n in names}


def pick_columns(columns: Sequence[str], where: str, text_column, label_column, image_column) -> tuple[str, str, str]:
    """(task, input column, label column): the flags when given, else the usual names."""
    cols = list(columns)
    listed = ", ".join(cols) if cols else "none"

    def need(col: str, flag: str) -> str:
        if col not in cols:
            raise UserError(f"{where} has no column '{col}' (its columns: {listed}); name the right one with {flag}.")
        return col

    label = need(label_column or LABEL_COLUMN, "--label-column")
    if image_column:
        return "image", need(image_column, "--image-column"), label
    if text_column:
        return "text", need(text_column, "--text-column"), label
    for task, names in (("text", TEXT_COLUMNS), ("image", IMAGE_COLUMNS)):
        found = next((c for c in names if c in cols), None)
        if found:
            return task, found, label
    raise UserError(
        f"{where} has no text column ({' or '.join(TEXT_COLUMNS)}) nor image column ({' or '.join(IMAGE_COLUMNS[:3])}) "
        f"(its columns: {listed}); name one with --text-column or --image-column."
    )


def texts(values: list, where: str, column: str) -> list[str]:
    out = []
    for i, v in enumerate(values):
        if v is None or not str(v).strip():
            raise UserError(
                f"{where} row {i + 1} has an empty text in column '{column}'; fill it in or remove the row."
            )
        out.append(str(v))
    return out


def _label_values(values: list, where: str, column: str) -> tuple[list, bool]:
    """The labels as Python values, and whether all of them are integers."""
    out, integer = [], True
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = v.strip()
        if v is None or v == "" or (isinstance(v, float) and np.isnan(v)):
            raise UserError(f"{where} row {i + 1} has no label in column '{column}'; fill it in or remove the row.")
        if isinstance(v, (bool, np.bool_)):
            v = int(v)
        if isinstance(v, (int, np.integer)) or (isinstance(v, str) and INT_RE.fullmatch(v)):
            v = int(v)
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        elif isinstance(v, (float, np.floating)):
            raise UserError(
                f"{where} row {i + 1} has the label {v} in column '{column}'; labels must be integers or names."
            )
        else:
            v, integer = str(v), False
        out.append(v)
    if not integer:
        out = [str(v) for v in out]
    return out, integer


def encode_labels(
    train: list,
    test: Optional[list],
    where: str,
    test_where: str,
    column: str,
    names: Optional[Sequence[str]] = None,
) -> tuple[tuple[str, ...], str, np.ndarray, Optional[np.ndarray]]:
    """(label names, how their order was found, train ids, test ids). Names given (a hub ClassLabel)
    keep their order; integer labels are class indices as given (0..K-1, every one seen in training);
    string labels are sorted. A test label never seen in training is an error."""
    tr, integer = _label_values(train, where, column)
    te, te_integer = _label_values(test, test_where, column) if test is not None else (None, integer)
    if names is not None:
        labels, order = tuple(str(n) for n in names), "the dataset's own class names, in its order"
        if te is not None and any(v < 0 for v in te):
            raise UserError(
                f"the test split {test_where} has no labels (-1: hidden); pass --split with a labelled split, "
                "e.g. --split train,validation."
            )
        ytr = np.asarray(tr, dtype=np.int64)
    elif integer and te_integer:
        bad = next((v for v in tr + (te or []) if v < 0), None)
        if bad is not None:
            raise UserError(
                f"{where} has the label {bad} in column '{column}'; integer labels are class indices 0, 1, 2, ... "
                "so renumber them from 0 or write them as names."
            )
        k = max(tr) + 1
        missing = sorted(set(range(k)) - set(tr))
        if missing:
            raise UserError(
                f"integer labels are class indices, but class {missing[0]} never occurs in {where} (labels "
                f"{min(tr)}..{max(tr)}); number the classes 0..K-1 without gaps, or write the labels as names."
            )
        labels, order = tuple(str(i) for i in range(k)), "integer labels as given (class i is label i)"
        ytr = np.asarray(tr, dtype=np.int64)
    else:
        tr, te = [str(v) for v in tr], None if te is None else [str(v) for v in te]
        labels, order = tuple(sorted(set(tr))), "the label strings, sorted"
        index = {name: i for i, name in enumerate(labels)}
        ytr = np.asarray([index[v] for v in tr], dtype=np.int64)
    check_two_classes(ytr, labels, f"the label column '{column}' of {where}")
    yte = None
    if te is not None:
        index = {name: i for i, name in enumerate(labels)}
        ids = [v if isinstance(v, int) and names is not None else index.get(str(v), -1) for v in te]
        seen = set(ytr.tolist())
        unseen = sorted({str(v) for v, i in zip(te, ids) if i < 0 or i >= len(labels) or i not in seen})
        if unseen:
            raise unseen_classes(test_where, unseen)
        yte = np.asarray(ids, dtype=np.int64)
    return labels, order, ytr, yte


def check_two_classes(y: np.ndarray, labels: Sequence[str], what: str) -> None:
    present = np.unique(y)
    if len(present) < 2:
        only = labels[int(present[0])] if len(present) else "none"
        raise UserError(f"{what} holds one class only ('{only}'); add examples of at least one other class.")


def unseen_classes(test_where: str, unseen: Sequence[str]) -> UserError:
    shown = ", ".join(f"'{u}'" for u in list(unseen)[:5]) + (", ..." if len(unseen) > 5 else "")
    return UserError(
        f"the test split {test_where} has classes never seen in training ({shown}); "
        "add training examples of them or remove them from the test split."
    )
