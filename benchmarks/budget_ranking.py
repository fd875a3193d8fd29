"""What one pruning step to a MACs budget would take from a finished run's model, ranked two ways.

    python benchmarks/budget_ranking.py RUN --budgets 0.66 0.45 0.3 --name NAME

Scores are gathered as training gathers them (first-order Taylor, the run's own loss on its own
training batches, no optimizer step), then one step to each budget is chosen from the dense widths
by the loss per MAC saved, with the loss taken as the units' raw scores (the rule) and as their
per-layer normalized scores (each layer's average unit 1.0, the rule before it), with the cap of
emptied sublayers per step as it is and lifted (`--emptied-per-step`). Each choice is then
applied to a copy of the model (units removed, no fine-tuning) and scored on the run's validation
split: which ranking loses less at once. Nothing is trained or saved but
benchmarks/results/NAME.json.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from common import record

from edgeprune.data.tokenizer import TokenizerFile
from edgeprune.metrics import loss_fn
from edgeprune.prune import pruner as pruning
from edgeprune.prune.surgery import compact_
from edgeprune.rundir import load_model, load_run_data
from edgeprune.train import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished `edgeprune train` run (its model.pt)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.66, 0.45, 0.3])
    ap.add_argument("--batches", type=int, default=24, help="training batches the scores are gathered on")
    ap.add_argument("--emptied-per-step", type=int, nargs="+", default=[pruning.EMPTIED_PER_STEP, 1000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.loads((args.run / "config.json").read_text())["config"]
    tokenizer = args.run / "tokenizer.json"
    data = load_run_data(cfg, tokenizer=TokenizerFile.read(tokenizer) if tokenizer.exists() else None)
    saved = torch.load(args.run / "model.pt", weights_only=False)
    model = load_model(saved["arch"], saved["state_dict"]).train()
    batch = cfg["batch_size"]
    pr = pruning.Pruner(
        model, data.prepare(data.train.x[:2]), None, epochs=2, steps_per_epoch=1, warmup_epochs=0,
        target_macs=min(args.budgets), round_to=cfg["round_to"], min_width=cfg["min_width"], prune_connections=False,
    )  # fmt: skip
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg["seed"]))
    torch.manual_seed(cfg["seed"])  # the scoring passes run in train mode: dropout draws from this
    for i in range(args.batches):
        idx = order[i * batch : (i + 1) * batch]
        model.zero_grad()
        loss_fn(model(data.prepare(data.train.x[idx])), data.train.y[idx]).backward()
        pr.scores.accumulate(model)
        print(f"scores: batch {i + 1}/{args.batches}", flush=True)
    raw = pr.scores.unit_scores()
    norm, live = pr._unit_norms(raw)
    layers = {
        g.name: {"units": g.width, "raw_mean": float(raw[g.name].mean()), "raw_sum": float(raw[g.name].sum())}
        for g in pr.groups
    }
    dense = evaluate(model.eval(), data, data.val)
    print(f"dense: validation accuracy {dense['accuracy']:.4f}, macro-F1 {dense['f1']:.4f}")
    choices = []
    for cap in args.emptied_per_step:
        pruning.EMPTIED_PER_STEP = cap
        for budget in args.budgets:
            for rule, loss_of in (("raw", raw), ("normalized", norm)):
                keep = {g.name: int(live[g.name].sum()) for g in pr.groups}
                pr._fit_budget(keep, norm, live, budget, loss_of)
                macs = pr._cost_for(keep) / pr._baseline_cost()
                pruned = copy.deepcopy(model)
                compact_(pruned, pr.groups, pr._removed_for(keep, norm, live))
                val = evaluate(pruned.eval(), data, data.val)
                choices.append(
                    {"budget": budget, "rule": rule, "emptied_per_step": cap, "macs": macs, "widths": keep,
                     "val_accuracy": val["accuracy"], "val_f1": val["f1"]}
                )  # fmt: skip
                print(
                    f"budget {budget:g}, {rule:>10}, at most {cap} emptied: MACs {macs:.3f}, "
                    f"validation accuracy {val['accuracy']:.4f}, macro-F1 {val['f1']:.4f}"
                )
    payload = {"run": str(args.run), "batches": args.batches, "dense_val": dense, "layers": layers, "choices": choices}
    print("wrote", record(args.name, payload))


if __name__ == "__main__":
    main()
