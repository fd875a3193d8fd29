"""`--model hf:DIR`: pretrained Hugging Face classifiers (tiny random-init BERT and ViT written with
save_pretrained, a WordPiece tokenizer built with the tokenizers library; nothing downloaded).

Heads and FFN units are removed exactly (compacted equals masked); a layer left with fewer heads
than the others exports; ONNX matches PyTorch at batch 1 and 7 and two sequence lengths; the
output does not depend on trailing padding; `edgeprune train / export / bench` and
deploy/predict.py run end to end, the bundle's tokenizer.json giving the model's own tokenizer's
ids; an interrupted run resumes exactly; bad input is one sentence and exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_models import write_tiny_bert, write_tiny_vit
from test_cli_errors import run_cli

from edgeprune.models import build_model
from edgeprune.prune.groups import param_masks_for_units
from edgeprune.prune.surgery import compact_
from edgeprune.prune.trace import trace_groups

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # compacted vs masked, padded vs not, in float32
ONNX_ATOL = 1e-4  # onnxruntime vs PyTorch
HEADS, HEAD = 4, 8  # the tiny BERT: 4 heads of 8 channels per layer
TRICKY = [
    "",
    "Café naïve résumé — déjà vu",
    "LOVED it 😀👍🏽 !!!",
    "see https://www.example.com/path?q=1&x=2 and www.movie.com",
    "   spaces\tand\nnewlines   ",
    "中文 text ١٢٣",
    "the " * 200,  # longer than the model reads: truncated the same way
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"bert": write_tiny_bert(root / "bert", heads=HEADS), "vit": write_tiny_vit(root / "vit")}


def text_batch(lengths: list[int], seq: int, seed: int = 0) -> torch.Tensor:
    """Packed [B, 2, seq] ids and masks: row i has lengths[i] tokens ([CLS] ... [SEP]), then padding (id 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), seq, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, 60, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = 2, 3
        mask[i, :n] = 1
    return torch.stack([ids, mask], 1)


def built(dirs, kind: str):
    """(model in eval mode, example input) for the tiny BERT (3 classes) or ViT (10 classes)."""
    n = 3 if kind == "bert" else 10
    model = build_model({"name": f"hf:{dirs[kind]}", "config": {"num_labels": n}}).eval()
    example = text_batch([9, 5], 9) if kind == "bert" else torch.randn(2, 1, 28, 28)
    return model, example


def masked(model, groups, removed):
    """A copy with every slice of the removed units zeroed."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        state = m.state_dict()
        for k, mask in param_masks_for_units(m, groups, removed).items():
            state[k].masked_fill_(~mask, 0)
    return m


def layers(model):
    return model.hf.bert.encoder.layer if hasattr(model.hf, "bert") else model.hf.vit.layers


def qkv(layer):
    """A layer's query, key and value projections (BERT's names, or ViT's in transformers 5)."""
    att = layer.attention
    return (
        (att.self.query, att.self.key, att.self.value) if hasattr(att, "self") else (att.q_proj, att.k_proj, att.v_proj)
    )


QUERY = ("attention.self.query", "attention.q_proj")  # the group of a layer's heads, by its first member


