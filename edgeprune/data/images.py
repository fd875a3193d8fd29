"""Images of your own data, read with Pillow: size and colour probed from the headers, then decoded,
converted (grayscale or RGB) and resized into one uint8 [N, C, H, W] array. Torch-free."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from edgeprune.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg")
# Modes with one colour channel (an alpha channel does not count as colour).
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
RESAMPLE = "bilinear"  # how images are resized to --image-size (stretched, not cropped)


@dataclass(frozen=True)
class Probe:
    where: str  # the file (or table row) the image came from, for messages
    size: tuple[int, int]  # H, W
    gray: bool


def _open(item):
    """A PIL image from a path, a PIL image, encoded bytes, a hub {"bytes", "path"} dict or an array."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    if isinstance(item, dict):
        item = item.get("bytes") or item.get("path")
    if isinstance(item, (bytes, bytearray)):
        return Image.open(io.BytesIO(item))
    if isinstance(item, np.ndarray):
        return Image.fromarray(item)
    return Image.open(item)


@contextlib.contextmanager
def _opened(item):
    """_open(item), closed afterwards when it was opened here: a header read for the probe leaves
    Pillow's file open until garbage collection (a ResourceWarning per image); an image the caller
    passed stays theirs."""
    im = _open(item)
    try:
        yield im
    finally:
        if im is not item:
            im.close()


def _unreadable(where: str, e: Exception) -> UserError:
    return UserError(f"{where} could not be read as an image ({type(e).__name__}); delete or replace that file.")


def probe(item, where: str) -> Probe:
    """Size and colour from the image header (no pixels decoded)."""
    try:
        with _opened(item) as im:
            w, h = im.size
            mode = im.mode
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        raise _unreadable(where, e) from None
    return Probe(where, (h, w), mode in GRAY_MODES)


def shape_of(probes: list[Probe], image_size, channels, where: str) -> tuple[int, int, int]:
    """C, H, W for the whole set: the flags when given, else what the data says."""
    c = channels or (1 if all(p.gray for p in probes) else 3)
    if image_size:
        return (c, *image_size)
    sizes = {}
    for p in probes:
        sizes.setdefault(p.size, p)
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise UserError(
            f"the images of {where} differ in size ({a[0]}x{a[1]} in {pa.where}, {b[0]}x{b[1]} in {pb.where}); "
            "pass --image-size N or HxW to resize them all to one size."
        )
    h, w = next(iter(sizes))
    return c, h, w


def decode(item, where: str, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as uint8 [C, H, W]: converted to grayscale (C=1) or RGB (C=3), resized when needed."""
    from PIL import Image

    c, h, w = shape
    try:
        with _opened(item) as im:
            if im.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits instead of clipping
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), "L")
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # a truncated file passes the header probe and fails here
        raise _unreadable(where, e) from None
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def decode_all(items: list, wheres: list[str], shape: tuple[int, int, int]) -> np.ndarray:
    out = np.empty((len(items), *shape), dtype=np.uint8)
    for i, (item, where) in enumerate(zip(items, wheres)):
        out[i] = decode(item, where, shape)
    return out


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of x / 255 over uint8 [N, C, H, W], summed exactly in integers (so a
    fresh process computes the very same numbers); a constant channel gets std 1."""
    n, c, h, w = x.shape
    total = np.zeros(c, dtype=np.int64)
    squares = np.zeros(c, dtype=np.int64)
    step = max(1, (1 << 22) // max(1, c * h * w))  # ~32 MB of int64 at a time
    for i in range(0, n, step):
        chunk = x[i : i + step].astype(np.int64)
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = max(1, n * h * w)
    mean = total / count
    var = np.maximum(squares / count - mean**2, 0.0)
    std = np.sqrt(var) / 255
    return (
        tuple(round(float(m) / 255, 6) for m in mean),
        tuple(round(float(s), 6) if s > 0 else 1.0 for s in std),
    )
