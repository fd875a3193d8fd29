"""The text model on real-text terms: padding never reaches the prediction (torch and ONNX),
batches cost their longest row, vocabulary rows are prunable units that ship a smaller
vocabulary, and a budget on an embedding-heavy model cuts rows rather than every layer."""

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from compaction import compact_model
from interrupted import train_interrupted

from edgeprune.config import resolve_train_config
from edgeprune.data.loader import trim_padding
from edgeprune.data.text import Vocab
from edgeprune.export import export_run, onnx_export
from edgeprune.metrics import loss_fn
from edgeprune.models import build_model
from edgeprune.prune.compact import zeroed_units
from edgeprune.prune.groups import model_groups
from edgeprune.prune.pruner import Pruner, count_params
from edgeprune.prune.schedule import PruneSchedule
from edgeprune.train import train_run

PAD_TOL = 1e-6  # same answer at any padding
ONNX_TOL = 1e-5
UNCHANGED_TOL = 1e-5  # removing rows nothing reads


def bilstm(vocab=40, embed=8, hidden=((6, 5), (4, 3)), outputs=1, token_map=True, seed=0):
    torch.manual_seed(seed)
    config = {"vocab_size": vocab, "embed_dim": embed, "hidden": [list(h) for h in hidden], "num_outputs": outputs}
    if token_map:
        config["source_vocab"] = vocab
    return build_model({"name": "bilstm", "config": config}).eval()


def rows(lengths, vocab=40, low=2, seed=0) -> torch.Tensor:
    """Right-padded token ids, one row per length (0 = an all-pad row)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(max(lengths), 1), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randint(low, vocab, (n,), generator=g)
    return x


def pad(x: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([x, torch.zeros(len(x), extra, dtype=x.dtype)], dim=1)


@torch.no_grad()
def reference(model, tokens: list[int]) -> torch.Tensor:
    """The model's output for one unpadded sequence, computed step by step from its layers."""
    x = model.embedding(model.token_map[torch.tensor([tokens])])
    for layer in model.layers:
        f, _ = layer.fwd(x)
        b, _ = layer.bwd(torch.flip(x, [1]))
        x = torch.cat([f, torch.flip(b, [1])], 2)
    return model.classifier(x.amax(1))[0]


LENGTHS = [5, 9, 1, 3, 0]


@pytest.mark.parametrize("outputs", [1, 3])
def test_padding_does_not_reach_the_prediction_in_torch(outputs):
    model = bilstm(outputs=outputs)
    x = rows(LENGTHS)
    with torch.no_grad():
        out, padded = model(x), model(pad(x, 50))
    assert torch.isfinite(out).all()  # the all-pad row too
    assert (out - padded).abs().max().item() <= PAD_TOL
    for i, n in enumerate(LENGTHS):  # a second way: each sequence alone, unpadded, layer by layer
        if n:
            assert (out[i] - reference(model, x[i, :n].tolist())).abs().max().item() <= PAD_TOL


