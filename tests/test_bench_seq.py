"""bench --seq-len: text models are timed at a chosen number of tokens (the device pays for what it has)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_bench import text_bundle  # noqa: E402

from edgeprune.bench import bench, feeds, make_settings  # noqa: E402
from edgeprune.errors import UserError  # noqa: E402

SPEC = feeds.InputSpec("ids", "tensor(int64)", ("batch", "seq"))


def test_eval_rows_are_cut_or_padded_to_seq_len():
    x = np.array([[3, 4, 5, 6, 7, 8], [9, 2, 0, 0, 0, 0]], dtype=np.int64)
    cut = feeds.make_feed([SPEC], 2, None, x, seq_len=3)["ids"]
    np.testing.assert_array_equal(cut, [[3, 4, 5], [9, 2, 0]])
    padded = feeds.make_feed([SPEC], 1, None, x, seq_len=9)["ids"]
    np.testing.assert_array_equal(padded, [[3, 4, 5, 6, 7, 8, 0, 0, 0]])
    assert feeds.make_feed([SPEC], 4, {"max_len": 6, "vocab_size": 10}, None, seq_len=5)["ids"].shape == (4, 5)


def test_seq_len_needs_a_sequence_input():
    image = feeds.InputSpec("input", "tensor(float)", ("batch", 1, 28, 28))
    with pytest.raises(ValueError, match="token sequences"):
        feeds.make_feed([image], 1, None, None, seq_len=8)
    fixed = feeds.InputSpec("ids", "tensor(int64)", ("batch", 6))
    with pytest.raises(ValueError, match="token sequences"):
        feeds.make_feed([fixed], 1, None, None, seq_len=8)
    with pytest.raises(UserError, match="--seq-len"):
        make_settings(seq_len=0)


def test_bench_times_the_requested_length_and_scores_the_full_rows(tmp_path):
    root = text_bundle(tmp_path)
    report = bench([root], make_settings(runs=3, rounds=1, warmup=0, threads=1, batch="1,2", seq_len=40))
    row = report["results"][0]
    assert row["status"] == "ok", row["error"]
    assert row["inputs"][0]["bench_shape"] == {"1": [1, 40], "2": [2, 40]}
    assert row["accuracy"] == pytest.approx(0.75)  # accuracy reads the eval rows as they are
    assert report["settings"]["seq_len"] == 40
