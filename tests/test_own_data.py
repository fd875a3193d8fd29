"""Your own data: an image folder, CSV / JSONL / Parquet tables and hub datasets resolve to a spec
built from the data, train through `edgeprune train`, and export with their labels and
preprocessing in meta.json and the ONNX metadata."""

import json

import numpy as np
import onnx
import own_datafiles as odf
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from edgeprune.cli import app
from edgeprune.data import memory, own
from edgeprune.data.loader import load_data
from edgeprune.data.options import DataOptions, from_flags
from edgeprune.data.registry import get_spec
from edgeprune.errors import UserError
from edgeprune.export import export_run
from edgeprune.export.onnx_export import META_KEY
from edgeprune.train import train_run

runner = CliRunner()
FAST = ["--epochs", "2", "--threads", "1", "--device", "cpu", "--batch-size", "16"]


def _train(dataset, out, *flags):
    result = runner.invoke(app, ["train", "--dataset", str(dataset), "--out", str(out), *FAST, *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "config.json").read_text())


def _export(run):
    export_run(run, quantize="none", measure_latency=False)
    meta = json.loads((run / "bundle" / "meta.json").read_text())
    onnx_meta = json.loads(
        {p.key: p.value for p in onnx.load(str(run / "bundle" / "model.onnx")).metadata_props}[META_KEY]
    )
    return meta, onnx_meta


def _pixels(path, channels=3):
    a = np.asarray(Image.open(path).convert("RGB" if channels == 3 else "L"), dtype=np.float64)
    return a.transpose(2, 0, 1) if channels == 3 else a[None]


# ---------------------------------------------------------------- image folder


