"""The flags that say how to read your own data (a folder, a table, a hub id), parsed and validated.

A run records them as given (config.json "data_options"), so export reads the data the same way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Optional

from edgeprune.errors import UserError

DEFAULT_TEST_FRACTION = 0.2
FLAGS = {
    "image_size": "--image-size",
    "channels": "--channels",
    "text_column": "--text-column",
    "label_column": "--label-column",
    "image_column": "--image-column",
    "split": "--split",
    "test_fraction": "--test-fraction",
}


@dataclass(frozen=True)
class DataOptions:
    image_size: Optional[tuple[int, int]] = None  # H, W; None: the images' own (equal) size
    channels: Optional[int] = None  # 1 or 3; None: 1 when every image is grayscale, else 3
    text_column: Optional[str] = None  # None: text, else sentence
    label_column: Optional[str] = None  # None: label
    image_column: Optional[str] = None  # image tables: paths relative to the table file
    split: Optional[tuple[str, ...]] = None  # (train, test) or (train,): names of folders, files or hub splits
    test_fraction: Optional[float] = None  # share of each class carved as test when there is no test split

    @property
    def carve_fraction(self) -> float:
        return DEFAULT_TEST_FRACTION if self.test_fraction is None else self.test_fraction

    def given(self) -> list[str]:
        """The flags that were set, as the user spells them."""
        return [FLAGS[f.name] for f in fields(self) if getattr(self, f.name) is not None]

    def to_dict(self) -> dict:
        """The flags that were set, JSON-ready (what config.json records)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "DataOptions":
        d = dict(d or {})
        unknown = sorted(set(d) - set(FLAGS))
        if unknown:
            raise UserError(f"unknown data option(s) {', '.join(unknown)}; the known ones are {', '.join(FLAGS)}.")
        return from_flags(**d)


def coerce(options) -> DataOptions:
    """A DataOptions from None, a dict (config.json) or a DataOptions."""
    return options if isinstance(options, DataOptions) else DataOptions.from_dict(options)


def parse_image_size(value) -> Optional[tuple[int, int]]:
    """'32' -> (32, 32), '24x32' -> (24, 32) (height x width); lists pass through."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        h, w = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(value))
        if not m:
            raise UserError(f"--image-size must be N or HxW (e.g. 32 or 24x32), got {value!r}.")
        h, w = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (1 <= int(h) <= 4096 and 1 <= int(w) <= 4096):
        raise UserError(f"--image-size must lie in 1..4096 per side, got {h}x{w}.")
    return int(h), int(w)


def parse_split(value) -> Optional[tuple[str, ...]]:
    """'train,test' -> ('train', 'test'); one name means the test split is carved from it."""
    if value is None:
        return None
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value)]
    if not 1 <= len(parts) <= 2 or not all(parts) or len(set(parts)) < len(parts):
        raise UserError(f"--split must be TRAIN,TEST (two different names) or TRAIN, e.g. train,test; got {value!r}.")
    return tuple(parts)


def from_flags(
    image_size=None,
    channels=None,
    text_column=None,
    label_column=None,
    image_column=None,
    split=None,
    test_fraction=None,
) -> DataOptions:
    """Validate the command-line flags; a UserError names the flag at fault."""
    if channels is not None and channels not in (1, 3):
        raise UserError(f"--channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction must lie strictly between 0 and 1, got {test_fraction}.")
    if text_column is not None and image_column is not None:
        raise UserError("--text-column and --image-column exclude each other; a table is text or images, pass one.")
    columns = {"--text-column": text_column, "--label-column": label_column, "--image-column": image_column}
    for flag, col in columns.items():
        if col is not None and not str(col).strip():
            raise UserError(f"{flag} must name a column, got an empty name.")
    return DataOptions(
        image_size=parse_image_size(image_size),
        channels=channels,
        text_column=text_column,
        label_column=label_column,
        image_column=image_column,
        split=parse_split(split),
        test_fraction=float(test_fraction) if test_fraction is not None else None,
    )