def assert_computes_like(ref, model, kind: str, example) -> None:
    """`model` (compacted) gives `ref`'s (masked) outputs within ATOL on the example and one more batch."""
    checks = [example] + ([text_batch([3, 12, 7], 12, seed=2)] if kind == "bert" else [torch.randn(3, 1, 28, 28)])
    for x in checks:
        with torch.no_grad():
            want, got = ref(x), model(x)
        assert float(want.abs().max()) > 1e-2
        assert float((want - got).abs().max()) <= ATOL


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_heads_and_ffn_units_are_removed_exactly(dirs, kind):
    """A third of every group's units (heads and FFN neurons of both layers) removed: the compacted
    model equals the masked one, and each query/key/value lost 8 rows per head removed."""
    model, example = built(dirs, kind)
    traced = trace_groups(model, (example,))
    names = {g.name: g for g in traced.groups}
    heads = [n for n in names if n.endswith(QUERY)]
    assert len(heads) == 2 and all(names[h].width == (HEADS if kind == "bert" else 2) for h in heads), names
    ffn = [n for n in names if "intermediate" in n or "mlp.fc1" in n]
    assert len(ffn) == 2, names
    g = torch.Generator().manual_seed(1)
    removed = {grp.name: torch.randperm(grp.width, generator=g)[: max(1, grp.width // 3)] for grp in traced.groups}
    ref = masked(model, traced.groups, removed)
    widths = [qkv(layer)[0].out_features for layer in layers(model)]
    compact_(model, traced.groups, removed)
    for layer, before, h in zip(layers(model), widths, heads):
        for proj in qkv(layer):
            assert proj.out_features == before - HEAD * len(removed[h])
    assert_computes_like(ref, model, kind, example)


def onnx_meta(model, kind: str) -> dict:
    if kind == "bert":
        return {"task": "text", "inputs": ["input", "attention_mask"], "vocab_size": 60}
    return {"task": "image", "input_shape": ["batch", 1, 28, 28]}


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_a_layer_with_fewer_heads_exports_and_matches(dirs, kind, tmp_path):
    """One head gone from the first layer only: the ONNX export (dynamic batch and sequence, the
    attention mask an input) matches PyTorch at batch 1 and 7 and two lengths, and a text's
    logits do not change when trailing padding is added (in PyTorch and in onnxruntime)."""
    ort = pytest.importorskip("onnxruntime")
    from edgeprune.export.onnx_export import check_symbolic, export_onnx

    model, example = built(dirs, kind)
    traced = trace_groups(model, (example,))
    first = [g.name for g in traced.groups if ".0." in g.name and g.name.endswith(QUERY)]
    assert len(first) == 1
    removed = {g.name: torch.tensor([1] if g.name == first[0] else [], dtype=torch.long) for g in traced.groups}
    compact_(model, traced.groups, removed)
    q = [qkv(layer)[0].out_features for layer in layers(model)]
    full = HEADS if kind == "bert" else 2
    assert q == [(full - 1) * HEAD, full * HEAD]
    meta = onnx_meta(model, kind)
    path = tmp_path / "model.onnx"
    export_onnx(model, meta, path)
    check_symbolic(path, meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == meta.get("inputs", ["input"])
    for batch, seq in ((1, 6), (7, 19)):
        if kind == "bert":
            lengths = [seq] + [int(n) for n in np.random.default_rng(seq).integers(3, seq + 1, batch - 1)]
            x = text_batch(lengths, seq, seed=seq)
            feed = {"input": x[:, 0].numpy(), "attention_mask": x[:, 1].numpy()}
        else:
            x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seq))
            feed = {"input": x.numpy()}
        with torch.no_grad():
            want = model(x)
        (got,) = sess.run(None, feed)
        assert got.shape == (batch, 3 if kind == "bert" else 10)
        assert np.abs(got - want.numpy()).max() <= ONNX_ATOL
        if kind == "bert":  # the same texts with 5 more padding columns: the same logits
            padded = torch.cat([x, torch.zeros(batch, 2, 5, dtype=torch.int64)], 2)
            with torch.no_grad():
                assert float((model(padded) - want).abs().max()) <= ATOL
            (got_padded,) = sess.run(None, {"input": padded[:, 0].numpy(), "attention_mask": padded[:, 1].numpy()})
            assert np.abs(got_padded - got).max() <= ONNX_ATOL


def fit_in_users_loop(model, pruner, opt, batch, steps_per_epoch: int, epochs: int = 2) -> None:
    """A user's own fine-tuning loop of an HF classifier with the Pruner's per-step and per-epoch calls."""
    ids, mask, y = batch
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)
            opt.zero_grad()
            loss.backward()
            pruner.after_backward()
            opt.step()
            pruner.step()
        pruner.end_epoch(epoch)


def test_a_users_own_loop_prunes_heads_with_the_same_calls(dirs):
    """The Python API on a plain transformers model (a ModelOutput out, ids and mask in): the same
    Pruner calls prune it in place, AdamW's param group and state follow it, and it still runs."""
    from transformers import AutoModelForSequenceClassification

    from edgeprune import Pruner

    model = AutoModelForSequenceClassification.from_pretrained(dirs["bert"], num_labels=2)
    x = text_batch([12, 7, 9, 12], 12, seed=3)
    ids, mask, y = x[:, 0], x[:, 1], torch.tensor([0, 1, 1, 0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    assert len(opt.param_groups) == 1
    pruner = Pruner(model, (ids, mask), opt, epochs=2, warmup_epochs=0, target_macs=0.4, round_to=1, min_width=1)
    fit_in_users_loop(model, pruner, opt, (ids, mask, y), steps_per_epoch=3)
    now = list(model.parameters())  # resized tensors are new Parameters; the optimizer points at them
    assert len(now) == len(params) and all(a is b for a, b in zip(opt.param_groups[0]["params"], now))
    q = [layer.attention.self.query for layer in model.bert.encoder.layer]
    ffn = [layer.intermediate.dense for layer in model.bert.encoder.layer]
    assert sum(p.out_features for p in q) < 2 * HEADS * HEAD or sum(f.out_features for f in ffn) < 64
    for p in now:  # AdamW's moments follow every resized tensor
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape == state["exp_avg_sq"].shape
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=mask).logits.shape == (4, 2)


def test_trainer_callback_prunes_while_transformers_trainer_fine_tunes(dirs, tmp_path):
    """transformers' own Trainer with EdgepruneCallback(pruner): its optimizer (made after the
    pruner) is the one compaction slices; heads and FFN neurons go while it trains."""
    pytest.importorskip("accelerate")  # the Trainer needs it
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from edgeprune import Pruner
    from edgeprune.hf import EdgepruneCallback

    model = AutoModelForSequenceClassification.from_pretrained(dirs["bert"], num_labels=2)
    x = text_batch([12, 7, 9, 12] * 4, 12, seed=3)
    data = [{"input_ids": x[i, 0], "attention_mask": x[i, 1], "labels": torch.tensor(i % 2)} for i in range(16)]
    pruner = Pruner(
        model, (x[:2, 0], x[:2, 1]), epochs=2, steps_per_epoch=4, warmup_epochs=0, target_macs=0.4, round_to=1,
        min_width=1,
    )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-3,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[EdgepruneCallback(pruner)])
    trainer.train()
    q = [layer.attention.self.query.weight.shape[0] for layer in model.bert.encoder.layer]
    ffn = [layer.intermediate.dense.weight.shape[0] for layer in model.bert.encoder.layer]
    assert sum(q) < 2 * HEADS * HEAD and sum(ffn) < 64, (q, ffn)
    assert all(w % HEAD == 0 for w in q)
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert all(opt.state[p]["exp_avg"].shape == p.shape for p in model.parameters() if p in opt.state)


def test_trainer_callback_refuses_load_best_model_at_end(dirs, tmp_path):
    """load_best_model_at_end would load a checkpoint wider than the pruned model (saved before later
    steps) and finalize weights the pruner never saw: refused in one sentence when training starts,
    before any step."""
    pytest.importorskip("accelerate")
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from edgeprune import Pruner
    from edgeprune.errors import UserError
    from edgeprune.hf import EdgepruneCallback

    model = AutoModelForSequenceClassification.from_pretrained(dirs["bert"], num_labels=2)
    x = text_batch([12, 7, 9, 12] * 4, 12, seed=3)
    data = [{"input_ids": x[i, 0], "attention_mask": x[i, 1], "labels": torch.tensor(i % 2)} for i in range(16)]
    pruner = Pruner(model, (x[:2, 0], x[:2, 1]), epochs=2, steps_per_epoch=4, warmup_epochs=0, target_macs=0.4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, report_to=[],
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, callbacks=[EdgepruneCallback(pruner)]
    )
    with pytest.raises(UserError, match=r"^EdgepruneCallback cannot be used with load_best_model_at_end=True .*False"):
        trainer.train()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)  # no step ran