def test_image_folder_trains_the_cnn_and_exports_labels_and_its_own_normalization(tmp_path):
    data = tmp_path / "pets"
    odf.write_image_folder(data / "train", n=10)  # PNG and JPEG, 3 classes, 32x32 RGB
    odf.write_image_folder(data / "test", n=3, seed=1)
    saved = _train(data, tmp_path / "run")

    meta = saved["input"]
    assert saved["config"]["dataset"] == str(data.resolve())
    assert meta["labels"] == ["cat", "dog", "owl"] and meta["label_order"] == "the class sub-folder names, sorted"
    assert meta["input_shape"] == ["batch", 3, 32, 32] and meta["source"]["test"] == "test/"
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert model["arch"]["config"]["num_classes"] == 3 and model["arch"]["config"]["in_channels"] == 3

    # the normalization is the training split's (train/ less the validation share), computed a second way
    d = load_data(str(data), seed=0)
    files = sorted(int(_pixels(p).sum()) for p in (data / "train").rglob("*.*"))
    assert sorted(int(x.sum()) for x in torch.cat([d.train.x, d.val.x]).numpy().astype(np.int64)) == files
    pixels = d.train.x.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(meta["normalization"]["mean"], pixels.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(meta["normalization"]["std"], pixels.std(axis=(0, 2, 3)), atol=1e-6)

    bundle_meta, onnx_meta = _export(tmp_path / "run")
    for m in (bundle_meta, onnx_meta):
        assert m["labels"] == ["cat", "dog", "owl"] and m["normalization"] == meta["normalization"]
        assert m["preprocessing"] == {"color": "RGB", "image_size": [32, 32], "resize": None, "layout": "NCHW"}
        assert m["label_order"] == meta["label_order"] and m["source"]["ref"] == str(data.resolve())
    # eval.npz holds the 9 test/ images, normalized as meta.json says
    with np.load(tmp_path / "run" / "bundle" / "eval.npz") as z:
        x, y = z["x"], z["y"]
    mean = np.asarray(meta["normalization"]["mean"]).reshape(1, 3, 1, 1)
    std = np.asarray(meta["normalization"]["std"]).reshape(1, 3, 1, 1)
    raw = (x * std + mean) * 255
    assert np.abs(raw - np.round(raw)).max() < 1e-3  # whole pixel values: the recorded normalization is the one applied
    expected = sorted(
        (i, int(_pixels(p).sum())) for i, c in enumerate(odf.CLASSES) for p in (data / "test" / c).iterdir()
    )
    assert sorted((int(c), int(np.round(r).sum())) for c, r in zip(y, raw)) == expected


def test_flat_folder_carves_the_test_split_per_class_with_the_seed(tmp_path):
    odf.write_image_folder(tmp_path / "d", n=10)
    a = load_data(str(tmp_path / "d"), seed=0, val_fraction=0.0)
    b = load_data(str(tmp_path / "d"), seed=1, val_fraction=0.0)
    for d in (a, b):
        assert torch.bincount(d.test.y).tolist() == [2, 2, 2]  # 20% of each class
        assert torch.bincount(d.train.y).tolist() == [8, 8, 8]
    fingerprints = {k: {float(x.float().sum()) for x in d.test.x} for k, d in (("a", a), ("b", b))}
    assert fingerprints["a"] != fingerprints["b"]  # another seed, another carve
    c = load_data(str(tmp_path / "d"), seed=0, val_fraction=0.0, options={"test_fraction": 0.5})
    assert torch.bincount(c.test.y).tolist() == [5, 5, 5]
    train = {float(x.float().sum()) for x in a.train.x}
    assert not train & fingerprints["a"]  # no image is in both


def test_channels_follow_the_data_or_the_flag_and_sizes_must_agree(tmp_path):
    odf.write_image_folder(tmp_path / "gray", n=4, channels=1, size=(20, 12))
    assert get_spec(str(tmp_path / "gray")).image_shape == (1, 20, 12)  # all grayscale: 1 channel
    assert get_spec(str(tmp_path / "gray"), {"channels": 3}).image_shape == (3, 20, 12)

    odf.write_image_folder(tmp_path / "mixed", n=4, channels=1)
    Image.fromarray(odf.image_array(0, (24, 40))).save(tmp_path / "mixed" / "cat" / "big.png")
    with pytest.raises(UserError, match=r"differ in size .*24x40.*pass --image-size"):
        get_spec(str(tmp_path / "mixed"))
    d = load_data(str(tmp_path / "mixed"), val_fraction=0.0, options=from_flags(image_size="12x20").to_dict())
    assert tuple(d.train.x.shape[1:]) == (3, 12, 20)  # one RGB image: RGB; H=12, W=20
    assert d.input_meta()["preprocessing"]["resize"].startswith("bilinear")
    d = load_data(str(tmp_path / "mixed"), val_fraction=0.0, options={"image_size": [16, 16], "channels": 1})
    assert tuple(d.train.x.shape[1:]) == (1, 16, 16)
    big = Image.open(tmp_path / "mixed" / "cat" / "big.png").convert("L").resize((16, 16), Image.BILINEAR)
    big = np.asarray(big)
    assert any(np.array_equal(x[0].numpy(), big) for x in torch.cat([d.train.x, d.test.x]))


# ---------------------------------------------------------------- tables


def test_csv_with_string_labels_trains_a_three_way_bilstm(tmp_path):
    odf.write_csv(tmp_path / "reviews.csv", ["review", "sentiment"], odf.sentiment_rows(90))
    saved = _train(
        tmp_path / "reviews.csv",
        tmp_path / "run",
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--max-len",
        "16",
        "--no-prune",
    )
    assert saved["config"]["data_options"] == {"text_column": "review", "label_column": "sentiment"}
    assert saved["input"]["labels"] == ["bad", "good", "meh"]
    assert saved["input"]["label_order"] == "the label strings, sorted"
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert model["arch"]["name"] == "bilstm" and model["arch"]["config"]["num_outputs"] == 3  # softmax head
    bundle_meta, onnx_meta = _export(tmp_path / "run")
    for m in (bundle_meta, onnx_meta):
        assert m["labels"] == ["bad", "good", "meh"] and not m["binary_sigmoid"]
        assert m["source"]["text_column"] == "review" and m["source"]["label_column"] == "sentiment"
    assert (tmp_path / "run" / "bundle" / "vocab.json").exists()


def test_jsonl_directory_with_integer_labels_keeps_them_as_given(tmp_path):
    rows = odf.sentiment_rows(60, classes=("bad", "good", "meh"))
    index = {"bad": 2, "good": 0, "meh": 1}
    for name, part in (("train", rows[:48]), ("validation", rows[48:])):
        odf.write_jsonl(tmp_path / "d" / f"{name}.jsonl", [{"text": t, "label": index[lab]} for t, lab in part])
    saved = _train(tmp_path / "d", tmp_path / "run", "--max-len", "16", "--no-prune")
    meta = saved["input"]
    assert meta["labels"] == ["0", "1", "2"] and meta["label_order"].startswith("integer labels as given")
    assert meta["source"]["test"] == "validation.jsonl"
    d = load_data(str(tmp_path / "d"), max_len=16)
    assert sorted(d.test.y.tolist()) == sorted(index[lab] for _, lab in rows[48:])
    bundle_meta, onnx_meta = _export(tmp_path / "run")
    assert bundle_meta["labels"] == onnx_meta["labels"] == ["0", "1", "2"]


def test_parquet_image_table_with_relative_paths_trains_the_cnn(tmp_path):
    from edgeprune.data.own import resolve

    paths, labels = [], []
    for i in range(24):
        label = ("x", "y", "z")[i % 3]
        rel = f"imgs/{label}{i}.{'png' if i % 2 else 'jpg'}"
        (tmp_path / "imgs").mkdir(exist_ok=True)
        Image.fromarray(odf.image_array(i % 3, (16, 16), seed=i)).save(tmp_path / rel)
        paths.append(rel)
        labels.append(label)
    table = odf.write_parquet(tmp_path / "images.parquet", {"file_name": paths, "label": labels})
    assert resolve(str(table), DataOptions(image_column="file_name")).spec.task == "image"
    saved = _train(table, tmp_path / "run", "--image-column", "file_name")
    assert saved["input"]["labels"] == ["x", "y", "z"] and saved["input"]["input_shape"] == ["batch", 3, 16, 16]
    bundle_meta, onnx_meta = _export(tmp_path / "run")
    assert bundle_meta["labels"] == onnx_meta["labels"] == ["x", "y", "z"]
    assert onnx_meta["source"]["image_column"] == "file_name"


def test_parquet_text_and_csv_read_alike(tmp_path):
    rows = odf.sentiment_rows(30)
    odf.write_csv(tmp_path / "a.csv", ["text", "label"], rows)
    odf.write_parquet(tmp_path / "b.parquet", {"text": [t for t, _ in rows], "label": [lab for _, lab in rows]})
    a = load_data(str(tmp_path / "a.csv"), max_len=12, seed=3)
    b = load_data(str(tmp_path / "b.parquet"), max_len=12, seed=3)
    assert a.spec.labels == b.spec.labels == ("bad", "good", "meh")
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)