def test_padding_does_not_reach_the_prediction_in_onnx(tmp_path):
    model = bilstm()
    meta = {"task": "text", "vocab_size": 40}
    path = tmp_path / "m.onnx"
    onnx_export.export_onnx(model, meta, path)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "seq"]  # the sequence axis is symbolic
    onnx_export.check_symbolic(path, meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rows(LENGTHS)
    got = sess.run(None, {"input": x.numpy()})[0]
    got_padded = sess.run(None, {"input": pad(x, 50).numpy()})[0]
    assert np.isfinite(got).all()
    assert np.abs(got - got_padded).max() <= PAD_TOL
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() <= ONNX_TOL


def test_text_batches_are_cut_to_their_longest_row():
    x = torch.zeros(3, 24, dtype=torch.long)
    x[0, :3], x[1, :7] = 5, 6
    x[2, 4] = 7  # a pad inside a row is kept: the row ends at its last token
    assert trim_padding(x).shape == (3, 7)
    assert torch.equal(trim_padding(x), x[:, :7])
    assert trim_padding(torch.zeros(2, 24, dtype=torch.long)).shape == (2, 1)


def test_load_data_keeps_max_len_as_the_cap_and_prepare_trims(data_root):
    from edgeprune.data.loader import load_data

    d = load_data("sst2", data_root, vocab_size=100, max_len=12)
    assert d.train.x.shape[1] == 12
    batch = d.train.x[:4]
    longest = int(max((row != 0).nonzero().max() for row in batch)) + 1
    assert d.prepare(batch).shape == (4, longest)


def _train_steps(model, batches, pruner, epoch=1):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        pruner.epoch = epoch
        pruner.after_backward()
        opt.step()
    return opt


@pytest.mark.parametrize("progressive", [True, False])
def test_vocabulary_rows_nothing_reads_are_removed_without_changing_the_output(progressive):
    model = bilstm(vocab=40)
    seen = list(range(2, 20))  # the scored batches read tokens 2..19 only: rows 20..39 get no gradient
    batches = []
    for b in range(3):
        x = torch.zeros(4, 9, dtype=torch.long)
        for i, n in enumerate([7, 4, 9, 2]):
            x[i, :n] = torch.tensor([seen[(5 * b + 3 * i + j) % len(seen)] for j in range(n)])
        batches.append((x, torch.tensor([0, 1, 1, 0])))
    assert set(torch.cat([x.view(-1) for x, _ in batches]).tolist()) == {0, *seen}
    sched = PruneSchedule(
        epochs=2,
        warmup_epochs=0,
        prune_until=0.5,
        threshold=1e-9,  # only exactly-zero contributions fall under it
        round_to=1,
        min_width=1,
        prune_connections=False,
        progressive=progressive,
    )
    pruner = Pruner(model, schedule=sched)
    opt = _train_steps(model, batches, pruner)
    before = copy.deepcopy(model).eval()
    pruner.optimizer = opt
    report = pruner.end_epoch(1)
    pruner.finalize()
    model.eval()
    assert report.removed_units == {"vocab": 20}  # rows 20..39; <pad> has no gradient but stays
    assert model.widths()["vocab"] == 20 and model.embedding.num_embeddings == 20
    test = rows([6, 11, 3, 0, 8], low=2, vocab=20, seed=7)
    with torch.no_grad():
        diff = (model(test) - before(test)).abs().max().item()
    assert diff <= UNCHANGED_TOL
    # a removed token now reads as <unk>
    unseen = test.clone()
    unseen[0, 2] = 33
    as_unk = test.clone()
    as_unk[0, 2] = 1
    with torch.no_grad():
        assert (model(unseen) - model(as_unk)).abs().max().item() == 0.0
    assert sorted(model.token_map[torch.tensor(seen)].tolist()) == list(range(2, 20))  # kept rows, renumbered


def test_a_vocabulary_row_scores_the_abs_sum_of_weight_times_grad_per_batch():
    from edgeprune.prune.importance import TaylorScores

    model = bilstm(vocab=30, hidden=((4, 3),)).train()
    scores = TaylorScores(model_groups(model), [])
    expected = torch.zeros(30, dtype=torch.float64)
    for seed in range(3):
        model.zero_grad()
        loss_fn(model(rows([6, 3, 8], vocab=30, seed=seed)), torch.tensor([1, 0, 1])).backward()
        w = model.embedding.weight
        expected += (w * w.grad).sum(1).abs().double().detach()
        scores.accumulate(model)
    torch.testing.assert_close(scores.unit_scores()["vocab"], expected / 3, rtol=1e-5, atol=1e-12)


def test_pad_and_unk_are_never_removed():
    model = bilstm(vocab=12, hidden=((4, 4),))
    groups = {g.name: g for g in model_groups(model)}
    assert groups["vocab"].protected == (0, 1)
    sched = PruneSchedule(
        epochs=2, warmup_epochs=0, prune_until=0.5, threshold=0.5, round_to=1, min_width=1, prune_connections=False
    )
    p = Pruner(model, schedule=sched)
    scores = {g: torch.ones(w, dtype=torch.float64) for g, w in model.widths().items()}
    scores["vocab"] = torch.tensor([0.0, 0.0] + [0.0] * 5 + [1.0] * 5, dtype=torch.float64)
    p.scores.unit, p.scores.batches = scores, 1
    removed = p._choose_units(None)
    assert sorted(removed["vocab"].tolist()) == [2, 3, 4, 5, 6]


def test_compaction_renumbers_the_token_map_and_zeroed_units_finds_unread_rows():
    model = bilstm(vocab=10, hidden=((4, 4),))
    removed = {"vocab": torch.tensor([3, 7])}
    small, _ = compact_model(model, removed)
    assert small.token_map.tolist() == [0, 1, 2, 1, 3, 4, 5, 1, 6, 7]
    assert small.embedding.num_embeddings == 8
    torch.testing.assert_close(small.embedding.weight[3], model.embedding.weight[4], rtol=0, atol=0)
    assert zeroed_units(small)["vocab"].tolist() == []  # every row is read
    small.token_map[small.token_map == 5] = 1  # nothing reads row 5 any more
    assert zeroed_units(small)["vocab"].tolist() == [5]


def test_folding_the_token_map_with_the_shrunk_vocabulary_computes_the_same():
    vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(8)], max_len=6)
    model = bilstm(vocab=len(vocab), hidden=((4, 3),))
    small, _ = compact_model(model, {"vocab": torch.tensor([2, 5, 6])})  # w0, w3, w4 go
    folded, ids = small.without_token_map()
    assert folded.token_map is None and "token_map" not in folded.state_dict()
    shrunk = vocab.select(ids)
    assert shrunk.tokens == ["<pad>", "<unk>", "w1", "w2", "w5", "w6", "w7"]
    texts = ["w1 w0 w7", "w3 w4", "w6 w6 w2 nope w5", ""]
    with torch.no_grad():
        a = small(torch.from_numpy(vocab.encode(texts)))
        b = folded(torch.from_numpy(shrunk.encode(texts)))
    assert torch.equal(a, b)