# --- the command line, end to end -----------------------------------------------------------------


def edgeprune(*args, cwd: Path, env=None, check=True) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})}
    r = subprocess.run(
        [sys.executable, "-m", "edgeprune", *map(str, args)],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


TRAIN = ["--dataset", "sst2", "--epochs", "2", "--limit", "240", "--threads", "1", "--lr", "1e-3"]
PRUNE = ["--target-macs", "0.35", "--round-to", "1", "--min-width", "1", "--max-accuracy-drop", "none"]


@pytest.fixture(scope="module")
def trained(dirs, data_root, tmp_path_factory) -> Path:
    """A run of `edgeprune train --model hf:DIR` on sst2-like text, exported."""
    here = tmp_path_factory.mktemp("hf_run")
    run = here / "run"
    r = edgeprune(
        "train", *TRAIN, *PRUNE, "--data-dir", data_root, "--model", f"hf:{dirs['bert']}", "--out", run, cwd=here
    )
    assert "started from the pretrained weights" in r.stdout and "no warm-up" in r.stdout, r.stdout
    assert "reads at most 64 tokens, so --max-len 256 is lowered to 64" in r.stdout, r.stdout
    edgeprune(
        "export", run, "--quantize", "dynamic", "--max-acc-drop", "100", cwd=here
    )  # a random tiny model: keep INT8
    assert [p.name for p in here.iterdir()] == ["run"]  # onnxruntime's temporary files stayed out of the cwd
    return run


def test_train_removes_heads_and_ffn_and_export_matches(trained, dirs):
    """model.pt holds fewer heads and FFN neurons than the pretrained model; it is rebuilt from the
    run alone (config in its architecture, widths from its tensors), and every export step kept
    the logits within tolerance."""
    from edgeprune.export.onnx_export import load_run_model

    model, record = load_run_model(trained / "model.pt")
    assert record["arch"]["config"]["hf_config"]["model_type"] == "bert"
    q = [qkv(layer)[0].out_features for layer in layers(model)]
    ffn = [layer.intermediate.dense.out_features for layer in layers(model)]
    assert all(w % HEAD == 0 for w in q) and sum(q) < 2 * HEADS * HEAD, q  # whole heads went
    assert sum(ffn) < 2 * 32, ffn
    config = json.loads((trained / "config.json").read_text())
    assert config["config"]["warmup_epochs"] == 0 and config["weights_init"]["path"] == str(dirs["bert"])
    parity = json.loads((trained / "export" / "parity.json").read_text())
    rows = {r["name"]: r for r in parity["variants"]}
    assert rows["onnx"]["max_abs_diff"] <= ONNX_ATOL and rows["simplified"]["max_abs_diff"] <= ONNX_ATOL
    assert "dynamic" in rows and parity["model_kind"]["kind"] == "linear"


def tokenize(tokenizer_file: Path, texts: list[str]) -> torch.Tensor:
    """Packed ids and masks [N, 2, T] from a bundle's tokenizer.json, as a device makes them."""
    from tokenizers import Tokenizer

    encs = Tokenizer.from_file(str(tokenizer_file)).encode_batch(texts)
    ids = torch.tensor([e.ids for e in encs])
    return torch.stack([ids, torch.tensor([e.attention_mask for e in encs])], 1)


def test_bundle_tokenizer_gives_the_models_own_ids(trained, dirs):
    """tokenizer.json in the bundle, read with the tokenizers package alone, gives the ids and
    masks transformers' AutoTokenizer gives for the model's directory (truncated at 64)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    bundle = trained / "bundle"
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["tokenizer"] == "tokenizer.json" and meta["inputs"] == ["input", "attention_mask"]
    assert meta["max_len"] == 64 and meta["pad_id"] == 0
    device = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    ref = AutoTokenizer.from_pretrained(str(dirs["bert"]))
    for text in TRICKY:
        want = ref(text, truncation=True, max_length=64)
        got = device.encode(text)
        assert got.ids == want["input_ids"], text
        assert got.attention_mask == want["attention_mask"], text
    assert len(device.encode(TRICKY[-1]).ids) == 64
    with np.load(bundle / "eval.npz") as z:
        assert z["x"].shape == z["attention_mask"].shape and z["x"].shape[0] == len(z["y"])


def test_bundle_onnx_matches_torch_on_real_texts_and_ignores_padding(trained):
    """The bundle's float model on texts tokenized by its tokenizer.json: batch 1 and 7 at two
    lengths match the run's PyTorch model; the same text alone or padded within a batch agrees."""
    import onnxruntime as ort

    from edgeprune.export.onnx_export import load_run_model

    model, _ = load_run_model(trained / "model.pt")
    sess = ort.InferenceSession(str(trained / "bundle" / "model.onnx"), providers=["CPUExecutionProvider"])
    texts = [t for t in TRICKY if t.strip()] + ["a wonderful film", "dull plot, the worst acting"]
    packed = tokenize(trained / "bundle" / "tokenizer.json", texts[:7])  # padded to the longest: 64 tokens
    short = tokenize(trained / "bundle" / "tokenizer.json", texts[-2:-1])  # 6 tokens
    for x in (short, packed, packed[:1]):
        with torch.no_grad():
            want = model(x).numpy()
        (got,) = sess.run(None, {"input": x[:, 0].numpy(), "attention_mask": x[:, 1].numpy()})
        assert np.abs(got - want).max() <= ONNX_ATOL
    alone = tokenize(trained / "bundle" / "tokenizer.json", [texts[1]])
    (a,) = sess.run(None, {"input": alone[:, 0].numpy(), "attention_mask": alone[:, 1].numpy()})
    (b,) = sess.run(None, {"input": packed[:, 0].numpy(), "attention_mask": packed[:, 1].numpy()})
    assert alone.shape[-1] < packed.shape[-1] and np.abs(a[0] - b[1]).max() <= ONNX_ATOL


def test_predict_classifies_raw_text_and_bench_times_with_seq_len(trained, tmp_path):
    """deploy/predict.py text (onnxruntime and tokenizers, no torch) labels raw text as PyTorch does;
    `edgeprune bench --seq-len` feeds ids and mask and scores the eval set as export did."""
    from edgeprune.export.onnx_export import load_run_model

    texts = ["a wonderful film", "", "Café 😀 https://x.com dull"]
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy" / "predict.py"),
            "text",
            str(trained / "bundle"),
            *texts,
            "--model",
            "float",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    model, record = load_run_model(trained / "model.pt")
    with torch.no_grad():
        want = model(tokenize(trained / "bundle" / "tokenizer.json", texts)).softmax(-1).numpy()
    labels = record["input"]["labels"]
    for row, p in zip(rows, want):
        assert row["label"] == labels[int(p.argmax())]
        assert abs(row["scores"][labels[1]] - float(p[1])) <= 1e-4
    out = tmp_path / "bench.json"
    edgeprune(
        "bench", trained / "bundle", "--seq-len", "32", "--runs", "3", "--rounds", "1", "--warmup", "1", "--json", out,
        cwd=tmp_path,
    )  # fmt: skip
    results = {row["variant"]: row for row in json.loads(out.read_text())["results"]}
    parity = {r["name"]: r for r in json.loads((trained / "export" / "parity.json").read_text())["variants"]}
    assert {k: r["status"] for k, r in results.items()} == {"float": "ok", "int8": "ok"}, results
    assert results["float"]["accuracy"] == pytest.approx(parity["simplified"]["accuracy"], abs=1e-9)
    shapes = {i["name"]: i["bench_shape"]["1"] for i in results["float"]["inputs"]}
    assert shapes == {"input": [1, 32], "attention_mask": [1, 32]}


def test_an_interrupted_run_resumes_exactly(dirs, data_root, tmp_path):
    """Killed after epoch 1's checkpoint, then --resume: the final weights (pruned widths included)
    equal an uninterrupted run's."""
    args = [*TRAIN[:2], "--epochs", "2", "--limit", "120", "--threads", "1", "--lr", "1e-3", *PRUNE]
    args += ["--data-dir", data_root, "--model", f"hf:{dirs['bert']}"]
    edgeprune("train", *args, "--out", tmp_path / "whole", cwd=tmp_path)
    crash = {"EDGEPRUNE_FAULT": "after-checkpoint:1"}
    r = edgeprune("train", *args, "--out", tmp_path / "cut", cwd=tmp_path, env=crash, check=False)
    assert r.returncode != 0 and not (tmp_path / "cut" / "model.pt").exists()
    edgeprune("train", *args, "--out", tmp_path / "cut", "--resume", cwd=tmp_path)
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def test_vit_trains_on_images_and_exports(dirs, data_root, tmp_path):
    """An image classifier from a directory: its 3-class head replaced by one for mnist's 10 classes
    (and said), trained and pruned on mnist-like images, exported within tolerance."""
    three = write_tiny_vit(tmp_path / "vit3", num_labels=3)
    run = tmp_path / "run"
    r = edgeprune(
        "train", "--dataset", "mnist", "--data-dir", data_root, "--model", f"hf:{three}", "--epochs", "1",
        "--limit", "120", "--threads", "1", *PRUNE, "--out", run, cwd=tmp_path,
    )  # fmt: skip
    assert "its classifier (classifier.bias, classifier.weight) is for another number of classes" in r.stdout
    edgeprune("export", run, "--quantize", "none", cwd=tmp_path)
    parity = {r["name"]: r for r in json.loads((run / "export" / "parity.json").read_text())["variants"]}
    assert parity["simplified"]["max_abs_diff"] <= ONNX_ATOL


# --- bad input --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory, dirs) -> dict[str, Path]:
    """A directory of an architecture with no classification head, a text model without its
    tokenizer, and a package directory that hides transformers."""
    from transformers import SamConfig

    w = tmp_path_factory.mktemp("hf_bad")
    SamConfig().save_pretrained(str(w / "sam"))
    no_tok = w / "no_tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (no_tok / f).write_bytes((dirs["bert"] / f).read_bytes())
    shim = w / "no_transformers" / "transformers"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named transformers (this test hides it)")\n')
    return {"sam": w / "sam", "no_tok": no_tok, "shim": w / "no_transformers", "bert": dirs["bert"]}


CASES = {
    "missing-dir": (["hf:{tmp}/nowhere/bert"], ["does not exist", "save_pretrained"], None),
    "hub-id-offline": (["hf:someone/tiny-bert-x"], ["cannot get 'someone/tiny-bert-x'", "--model hf:DIR"], None),
    "unsupported-arch": (["hf:{sam}"], ["'sam' model", "no sequence or image classification head"], None),
    "no-tokenizer": (["hf:{no_tok}"], ["tokenizer", "beside config.json"], None),
    "image-data": (["hf:{bert}", "--dataset", "mnist"], ["is a text classifier but mnist is image data"], None),
    "no-transformers": (["hf:{bert}"], ["needs transformers", "pip install 'edgeprune[hf]'"], "shim"),
    "vocab-size": (["hf:{bert}", "--vocab-size", "500"], ["--vocab-size", "its own; drop --vocab-size"], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_sentence_and_exit_2(bad, data_root, tmp_path, case):
    model, says, hide = CASES[case]
    model = [m.format(tmp=tmp_path, **bad) for m in model]
    dataset = [] if "--dataset" in model else ["--dataset", "sst2"]
    args = ["train", "--model", *model, *dataset, "--data-dir", str(data_root), "--out", str(tmp_path / "x")]
    r = run_cli(args, cwd=tmp_path, first_on_path=bad[hide] if hide else None)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for phrase in says:
        assert phrase in lines[0], lines[0]
    assert not (tmp_path / "x" / "config.json").exists()


# --- whole sublayers: an attention with no head, an FFN with no neuron --------------------------------


FFN = ("intermediate.dense", "mlp.fc1")  # the group of a layer's FFN neurons, by its producer


def emptied(dirs, kind: str):
    """(compacted model, masked reference, example, traced groups): every head of layer 0 and every
    FFN neuron of layer 1 removed, and one unit of every other group."""
    model, example = built(dirs, kind)
    traced = trace_groups(model, (example,))
    by = {g.name: g for g in traced.groups}
    att0 = next(n for n in by if ".0." in n and n.endswith(QUERY))
    ffn1 = next(n for n in by if ".1." in n and n.endswith(FFN))
    assert by[att0].whole and by[ffn1].whole, traced.describe()
    removed = {n: torch.arange(g.width) if n in (att0, ffn1) else torch.tensor([1]) for n, g in by.items()}
    ref = masked(model, traced.groups, removed)
    compact_(model, traced.groups, removed)
    return model, ref, example


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_a_whole_attention_and_a_whole_ffn_go_exactly(dirs, kind):
    """Layer 0 left with no head and layer 1 with no FFN neuron: their query, key, value and FFN
    rows are gone (no product left) and the model equals the masked one within 1e-5 in eval mode;
    in BERT the attention block is then LayerNorm(output.dense.bias + input), computed here by hand."""
    from edgeprune.prune.sublayers import EmptyLinear

    model, ref, example = emptied(dirs, kind)
    first, second = layers(model)
    assert all(p.out_features == 0 and isinstance(p, EmptyLinear) for p in qkv(first))
    ffn = second.intermediate.dense if kind == "bert" else second.mlp.fc1
    assert ffn.out_features == 0 and isinstance(ffn, EmptyLinear)
    assert all(p.out_features == HEAD * ((HEADS if kind == "bert" else 2) - 1) for p in qkv(second))
    assert_computes_like(ref, model, kind, example)
    if kind == "bert":
        seen = {}
        first.attention.register_forward_hook(lambda m, a, out: seen.update(x=a[0], y=out[0]))
        with torch.no_grad():
            model(text_batch([3, 12, 7], 12, seed=2))  # the second batch assert_computes_like checked
            out = first.attention.output
            by_hand = out.LayerNorm(out.dense.bias + seen["x"])
        assert float((seen["y"] - by_hand).abs().max()) <= ATOL


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_whole_sublayers_reload_and_export(dirs, kind, tmp_path):
    """The emptied model saved as a state dict is rebuilt from its config alone (the sizes, 0
    included, are the tensors' shapes) and equals it; its ONNX export matches at batch 1 and 7."""
    ort = pytest.importorskip("onnxruntime")
    from edgeprune.export.onnx_export import check_symbolic, export_onnx
    from edgeprune.prune.surgery import load_resized

    model, _, _ = emptied(dirs, kind)
    state = model.state_dict()
    assert (
        state[
            [k for k in state if k.endswith(("0.attention.self.query.weight", "0.attention.q_proj.weight"))][0]
        ].shape[0]
        == 0
    )
    again = load_resized(build_model(model.arch()).eval(), state)
    meta = onnx_meta(model, kind)
    path = tmp_path / "model.onnx"
    export_onnx(again, meta, path)
    check_symbolic(path, meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 6), (7, 19)):
        if kind == "bert":
            x = text_batch(
                [seq] + [int(n) for n in np.random.default_rng(seq).integers(3, seq + 1, batch - 1)], seq, seq
            )
            feed = {"input": x[:, 0].numpy(), "attention_mask": x[:, 1].numpy()}
        else:
            x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seq))
            feed = {"input": x.numpy()}
        with torch.no_grad():
            want, rebuilt = model(x), again(x)
        assert float((want - rebuilt).abs().max()) <= ATOL
        (got,) = sess.run(None, feed)
        assert np.abs(got - want.numpy()).max() <= ONNX_ATOL