# ---------------------------------------------------------------- Hugging Face datasets (local objects)


def test_hub_splits_map_columns_and_keep_classlabel_order():
    import datasets as hf

    feats = hf.Features({"sentence": hf.Value("string"), "y": hf.ClassLabel(names=["pos", "neg", "neu"])})
    rows = odf.sentiment_rows(30, classes=("good", "bad", "meh"))
    ids = [["good", "bad", "meh"].index(lab) for _, lab in rows]
    dd = hf.DatasetDict(
        {
            "train": hf.Dataset.from_dict({"sentence": [t for t, _ in rows[:24]], "y": ids[:24]}, features=feats),
            "validation": hf.Dataset.from_dict({"sentence": [t for t, _ in rows[24:]], "y": ids[24:]}, features=feats),
        }
    )
    index = own.hub_index("hf:me/toy", dd, DataOptions(label_column="y"))
    assert index.spec.labels == ("pos", "neg", "neu") and index.spec.test_from == "split validation"
    assert index.spec.task == "text" and index.spec.columns == ("sentence", "y")
    raw = own.read(index, seed=0)
    assert sorted(raw.test.x) == sorted(t for t, _ in rows[24:])
    assert sorted(zip(raw.train.x, raw.train.y.tolist())) == sorted(zip([t for t, _ in rows[:24]], ids[:24]))
    with pytest.raises(UserError, match="has no split 'test'.*pass --split"):
        own.hub_index("hf:me/toy", dd, DataOptions(split=("train", "test")))
    carved = own.read(own.hub_index("hf:me/toy", dd, DataOptions(label_column="y", split=("train",))), seed=0)
    assert len(carved.train.y) + len(carved.test.y) == 24


