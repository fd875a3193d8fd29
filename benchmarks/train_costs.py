"""Training throughput of the default CNN on Fashion-MNIST, and what pruning's bookkeeping costs.

- throughput: samples/s of full training steps (forward, backward, Adam), baseline model
- bookkeeping: time of the pruner's per-step score accumulation (after backward) relative to a
  training step, plus the end-of-epoch decision and compaction amortized over an epoch's steps
- distillation (--preset compact): a step with the self-distillation loss against one without
  (interleaved), and the one-time teacher pass over the training set amortized over the run

    python benchmarks/train_costs.py [--steps 200] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import record

from edgeprune.config import resolve_train_config, schedule_of
from edgeprune.data.loader import load_data
from edgeprune.metrics import training_loss
from edgeprune.models import build_model, default_config
from edgeprune.prune.pruner import Pruner
from edgeprune.train import logits_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_data("fashion-mnist")
    model = build_model({"name": "cnn", "config": default_config("cnn", data.input_meta())}).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cfg = resolve_train_config(dataset="fashion-mnist", epochs=50, target_params=0.1)
    cfg_kd = resolve_train_config(dataset="fashion-mnist", epochs=50, preset="compact")
    pruner = Pruner(model, schedule=schedule_of(cfg))
    epoch = cfg.warmup_epochs + 1  # a pruning epoch: accumulation is on
    n = len(data.train)
    perm = torch.randperm(n)

    t0 = time.perf_counter()
    teacher = logits_of(model, data, data.train.x)
    teacher_s = time.perf_counter() - t0
    step_times, hook_times, kd_step_times = [], [], []
    for i in range(2 * args.steps + 10):
        idx = perm[(i * args.batch_size) % (n - args.batch_size) :][: args.batch_size]
        distill = i % 2 == 1  # interleaved, so both kinds of step see the same machine
        t0 = time.perf_counter()
        logits = model(data.prepare(data.train.x[idx]))
        soft = teacher[idx] if distill else None  # --preset compact's distillation
        loss = training_loss(logits, data.train.y[idx], soft, cfg_kd.distill, cfg_kd.distill_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        pruner.epoch = epoch
        pruner.after_backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= 10 and distill:
            kd_step_times.append((t1 - t0) + (t3 - t2))
        elif i >= 10:  # warm-up steps excluded
            step_times.append((t1 - t0) + (t3 - t2))
            hook_times.append(t2 - t1)
    t0 = time.perf_counter()
    pruner.optimizer = opt
    pruner.end_epoch(epoch)
    end_epoch_s = time.perf_counter() - t0
    steps_per_epoch = (n + args.batch_size - 1) // args.batch_size
    step_ms = statistics.median(step_times) * 1e3
    hook_ms = statistics.median(hook_times) * 1e3
    result = {
        "model": "cnn (default widths, 421,642 parameters)",
        "dataset": "fashion-mnist",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "steps_measured": args.steps,
        "throughput_samples_per_s": args.batch_size / statistics.median(step_times),
        "train_step_ms_median": step_ms,
        "score_accumulation_ms_median": hook_ms,
        "end_of_epoch_prune_and_compact_s": end_epoch_s,
        "end_of_epoch_amortized_ms_per_step": end_epoch_s * 1e3 / steps_per_epoch,
        "bookkeeping_share_of_step": (hook_ms + end_epoch_s * 1e3 / steps_per_epoch) / step_ms,
        "target_bookkeeping_share<=0.10": (hook_ms + end_epoch_s * 1e3 / steps_per_epoch) / step_ms <= 0.10,
        "distill_step_ms_median": statistics.median(kd_step_times) * 1e3,
        "distill_share_of_step": statistics.median(kd_step_times) / statistics.median(step_times) - 1,
        "teacher_pass_s": teacher_s,
        "teacher_pass_amortized_ms_per_step": teacher_s * 1e3 / (steps_per_epoch * (cfg.epochs - cfg.warmup_epochs)),
        "pruned_widths_after_step": model.widths(),
        "note": "medians over steps; score accumulation runs only in pruning epochs; distillation steps "
        "are measured on the dense model (the costliest case) interleaved with plain ones",
    }
    print(
        {
            k: result[k]
            for k in (
                "throughput_samples_per_s",
                "train_step_ms_median",
                "score_accumulation_ms_median",
                "bookkeeping_share_of_step",
                "distill_share_of_step",
                "teacher_pass_s",
            )
        }
    )
    print("wrote", record("train_costs", result))


if __name__ == "__main__":
    main()