def test_removing_every_unit_of_an_unchecked_group_is_refused(dirs):
    """A group the rule was not checked for (here: its mark taken away) keeps its units: compaction
    refuses, before anything changes, with the reason."""
    from edgeprune.errors import UserError

    model, example = built(dirs, "bert")
    traced = trace_groups(model, (example,))
    g = next(g for g in traced.groups if g.name.endswith(QUERY))
    g.whole = False
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="cannot remove every unit of"):
        compact_(model, traced.groups, {g.name: torch.arange(g.width)})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_pruner_removes_whole_sublayers_to_meet_a_budget(dirs):
    """A tight MACs budget with the floor at one head and eight neurons: the budget's steps take
    whole attention or FFN sublayers below it, the widths say 0, and the model still runs."""
    from transformers import AutoModelForSequenceClassification

    from edgeprune import Pruner

    model = AutoModelForSequenceClassification.from_pretrained(dirs["bert"], num_labels=2)
    x = text_batch([12, 7, 9, 12], 12, seed=3)
    ids, mask, y = x[:, 0], x[:, 1], torch.tensor([0, 1, 1, 0])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = Pruner(model, (ids, mask), opt, epochs=2, warmup_epochs=0, target_macs=0.05, round_to=8, min_width=8)
    fit_in_users_loop(model, pruner, opt, (ids, mask, y), steps_per_epoch=2)
    pruner.finalize()
    widths = pruner.summary().widths_after
    gone = [k for k, w in widths.items() if w == 0]
    assert gone, widths
    q = [layer.attention.self.query.out_features for layer in model.bert.encoder.layer]
    f = [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer]
    assert 0 in q + f, (q, f)
    for k in gone:
        assert k.endswith((*QUERY, *FFN, "pooler.dense")), k
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids, attention_mask=mask).logits).all()


