"""The device bundle: model file(s), meta.json, vocab, eval.npz and a sha256 manifest, built in a
temporary directory and renamed into place so a failure never leaves a partial bundle."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from edgeprune.data.tokenizer import FILE as TOKENIZER_FILE
from edgeprune.data.tokenizer import IDS, MASK
from edgeprune.manifest import write_manifest
from edgeprune.run import atomic_write_bytes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a pid we can judge: leave its files alone
    return True


def sweep_stale(parent: Path, prefix: str) -> None:
    """Remove `<prefix><pid>-*` / `<prefix><pid>` entries of `parent` left by a process that died
    without cleaning up (killed mid-export): their pid runs no more."""
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def staging_dir(final: Path) -> Path:
    """An empty directory beside `final` (same filesystem, so the final rename is atomic). Staging
    and set-aside directories of an export that was killed are swept first."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):
        sweep_stale(final.parent, f".{final.name}.{kind}-")
    try:
        staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    except OSError as e:  # name the folder the user knows, not the temporary one
        raise OSError(e.errno, e.strerror, str(final)) from e
    staged.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be copied and shared
    return staged


def swap_into_place(staged: Path, final: Path) -> None:
    """Replace `final` with `staged`: the old directory moves aside first, then is deleted."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bundle(
    root: Path,
    meta: dict,
    models: dict[str, Path],
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    vocab: dict | None,
    tokenizer: str | None = None,
) -> list[str]:
    """Fill the (empty, staged) bundle directory `root`; returns the file names written.

    `models` maps a bundle file name (model.onnx, model.int8.onnx) to the file to copy. `tokenizer`
    is a pretrained text model's tokenizer.json; its examples `eval_x` come packed [N, 2, T]
    (edgeprune.data.tokenizer) and are written as the two inputs: x (token ids) and attention_mask.
    """
    for name, src in models.items():
        shutil.copyfile(src, root / name)
    arrays = {"x": eval_x}
    if tokenizer is not None:
        arrays = {"x": eval_x[:, IDS], "attention_mask": eval_x[:, MASK]}
        (root / TOKENIZER_FILE).write_text(tokenizer)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, y=np.asarray(eval_y, dtype=np.int64))
    (root / "eval.npz").write_bytes(buf.getvalue())
    # Plain writes: the whole directory is staged and renamed into place at once.
    if vocab is not None:
        (root / "vocab.json").write_text(json.dumps(vocab) + "\n")
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_manifest(root)
    return sorted(p.name for p in root.iterdir())


def write_tar(bundle: Path, out: Path) -> None:
    """`out` (.tar.gz) holding the bundle as a top-level `bundle/` directory, written atomically."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(bundle.iterdir()):
            info = tar.gettarinfo(str(p), arcname=f"bundle/{p.name}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(p, "rb") as f:
                tar.addfile(info, f)
    atomic_write_bytes(out, buf.getvalue())
