"""Macro-F1 (torch and numpy twins) against scikit-learn, and the majority-class warning."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score as sk_f1

from edgeprune.bench import metrics as np_metrics
from edgeprune.metrics import f1_score, majority_share

CASES = [
    # (classes, labels seen, n): a class may be missing from the labels, the predictions or both
    (2, 2, 50),
    (3, 3, 40),
    (5, 4, 60),
    (10, 10, 7),
]


@pytest.mark.parametrize("classes,seen,n", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_equals_scikit_learn(classes, seen, n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, seen, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, classes, n))
    expected = sk_f1(y, p, average="macro")
    assert f1_score(torch.from_numpy(p), torch.from_numpy(y), classes) == pytest.approx(expected, abs=1e-12)
    assert np_metrics.f1(y, p, classes) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_is_not_the_binary_f1_of_class_one():
    y, p = np.array([1, 1, 1, 1, 0, 0]), np.array([1, 1, 1, 1, 1, 0])
    binary = sk_f1(y, p)  # 8 / 9
    macro = sk_f1(y, p, average="macro")  # (8/9 + 2/3) / 2
    assert binary != pytest.approx(macro)
    assert f1_score(torch.from_numpy(p), torch.from_numpy(y), 2) == pytest.approx(macro, abs=1e-12)
    assert np_metrics.f1(y, p, 2) == pytest.approx(macro, abs=1e-12)


def test_majority_share_and_warning():
    y = torch.tensor([0, 1, 1, 2, 1, 1, 0, 1, 1, 2])
    assert majority_share(y) == pytest.approx(float(np.bincount(y.numpy()).max()) / len(y))  # 0.6
    assert "within 1 point" in np_metrics.majority_warning(0.605, 0.6, 10)
    assert "below" in np_metrics.majority_warning(0.45, 0.6, 10)
    assert "10 test examples" in np_metrics.majority_warning(0.6, 0.6, 10)
    assert np_metrics.majority_warning(0.62, 0.6, 10) is None
    assert np_metrics.majority_warning(None, 0.6) is None


def test_training_warns_when_accuracy_is_near_the_majority_share(data_root, tmp_path, monkeypatch, capsys):
    import edgeprune.train as t
    from edgeprune.config import resolve_train_config

    # A majority share of 1.0 puts any accuracy within reach of it: the warning's wiring, cheaply.
    monkeypatch.setattr(t, "majority_share", lambda y: 1.0)
    c = resolve_train_config(
        dataset="sst2",
        data_dir=data_root,
        out=tmp_path / "r",
        epochs=1,
        batch_size=64,
        vocab_size=50,
        max_len=8,
        prune=False,
        threads=1,
        device="cpu",
    )
    c.model_config = {"embed_dim": 8, "hidden": [[8, 8]]}
    m = t.train_run(c)
    assert m["test_majority_share"] == 1.0 and len(m["warnings"]) == 1
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["warnings"] == m["warnings"]
    out = capsys.readouterr().out
    assert "warning" in out and "majority class" in out and f"(n={m['test_n']:,})" in out
    assert "macro-F1" in out


def test_report_notes_a_run_near_the_majority_share(tmp_path):
    from edgeprune.report import build_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"dataset": "sst2", "model": "bilstm", "prune": False}}))
    metrics = {"test_accuracy": 0.487, "test_f1": 0.40, "test_n": 872, "test_majority_share": 0.491, "params": 10}
    (run / "metrics.json").write_text(json.dumps(metrics))
    result, _ = build_report([run])
    assert any("within 1 point of the majority class's share 0.4910 of 872 test examples" in n for n in result["notes"])
    row = result["rows"][0]
    assert row["eval_n"] == 872 and row["accuracy_source"] == "train"