def test_one_pruning_step_empties_at_most_one_sublayer(dirs):
    """Every head scores next to nothing and every FFN neuron much more, and the budget asks for
    90% fewer MACs in one step: by loss per MAC every attention would go at once (a whole-split
    MiniLM run's first tries did that and collapsed). The step empties one sublayer and takes the
    others down to their floor of one head; the model still runs."""
    from edgeprune import Pruner
    from edgeprune.prune.pruner import EMPTIED_PER_STEP
    from edgeprune.prune.schedule import PruneSchedule

    model, example = built(dirs, "bert")
    sched = PruneSchedule(
        epochs=2, warmup_epochs=0, prune_until=0.5, threshold=0.0, round_to=1, min_width=1,
        prune_connections=False, target_macs=0.1,
    )  # fmt: skip
    p = Pruner(model, example, schedule=sched)
    p.scores.unit = {
        g.name: torch.full((g.width,), 1e-9 if g.name.endswith(QUERY) else 1.0, dtype=torch.float64) for g in p.groups
    }
    p.scores.batches = 1
    p.end_epoch(1)
    heads = {n: w for n, w in p.widths().items() if n.endswith(QUERY)}
    assert len(heads) > EMPTIED_PER_STEP == 1, heads
    assert sorted(heads.values()) == [0] + [HEAD] * (len(heads) - 1), heads  # one emptied, the rest at one head
    assert sum(w == 0 for w in p.widths().values()) == EMPTIED_PER_STEP
    with torch.no_grad():
        assert torch.isfinite(model(example)).all()


