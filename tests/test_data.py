import gzip

import datafiles
import numpy as np
import pytest
import torch
from conftest import FASHION

from edgeprune.data import sources
from edgeprune.data.loader import load_data
from edgeprune.data.registry import DATASETS, describe_all, get_spec
from edgeprune.data.text import Vocab, tokenize
from edgeprune.errors import DataNotFound, UserError


def test_registry_lists_the_five_datasets():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "imdb", "sst2"}
    assert get_spec("Fashion_MNIST").name == "fashion-mnist"
    assert get_spec("sst2").test_split == "validation"


def test_unknown_dataset_names_the_choices():
    with pytest.raises(UserError, match="Unknown dataset 'fashon-mnist'.*Did you mean 'fashion-mnist'"):
        get_spec("fashon-mnist")


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path, compress):
    x = np.random.default_rng(0).integers(0, 255, (5, 28, 28)).astype(np.uint8)
    p = datafiles.write_idx(tmp_path / "imgs-idx3-ubyte", x, compress)
    np.testing.assert_array_equal(sources.read_idx(p), x)


def test_truncated_idx_is_a_user_error(tmp_path):
    p = datafiles.write_idx(tmp_path / "x", np.zeros((4, 28, 28), np.uint8), compress=False)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated or corrupt"):
        sources.read_idx(p)
    p.write_bytes(b"hello world")
    with pytest.raises(UserError, match="not an IDX file"):
        sources.read_idx(p)


def test_mnist_from_local_idx_with_seeded_validation(data_root):
    a = load_data("mnist", data_root, seed=1, val_fraction=0.1)
    b = load_data("mnist", data_root, seed=1, val_fraction=0.1)
    c = load_data("mnist", data_root, seed=2, val_fraction=0.1)
    assert a.train.x.dtype == torch.uint8 and tuple(a.train.x.shape[1:]) == (1, 28, 28)
    assert len(a.train) == 540 and len(a.val) == 60 and len(a.test) == 200
    assert torch.equal(a.val.y, b.val.y) and not torch.equal(a.val.x, c.val.x)
    batch = a.prepare(a.train.x[:8])
    assert batch.dtype == torch.float32 and abs(float(batch.mean())) < 3


def test_limit_takes_the_first_examples(data_root):
    d = load_data("mnist", data_root, limit=100, val_fraction=0.2)
    assert len(d.train) + len(d.val) == 100


def test_cifar_python_batches(data_root):
    d = load_data("cifar10", data_root)
    assert tuple(d.train.x.shape[1:]) == (3, 32, 32) and len(d.train) + len(d.val) == 200 and len(d.test) == 40
    assert d.prepare(d.test.x[:2]).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", ["sst2", "imdb"])
def test_text_tables_csv_and_parquet(data_root, name):
    d = load_data(name, data_root, vocab_size=100, max_len=16)
    assert d.train.x.dtype == torch.int64 and d.train.x.shape[1] == 16
    assert len(d.vocab) <= 100 and d.vocab.tokens[:2] == ["<pad>", "<unk>"]
    assert int(d.train.x.max()) < len(d.vocab)
    assert d.input_meta()["vocab_sha256"] == d.vocab.sha256()


def test_text_table_missing_columns(tmp_path):
    (tmp_path / "sst2").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "sst2" / f"{split}.csv").write_text("review,stars\nnice,5\n")
    with pytest.raises(UserError, match="needs columns text,label"):
        load_data("sst2", tmp_path)


def test_vocab_is_built_from_training_split_and_reproducible():
    texts = ["A great movie!", "a dull movie", "great great film"]
    v = Vocab.build(texts, size=5, max_len=4)
    assert v.tokens == ["<pad>", "<unk>", "great", "a", "movie"]  # ties alphabetical
    ids = v.encode(["great unknown movie a a a"])
    assert ids.tolist() == [[2, 1, 4, 3]]
    assert Vocab.from_json(v.to_json()).tokens == v.tokens
    assert tokenize("It's <br /> GOOD.") == ["it's", "good", "."]


def test_offline_and_not_found_is_one_sentence(tmp_path):
    with pytest.raises(DataNotFound) as e:
        load_data("imdb", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "imdb") in msg and "text,label" in msg and "\n" not in msg


def test_data_dir_and_environment_variable(data_root, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_DATA", str(data_root))
    rows = {r["name"]: r for r in describe_all(None)}
    assert rows["sst2"]["local"] == str(data_root / "sst2")
    assert rows["imdb"]["local"] == str(data_root / "imdb")


@pytest.mark.skipif(not FASHION.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    d = load_data("fashion-mnist", None, val_fraction=0.1)
    assert d.source == str(FASHION)
    assert len(d.train) + len(d.val) == 60000 and len(d.test) == 10000
    assert sorted(torch.unique(d.test.y).tolist()) == list(range(10))
    assert torch.bincount(d.test.y).tolist() == [1000] * 10
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as f:
        assert f.read()[8:18] == bytes(d.test.y[:10].tolist())


def test_negation_sentiment_labels_follow_the_net_sign_of_the_cues():
    from edgeprune.data.synthetic import NEGATIVE, POSITIVE, negation_texts

    def rule(text: str) -> int:
        words, score = text.split(), 0
        for i, w in enumerate(words):
            if w in POSITIVE or w in NEGATIVE:
                polarity = 1 if w in POSITIVE else -1
                score += -polarity if i and words[i - 1] == "not" else polarity
        assert score % 2 == 1  # one or three cues: never a tie
        return int(score > 0)

    texts, y = negation_texts(2000, seed=3, noise=0.0)
    assert [rule(t) for t in texts] == y.tolist()
    assert any(" not " in f" {t} " for t in texts) and 0.4 < y.mean() < 0.6
    texts, y = negation_texts(2000, seed=3)  # 5% of labels flipped: the ceiling is 95%
    agree = sum(rule(t) == label for t, label in zip(texts, y.tolist())) / len(y)
    assert 0.93 < agree < 0.97
