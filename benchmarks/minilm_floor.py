"""How fast can a pruned MiniLM get at all? The floor of head and FFN pruning, measured.

Takes a dense MiniLM run (edgeprune train --no-prune with --model hf:DIR) and builds from it the
smallest model that head and FFN pruning can reach: one head in every layer and `--ffn` FFN neurons
(edgeprune's --min-width), the embeddings, LayerNorms, pooler and head whole (what edgeprune does
not prune in a BERT). It exports it with edgeprune's exporter, quantizes it the way
minilm_tweets.py does (onnxruntime dynamic MatMul INT8) and times dense FP32, dense INT8, floor FP32
and floor INT8 in one interleaved onnxruntime bench (batch 1, one thread) at the given lengths.
The weights are what is left of the dense model's (its accuracy is not the point): the speedup of
the floor over dense FP32 bounds what any pruned model of this family reaches by pruning alone.

    python benchmarks/minilm_floor.py runs/bench-minilm/3ep-limit6000-seed0/dense --lengths 33 128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from common import record
from minilm_tweets import export_pair, interleaved_p50, session

from edgeprune.rundir import load_run_model


def _rows(lin: torch.nn.Linear, n: int) -> torch.nn.Linear:
    """The first `n` output units of a Linear, as a new Linear."""
    out = torch.nn.Linear(lin.in_features, n)
    with torch.no_grad():
        out.weight.copy_(lin.weight[:n])
        out.bias.copy_(lin.bias[:n])
    return out


def _cols(lin: torch.nn.Linear, n: int) -> torch.nn.Linear:
    """The first `n` input columns of a Linear (its bias whole), as a new Linear."""
    out = torch.nn.Linear(n, lin.out_features)
    with torch.no_grad():
        out.weight.copy_(lin.weight[:, :n])
        out.bias.copy_(lin.bias)
    return out


def floor_model(model, heads: int, ffn: int):
    """The run's model with its first `heads` heads a layer (query, key and value rows, the output
    projection's columns; BERT's attention reshapes by head size, so the head count follows) and its
    first `ffn` FFN neurons (the intermediate Linear's rows, the output Linear's columns)."""
    for layer in model.hf.bert.encoder.layer:
        att = layer.attention.self
        keep = heads * att.attention_head_size
        att.query, att.key, att.value = (_rows(lin, keep) for lin in (att.query, att.key, att.value))
        att.num_attention_heads, att.all_head_size = heads, keep
        layer.attention.output.dense = _cols(layer.attention.output.dense, keep)
        layer.intermediate.dense = _rows(layer.intermediate.dense, ffn)
        layer.output.dense = _cols(layer.output.dense, ffn)
    return model.eval()


def onnx_parity(model, path: Path, vocab: int) -> float:
    """Max abs difference of the ONNX file's logits from torch's, on 3 x 21 random tokens."""
    import numpy as np

    ids = torch.randint(1000, vocab, (3, 21))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = model.hf(input_ids=ids, attention_mask=mask).logits.numpy()
    (got,) = session(path).run(None, {"input": ids.numpy(), "attention_mask": mask.numpy()})
    return float(np.abs(got - want).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dense_run", type=Path)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--ffn", type=int, default=8, help="FFN neurons left in every layer (edgeprune's --min-width)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[33, 128])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bench-runs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-minilm/floor"))
    ap.add_argument("--name", default="minilm_floor")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(1)
    dense, saved = load_run_model(args.dense_run / "model.pt")
    meta = {"task": "text", "inputs": ["input", "attention_mask"], "vocab_size": saved["input"]["vocab_size"]}
    files = {"dense": export_pair(dense, meta, args.out / "dense")}
    small, _ = load_run_model(args.dense_run / "model.pt")
    small = floor_model(small, args.heads, args.ffn)
    files["floor"] = export_pair(small, meta, args.out / f"floor-h{args.heads}-ffn{args.ffn}")
    parity = onnx_parity(small, files["floor"]["fp32"], meta["vocab_size"])
    if parity > 1e-4:
        sys.exit(f"the floor model's ONNX file disagrees with torch by {parity:.2e}")
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in (("dense", dense), ("floor", small))}
    sessions = {f"{arm}/{p}": session(path) for arm, pair in files.items() for p, path in pair.items()}
    latency = {
        str(n): interleaved_p50(sessions, n, meta["vocab_size"], args.rounds, args.bench_runs) for n in args.lengths
    }
    speedups = {n: {k: lat["dense/fp32"]["p50_ms"] / v["p50_ms"] for k, v in lat.items()} for n, lat in latency.items()}
    payload = {
        "dense_run": str(args.dense_run),
        "floor": {"heads_per_layer": args.heads, "ffn_per_layer": args.ffn, "params": params},
        "floor_onnx_max_abs_diff_from_torch": parity,
        "latency_method": "onnxruntime, batch 1, one thread, interleaved, "
        f"{args.rounds} rounds x {args.bench_runs} runs, p50 = median of round medians",
        "int8": "onnxruntime quantize_dynamic, MatMul, QInt8 weights (as minilm_tweets.py)",
        "latency_batch1_threads1": latency,
        "speedup_over_dense_fp32": speedups,
        "notes": args.note,
    }
    print(json.dumps({"params": params, "speedup_over_dense_fp32": speedups}, indent=1))
    print("wrote", record(args.name, payload))


if __name__ == "__main__":
    sys.exit(main())