def test_a_run_that_empties_sublayers_reloads_and_exports(dirs, data_root, tmp_path):
    """`edgeprune train` with a budget below one head and eight neurons per layer: sublayers go
    whole, the run's metrics say 0 for them, model.pt is rebuilt from the run directory alone with
    those sizes (0 included), and every export step matches PyTorch within tolerance."""
    from edgeprune.export.onnx_export import load_run_model

    run = tmp_path / "run"
    prune = ["--target-macs", "0.1", "--round-to", "8", "--min-width", "8", "--max-accuracy-drop", "none"]
    edgeprune(
        "train", *TRAIN, *prune, "--data-dir", data_root, "--model", f"hf:{dirs['bert']}", "--out", run, cwd=tmp_path
    )
    widths = json.loads((run / "metrics.json").read_text())["widths"]
    assert 0 in widths.values(), widths
    model, _ = load_run_model(run / "model.pt")
    sizes = [qkv(layer)[0].out_features for layer in layers(model)]
    sizes += [layer.intermediate.dense.out_features for layer in layers(model)]
    assert 0 in sizes, sizes
    for name, w in widths.items():  # the run's record and the rebuilt model agree, 0 included
        assert model.get_submodule(name).out_features == w, name
    edgeprune("export", run, "--quantize", "none", cwd=tmp_path)
    parity = {r["name"]: r for r in json.loads((run / "export" / "parity.json").read_text())["variants"]}
    assert parity["onnx"]["max_abs_diff"] <= ONNX_ATOL and parity["simplified"]["max_abs_diff"] <= ONNX_ATOL
