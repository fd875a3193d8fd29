"""Texts in an order that costs less padding: evaluation runs them shortest first and gives the
outputs back in order, and --group-by-length batches texts of like length while every example is
still seen once per epoch, the same way on resume."""

import numpy as np
import pytest
import torch
from interrupted import train_interrupted

from edgeprune.config import resolve_train_config
from edgeprune.data.loader import load_data
from edgeprune.data.order import GROUP, by_length, epoch_order, length_grouped, padded_share
from edgeprune.errors import UserError
from edgeprune.models import build_model
from edgeprune.train import logits_of, train_run

ROW_TOL = 1e-5  # a row's output batched with others vs alone (float sums in another order)


def tweet_like_lengths(n: int, seed: int = 0) -> torch.Tensor:
    """Lengths like tweets under a subword tokenizer: mostly 15-60 tokens, a long tail to 128."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.clip(rng.lognormal(3.4, 0.45, n).astype(np.int64), 3, 128))


def test_length_grouped_keeps_every_example_once_and_batches_rows_of_like_length():
    batch, n = 16, GROUP * 16 * 2 + 123  # two whole groups, a short one, and a short last batch
    lengths = tweet_like_lengths(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    out = length_grouped(perm, lengths, batch, torch.Generator().manual_seed(2))
    assert sorted(out.tolist()) == list(range(n))  # every example, once
    full = n - n % batch
    assert out[full:].tolist() == perm[full:].tolist()  # the short batch stays last
    # second way: each group of GROUP*batch shuffled examples, sorted by length (longest first, ties
    # in shuffle order) and cut into batches, gives the same set of batches as the function
    for start in range(0, full, GROUP * batch):
        chunk = perm[start : min(start + GROUP * batch, full)].numpy()
        ranked = chunk[np.argsort(-lengths.numpy()[chunk], kind="stable")]
        want = {tuple(ranked[i : i + batch]) for i in range(0, len(ranked), batch)}
        got = {tuple(b.tolist()) for b in out[start : start + len(chunk)].split(batch)}
        assert got == want
    assert padded_share(out, lengths, batch) < 1.1 < 1.3 < padded_share(perm, lengths, batch)


def test_length_grouped_is_a_function_of_its_generator():
    lengths = tweet_like_lengths(3000)
    perm = torch.randperm(3000, generator=torch.Generator().manual_seed(0))
    a, b, c = (length_grouped(perm, lengths, 32, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(length_grouped(perm[:10], lengths, 32, torch.Generator()), perm[:10])  # no whole batch


def test_padded_share_counts_each_batch_at_its_longest_text():
    lengths = torch.tensor([4, 1, 2, 3])
    # batches [4, 1] and [2, 3] pay 2*4 + 2*3 = 14 columns for 10 tokens; sorted, 2*2 + 2*4 = 12
    assert padded_share(torch.arange(4), lengths, 2) == pytest.approx(14 / 10)
    assert padded_share(torch.tensor([1, 2, 3, 0]), lengths, 2) == pytest.approx(12 / 10)


def test_by_length_is_shortest_first_and_stable():
    lengths = torch.tensor([4, 2, 4, 0, 2])
    assert by_length(lengths).tolist() == [3, 1, 4, 0, 2]


@pytest.mark.parametrize("batch_size", [7, 1024])
def test_evaluation_in_length_order_gives_each_row_its_own_output_in_input_order(data_root, batch_size):
    data = load_data("sst2", data_root, vocab_size=200, max_len=24)
    x = data.test.x[:60]
    lengths = data.lengths(x)
    assert lengths.tolist() == [int((row != 0).sum()) for row in x]  # counted a second way
    assert len(set(lengths.tolist())) > 5  # the rows really are of different lengths
    torch.manual_seed(0)
    config = {"vocab_size": len(data.vocab), "embed_dim": 8, "hidden": [[6, 5]], "num_outputs": 2}
    model = build_model({"name": "bilstm", "config": config}).eval()
    got = logits_of(model, data, x, batch_size=batch_size)
    with torch.no_grad():
        alone = torch.cat([model(data.prepare(x[i : i + 1])) for i in range(len(x))])
    torch.testing.assert_close(got, alone, rtol=0, atol=ROW_TOL)
    assert data.lengths(data.train.x[:0]).shape == (0,)


def test_images_have_no_lengths(data_root):
    data = load_data("mnist", data_root)
    assert data.lengths(data.test.x[:4]) is None


def _cfg(data_root, out, **kw):
    c = resolve_train_config(
        dataset="sst2",
        data_dir=data_root,
        out=out,
        epochs=3,
        batch_size=16,
        lr=0.01,
        vocab_size=200,
        max_len=24,
        prune=False,
        threads=1,
        device="cpu",
        **kw,
    )
    c.model_config = {"embed_dim": 16, "hidden": [[16, 8]]}
    return c


def test_a_grouped_run_trains_resumes_exactly_and_differs_from_a_shuffled_one(data_root, tmp_path, monkeypatch):
    grouped = train_run(_cfg(data_root, tmp_path / "full", group_by_length=True), quiet=True)
    train_run(_cfg(data_root, tmp_path / "shuffled"), quiet=True)
    train_interrupted(monkeypatch, _cfg(data_root, tmp_path / "cut", group_by_length=True), after_epochs=2)
    train_run(_cfg(data_root, tmp_path / "cut", group_by_length=True), resume=True, quiet=True)
    a, b, s = (
        torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in ("full", "cut", "shuffled")
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], s[k]) for k in a)  # the batches really were others
    assert grouped["test_accuracy"] > 0.6  # it learns (the synthetic sentiment is easy)
    with pytest.raises(UserError, match=r"group_by_length differ"):
        train_run(_cfg(data_root, tmp_path / "cut"), resume=True, quiet=True)  # not a grouped run's resume


def test_epoch_order_is_the_seeded_shuffle_and_groups_only_when_asked():
    lengths = tweet_like_lengths(700)
    plain = epoch_order(700, seed=3, epoch=2)
    again = torch.randperm(700, generator=torch.Generator().manual_seed(3 * 100_003 + 2))  # the rule, spelled out
    assert torch.equal(plain, again)
    grouped = epoch_order(700, seed=3, epoch=2, lengths=lengths, batch=16)
    assert sorted(grouped.tolist()) == list(range(700)) and not torch.equal(grouped, plain)
    assert padded_share(grouped, lengths, 16) < padded_share(plain, lengths, 16)