def test_a_budget_on_an_embedding_heavy_model_cuts_rows_not_every_layer():
    # 4,000 x 32 embedding rows are ~95% of the parameters; a 0.1 budget must come from the rows
    model = bilstm(vocab=4000, embed=32, hidden=((16, 16),), token_map=True)
    base = count_params(model)
    sched = PruneSchedule(
        epochs=4, warmup_epochs=0, prune_until=0.25, threshold=0.0, target_params=0.1, prune_connections=False
    )
    g = torch.Generator().manual_seed(0)
    scores = {}
    for name, w in model.widths().items():
        s = 0.5 + torch.rand(w, generator=g)
        scores[name] = (s / torch.arange(1, w + 1) if name == "vocab" else s).double()  # rare tokens score low
    p = Pruner(model, schedule=sched)
    p.scores.unit, p.scores.batches = scores, 1
    builds = {"n": 0}
    real = p._cost_for

    def counted(*a):
        builds["n"] += 1
        return real(*a)

    p._cost_for = counted
    p.optimizer = torch.optim.Adam(model.parameters())
    p.end_epoch(1)
    new = model
    w = new.widths()
    assert count_params(new) <= 0.1 * base
    assert w["vocab"] < 4000
    assert not all(w[k] == sched.min_width for k in ("embed", "lstm0.fwd", "lstm0.bwd")), w
    # notches of 1/32 of a big layer: a few hundred meta builds, not thousands of 8-row notches
    assert builds["n"] < 400, builds


def _text_cfg(data_root, out, **kw):
    c = resolve_train_config(
        dataset="sst2",
        data_dir=data_root,
        out=out,
        epochs=4,
        batch_size=32,
        lr=0.01,
        vocab_size=200,
        max_len=24,
        warmup_epochs=1,
        target_params=0.4,
        prune_connections=False,
        threads=1,
        device="cpu",
        **kw,
    )
    c.model_config = {"embed_dim": 16, "hidden": [[16, 8]]}
    return c