def test_hub_images_are_decoded_like_files():
    import datasets as hf

    arrays = [odf.image_array(i % 3, (8, 8), seed=i) for i in range(9)]
    feats = hf.Features({"img": hf.Image(), "label": hf.ClassLabel(names=["a", "b", "c"])})
    columns = {"img": [Image.fromarray(a) for a in arrays], "label": [i % 3 for i in range(9)]}
    ds = hf.Dataset.from_dict(columns, features=feats)
    index = own.hub_index("hf:me/pics", {"train": ds}, DataOptions(test_fraction=0.34))
    assert index.spec.image_shape == (3, 8, 8) and index.spec.labels == ("a", "b", "c")
    raw = own.read(index, seed=0)
    got = np.concatenate([raw.train.x, raw.test.x])
    assert sorted(g.tobytes() for g in got) == sorted(a.transpose(2, 0, 1).tobytes() for a in arrays)


def test_hf_id_trains_end_to_end_from_a_local_parquet(tmp_path, monkeypatch):
    import datasets as hf

    rows = odf.sentiment_rows(60)
    for name, part in (("train", rows[:45]), ("test", rows[45:])):
        columns = {"sentence": [t for t, _ in part], "label": [x for _, x in part]}
        odf.write_parquet(tmp_path / f"{name}.parquet", columns)
    real = hf.load_dataset
    files = {"train": str(tmp_path / "train.parquet"), "test": str(tmp_path / "test.parquet")}
    calls = []

    def local(path, name=None, split=None, **kw):  # the hub call, answered from local parquet files
        calls.append((path, name, split))
        return real("parquet", data_files=files, split=split, cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(hf, "load_dataset", local)
    saved = _train("hf:me/tweets:en", tmp_path / "run", "--max-len", "16", "--no-prune")
    assert calls[0] == ("me/tweets", "en", None)
    assert saved["config"]["dataset"] == "hf:me/tweets:en" and saved["input"]["labels"] == ["bad", "good", "meh"]
    assert saved["input"]["source"] == {
        "kind": "hub",
        "ref": "hf:me/tweets:en",
        "test": "split test",
        "text_column": "sentence",
        "label_column": "label",
    }
    bundle_meta, _ = _export(tmp_path / "run")
    assert bundle_meta["labels"] == ["bad", "good", "meh"]


# ---------------------------------------------------------------- what goes wrong, caught early


@pytest.mark.parametrize(
    "labels,match",
    [
        ([1, 2, 1, 2], r"class 0 never occurs.*number the classes 0\.\.K-1"),
        ([0, -1, 0, 1], r"label -1.*renumber them from 0"),
        (["a", "a", "a", "a"], r"one class only \('a'\); add examples"),
        ([0, 1, "", 1], r"row 3 has no label.*fill it in"),
    ],
)
def test_label_problems_name_the_fix(tmp_path, labels, match):
    odf.write_jsonl(tmp_path / "t.jsonl", [{"text": f"w{i}", "label": v} for i, v in enumerate(labels)])
    with pytest.raises(UserError, match=match):
        get_spec(str(tmp_path / "t.jsonl"))


def test_table_problems_name_the_fix(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 0}\n{"text": oops}\n')
    with pytest.raises(UserError, match=r"line 2 is not valid JSON.*fix that line"):
        get_spec(str(tmp_path / "bad.jsonl"))
    odf.write_csv(tmp_path / "imgs.csv", ["image", "label"], [["nope.png", "a"], ["nope2.png", "b"]])
    with pytest.raises(UserError, match=r"row 1 names the image nope.png, which is not a file"):
        get_spec(str(tmp_path / "imgs.csv"))
    odf.write_csv(tmp_path / "d" / "notes.csv", ["text", "label"], [["x", "a"]])
    with pytest.raises(UserError, match=r"none for training; name the files train.csv"):
        get_spec(str(tmp_path / "d"))
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8 text; re-save it as UTF-8"):
        get_spec(str(tmp_path / "latin.csv"))
    odf.write_csv(tmp_path / "tiny.csv", ["text", "label"], [["x", "a"], ["y", "b"]])
    with pytest.raises(UserError, match="too few examples .* to carve a test split"):
        load_data(str(tmp_path / "tiny.csv"))


def test_names_paths_and_flags(tmp_path):
    assert get_spec("mnist").kind == "registry" and get_spec("mnist").id == "mnist"
    with pytest.raises(UserError, match=r"--image-size applies to your own data.*drop it"):
        get_spec("mnist", {"image_size": [8, 8]})
    with pytest.raises(UserError, match=r"Unknown dataset 'pets'.*your own data \(an image folder"):
        get_spec("pets")
    with pytest.raises(UserError, match="does not exist; pass an image folder"):
        get_spec(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match="--image-size must be N or HxW"):
        from_flags(image_size="big")
    with pytest.raises(UserError, match="--channels must be 1"):
        from_flags(channels=2)
    with pytest.raises(UserError, match="--test-fraction must lie strictly between 0 and 1"):
        from_flags(test_fraction=1.0)
    flags = from_flags(image_size="24x32", split="train,val")
    assert flags.to_dict() == {"image_size": [24, 32], "split": ["train", "val"]}


def test_memory_is_checked_before_decoding(tmp_path, monkeypatch):
    odf.write_image_folder(tmp_path / "d", n=4)
    monkeypatch.setattr(memory, "available", lambda: 10_000)  # 12 images x 3x32x32 = 36,864 bytes
    with pytest.raises(UserError, match=r"12 images .* at 3x32x32 .*available; pass a smaller --image-size"):
        load_data(str(tmp_path / "d"))
    monkeypatch.setattr(memory, "available", lambda: 2 * 12 * 1 * 8 * 8)  # exactly twice the arrays: fits
    small = load_data(str(tmp_path / "d"), options={"image_size": [8, 8], "channels": 1})
    assert tuple(small.train.x.shape[1:]) == (1, 8, 8)
    odf.write_csv(tmp_path / "t.csv", ["text", "label"], odf.sentiment_rows(30))
    with pytest.raises(UserError, match=r"token ids of 30 texts at --max-len 256.*lower --max-len"):
        load_data(str(tmp_path / "t.csv"))


def test_resume_on_changed_classes_is_refused_and_the_run_kept(tmp_path):
    from edgeprune.config import resolve_train_config

    odf.write_image_folder(tmp_path / "d", n=5, size=(16, 16))
    cfg = resolve_train_config(dataset=str(tmp_path / "d"), out=tmp_path / "run", epochs=1, batch_size=8, prune=False)
    cfg.threads, cfg.device = 1, "cpu"
    train_run(cfg, quiet=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    odf.write_image_folder(tmp_path / "d", classes=("eel",), n=5, size=(16, 16))
    with pytest.raises(UserError, match=r"changed since the run started \(labels .*train into a new --out"):
        train_run(cfg, resume=True, quiet=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_experiment_plans_both_runs_on_your_own_data(tmp_path):
    from edgeprune.experiment import ExperimentOptions, make_plan

    odf.write_image_folder(tmp_path / "pets", n=4, size=(16, 16))
    plan = make_plan(ExperimentOptions(dataset=str(tmp_path / "pets"), epochs=2, data_options={"channels": 1}))
    assert plan.out.name == "experiment-pets"
    for cfg in (plan.baseline, plan.pruned):
        assert cfg.dataset == str((tmp_path / "pets").resolve()) and cfg.data_options == {"channels": 1}
        assert cfg.model == "cnn"


def test_reading_images_closes_every_file_it_opened(tmp_path):
    """The header probe and the decode close the files they open (the probe left each PNG open until
    garbage collection: one ResourceWarning per image in any caller that shows warnings); an image
    passed in as a PIL image is the caller's and stays open."""
    import gc
    import warnings

    from edgeprune.data import images

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (6, 4), dtype=np.uint8), "L").save(paths[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probes = [images.probe(p, str(p)) for p in paths]
        arrays = [images.decode(p, str(p), (3, 8, 8)) for p in paths]
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert [p.size for p in probes] == [(6, 4)] * 5 and all(p.gray for p in probes)
    with Image.open(paths[0]) as im:  # the pixels, a second way: PIL's own RGB resize
        expected = np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(arrays[0], expected)
    mine = Image.open(paths[1])
    images.probe(mine, "mine")
    images.decode(mine, "mine", (1, 6, 4))
    assert mine.size == (4, 6) and np.asarray(mine).shape == (6, 4)  # still usable: not closed
    mine.close()
