"""Bad own data through the real `edgeprune` entry point in a fresh process: one sentence that
names the fix, exit code 2 (3: not found), no traceback, and an existing run left as it was."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import own_datafiles as odf
import pytest

REPO = Path(__file__).resolve().parents[1]
EDGEPRUNE = Path(sys.executable).parent / "edgeprune"


def cli(tmp_path, *args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    env.pop("EDGEPRUNE_DATA", None)
    return subprocess.run(
        [str(EDGEPRUNE), *args], capture_output=True, text=True, env=env, cwd=cwd or tmp_path, timeout=600
    )


def one_error(proc, code: int, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == code, out
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _no_class_folders(d: Path):
    from PIL import Image

    d.mkdir()
    Image.fromarray(odf.image_array(0)).save(d / "loose.png")
    return d, []


def _unreadable_image(d: Path):
    odf.write_image_folder(d, n=3)
    (d / "dog" / "broken.png").write_bytes(b"this is not a PNG")
    return d, []


def _missing_column(d: Path):
    return odf.write_csv(d / "reviews.csv", ["review", "sentiment"], odf.sentiment_rows(12)), [
        "--text-column",
        "body",
        "--label-column",
        "sentiment",
    ]


def _one_class(d: Path):
    return odf.write_csv(d / "t.csv", ["text", "label"], [[t, "pos"] for t, _ in odf.sentiment_rows(12)]), []


def _unseen_test_class(d: Path):
    odf.write_image_folder(d / "train", classes=("cat", "dog"), n=3)
    odf.write_image_folder(d / "test", classes=("cat", "dog", "eel"), n=2)
    return d, []


def _unseen_test_label(d: Path):
    rows = odf.sentiment_rows(12, classes=("bad", "good"))
    odf.write_csv(d / "t" / "train.csv", ["text", "label"], rows)
    odf.write_csv(d / "t" / "test.csv", ["text", "label"], rows[:3] + [["a fine film", "meh"]])
    return d / "t", []


def _not_json(d: Path):
    return odf.write_csv(d / "t.jsonl", ["text", "label"], odf.sentiment_rows(12)), []  # CSV content, named .jsonl


def _empty_text(d: Path):
    rows = odf.sentiment_rows(12)
    rows[1] = ("   ", rows[1][1])
    return odf.write_csv(d / "t.csv", ["text", "label"], rows), []


def _sizes_differ(d: Path):
    from PIL import Image

    odf.write_image_folder(d, n=3)
    Image.fromarray(odf.image_array(1, (20, 28))).save(d / "dog" / "wide.png")
    return d, []


CASES = {
    "no class sub-folders": (_no_class_folders, 2, ["has no class sub-folders", "in its own sub-folder"]),
    "unreadable image": (_unreadable_image, 2, ["broken.png could not be read as an image", "delete or replace"]),
    "CSV missing the named column": (
        _missing_column,
        2,
        ["has no column 'body' (its columns: review, sentiment)", "--text-column"],
    ),
    "label column with one class": (_one_class, 2, ["holds one class only ('pos')", "add examples of at least one"]),
    "test folder with an unseen class": (_unseen_test_class, 2, ["never seen in training ('eel')", "add training"]),
    "test table with an unseen label": (_unseen_test_label, 2, ["never seen in training ('meh')", "remove them"]),
    "empty text": (_empty_text, 2, ["row 2 has an empty text", "fill it in or remove the row"]),
    "not JSON": (_not_json, 2, ["line 1 is not valid JSON", "fix that line"]),
    "images of different sizes": (_sizes_differ, 2, ["differ in size", "pass --image-size"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_own_data_is_one_sentence_naming_the_fix(tmp_path, case):
    build, code, needles = CASES[case]
    path, flags = build(tmp_path / "data")
    one_error(cli(tmp_path, "datasets", "--dataset", str(path), *flags), code, str(path.name), *needles)


def test_train_refuses_a_missing_column_before_any_run_exists(tmp_path):
    path, flags = _missing_column(tmp_path / "data")
    proc = cli(tmp_path, "train", "--dataset", str(path), *flags, "--out", str(tmp_path / "run"), "--epochs", "1")
    one_error(proc, 2, "has no column 'body'", "--text-column")
    assert not (tmp_path / "run").exists()


def test_an_unreachable_hub_dataset_is_not_found(tmp_path):
    proc = cli(tmp_path, "datasets", "--dataset", "hf:nobody/nothing-here", "--split", "train,test")
    one_error(proc, 3, "hf:nobody/nothing-here is not in the local Hugging Face cache", "connect once")


def _digest(root: Path) -> dict:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_fresh_process_exports_from_the_recorded_path_and_bad_data_loses_nothing(tmp_path):
    from edgeprune.config import resolve_train_config
    from edgeprune.errors import UserError
    from edgeprune.export import export_run
    from edgeprune.train import train_run

    data = odf.write_image_folder(tmp_path / "pets", n=5, size=(16, 16))
    run = tmp_path / "runs" / "pets"
    cfg = resolve_train_config(dataset=str(data), out=run, epochs=1, batch_size=8, prune=False, threads=1, device="cpu")
    train_run(cfg, quiet=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli(tmp_path, "export", str(run), "--quantize", "none", cwd=elsewhere)  # the run's path, absolute
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((run / "bundle" / "meta.json").read_text())
    assert meta["labels"] == ["cat", "dog", "owl"] and meta["source"]["ref"] == str(data.resolve())

    before = _digest(run)
    (data / "owl" / "0.png").write_bytes(b"\x89PNG but not really")
    proc = cli(tmp_path, "train", "--dataset", str(data), "--out", str(run), "--resume", "--epochs", "1")
    one_error(proc, 2, "owl/0.png could not be read as an image", "delete or replace")
    with pytest.raises(UserError, match="owl/0.png could not be read as an image"):
        export_run(run, quantize="none")  # in-process: the exit code and the sentence are shown above
    assert _digest(run) == before