def test_a_pruned_text_run_ships_its_shrunk_vocabulary_and_one_accuracy(data_root, tmp_path):
    run = tmp_path / "text"
    m = train_run(_text_cfg(data_root, run), quiet=True)
    full = json.loads((run / "vocab.train.json").read_text())["tokens"]
    shrunk = json.loads((run / "vocab.json").read_text())["tokens"]
    assert m["widths"]["vocab"] == len(shrunk) < len(full)
    assert shrunk[:2] == ["<pad>", "<unk>"] and set(shrunk) <= set(full)
    record = torch.load(run / "model.pt", weights_only=True)
    assert "token_map" not in record["state_dict"] and "source_vocab" not in record["arch"]["config"]
    assert record["state_dict"]["embedding.weight"].shape[0] == len(shrunk) == record["input"]["vocab_size"]

    summary = export_run(run, quantize="none", measure_latency=False)  # the whole test split
    bundle = run / "bundle"
    assert json.loads((bundle / "vocab.json").read_text())["tokens"] == shrunk
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["vocab_size"] == len(shrunk)
    init = {t.name: t for t in onnx.load(str(bundle / "model.onnx")).graph.initializer}
    embed = record["arch"]["config"]["embed_dim"]
    assert any(list(t.dims) == [len(shrunk), embed] for t in init.values())  # the small embedding ships
    rows_ = {r["name"]: r for r in summary["variants"]}
    assert summary["eval_n"] == m["test_n"] == 200
    # the shipped model on the shipped vocabulary scores what training measured on the same examples
    assert rows_["torch"]["accuracy"] == pytest.approx(m["test_accuracy"], abs=1e-6)
    assert rows_["simplified"]["accuracy"] == pytest.approx(m["test_accuracy"], abs=1e-6)
    assert meta["metrics"]["train"]["test_n"] == meta["metrics"]["float"]["eval_n"] == 200


def test_resume_of_a_text_run_with_pruned_rows_is_exact(data_root, tmp_path, monkeypatch):
    train_run(_text_cfg(data_root, tmp_path / "full"), quiet=True)
    train_interrupted(monkeypatch, _text_cfg(data_root, tmp_path / "cut"), after_epochs=3)  # after the pruning epoch
    train_run(_text_cfg(data_root, tmp_path / "cut"), resume=True, quiet=True)
    again = train_run(_text_cfg(data_root, tmp_path / "cut"), resume=True, quiet=True)  # a finished run
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert a["arch"] == b["arch"] and a["input"] == b["input"]
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=1e-6)
    assert (tmp_path / "full" / "vocab.json").read_text() == (tmp_path / "cut" / "vocab.json").read_text()
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert again["test_accuracy"] == full["test_accuracy"]


def test_dropout_acts_only_while_training_and_survives_pruning_and_export(tmp_path):
    plain = bilstm()
    dropped = build_model({"name": "bilstm", "config": {**plain.arch()["config"], "dropout": 0.5}})
    dropped.load_state_dict(plain.state_dict())
    x = rows(LENGTHS)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain(x))  # eval: the same model
        dropped.train()
        torch.manual_seed(1)
        a = dropped(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, dropped(x))  # training: features are dropped
    assert dropped.arch()["config"]["dropout"] == 0.5  # compaction rebuilds keep it
    assert "dropout" not in plain.arch()["config"]  # the study's model is unchanged
    with pytest.raises(Exception, match="dropout must be a fraction in"):
        build_model({"name": "bilstm", "config": {**plain.arch()["config"], "dropout": 1.0}})


def test_word_dropout_reads_real_tokens_as_unk_while_training_only():
    plain = bilstm()
    dropped = build_model({"name": "bilstm", "config": {**plain.arch()["config"], "word_dropout": 0.3}})
    dropped.load_state_dict(plain.state_dict())
    seen = []
    dropped.embedding.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, dropped.config["vocab_size"], (64, 50), generator=g)
    x[:, 40:] = 0  # 10 pad tokens after 40 real ones in every row
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain.eval()(x))  # eval: the same model
        seen.clear()
        torch.manual_seed(3)
        dropped.train()(x)
    fed = seen[0]
    real = fed[:, :40]
    changed = real != x[:, :40]
    assert torch.equal(real[changed], torch.full_like(real[changed], 1))  # a dropped token is <unk>
    share = changed.float().mean().item()
    assert abs(share - 0.3) < 0.03, share  # 2,560 draws: 0.3 within about 3 standard deviations
    assert torch.equal(fed[:, 40:], x[:, 40:])  # pads stay pads, so lengths do not change
    assert dropped.arch()["config"]["word_dropout"] == 0.3  # compaction rebuilds keep it
    assert "word_dropout" not in plain.arch()["config"]
    with pytest.raises(Exception, match="word_dropout must be a fraction in"):
        build_model({"name": "bilstm", "config": {**plain.arch()["config"], "word_dropout": -0.1}})
