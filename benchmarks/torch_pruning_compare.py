"""A model pruned by Torch-Pruning, for comparison with an edgeprune run at equal size.

Any model edgeprune trains (the run's --model: the study's CNN, resnet20, torchvision:NAME, ...).
Torch-Pruning (pip install torch-pruning) with its Taylor importance (GroupTaylorImportance) or
L1 (GroupMagnitudeImportance, p=1: --importance l1), global pruning across layers, the classifier
ignored, widths rounded to the run's --round-to like edgeprune, iterative pruning with
fine-tuning: the same data, starting weights (the run's --weights, loaded by edgeprune's loader),
optimizer (Adam 1e-3), batch size, epochs, warm-up and pruning epochs as edgeprune's schedule
(including its fine-tuning learning rate and, when the matched run distills, the same
self-distillation from the end-of-warm-up model, or from the same --teacher run), and the same
cubic ramp toward the same final size: parameters, or MACs when the matched run has a --target-macs
or --target-latency-ms budget (the final count of the edgeprune run given with --match, or its
MACs budget while that run is still training beside this one; edgeprune's counter counts both).
After each pruning step the optimizer is rebuilt (Torch-Pruning replaces the parameter tensors),
as its examples do.

Torch-Pruning steps in its interactive mode, group by group, and stops as soon as the model fits
the epoch's budget. A group whose removal would take the model under 99% of the final target is
put back (its layers' tensors and shape attributes restored) and skipped: with --round-to 8 on
a ResNet-20 one step could take 8 of a 16-channel stage's channels, and taking whole steps left
Torch-Pruning 3-8% under edgeprune's MACs and the comparison unequal.

    python benchmarks/torch_pruning_compare.py --match runs/bench/fashion-mnist-50ep/pruned [--importance l1]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from common import record, torch_latency

from edgeprune.config import TrainConfig, schedule_of
from edgeprune.data.loader import load_data
from edgeprune.data.order import epoch_order
from edgeprune.metrics import loss_fn, training_loss
from edgeprune.models import build_model, default_config
from edgeprune.prune.cost import CostModel
from edgeprune.prune.pruner import count_params
from edgeprune.rundir import load_model
from edgeprune.teacher import teacher_outputs
from edgeprune.train import evaluate, logits_of


def macs_of(model, example) -> int:
    """MACs per example, counted as edgeprune counts them (conv/linear/RNN weights x uses)."""
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    return CostModel(model, example).macs(shapes)


def classifier_of(model):
    """The last Linear: the classifier Torch-Pruning must leave alone."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def taylor_grads(model, data, perm, batch_size: int, batches: int) -> None:
    """Gradients for Torch-Pruning's Taylor importance: accumulate over a few mini-batches."""
    model.zero_grad()
    for i in range(batches):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        loss_fn(model(data.prepare(data.train.x[idx])), data.train.y[idx]).backward()


def restore(model, shadow) -> None:
    """Put back every module's tensors and attributes from `shadow`, a deepcopy taken before, keeping
    the module objects themselves (Torch-Pruning's dependency graph holds them)."""
    for m, old in zip(model.modules(), shadow.modules()):
        m.__dict__.update({k: v for k, v in old.__dict__.items() if k != "_modules"})


def prune_step(pruner, model, size, allowed: float, floor: float) -> tuple[int, int]:
    """One Torch-Pruning step, group by group, until the model fits `allowed`; a group that would take
    it under `floor` is restored and skipped. Returns how many groups were pruned and put back (an
    early step of the ramp may yield none: its share rounds to no channel)."""
    pruned = put_back = 0
    now = size(model)
    for group in pruner.step(interactive=True):
        if now <= allowed:
            break
        shadow = copy.deepcopy(model)
        group.prune()
        after = size(model)
        if after < floor:
            restore(model, shadow)
            if size(model) != now:
                raise RuntimeError("restoring a Torch-Pruning group did not give the model back")
            put_back += 1
        else:
            now, pruned = after, pruned + 1
    return pruned, put_back


def main() -> None:
    import torch_pruning as tp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--match", type=Path, required=True, help="an edgeprune pruned run directory to match")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grad-batches", type=int, default=8, help="mini-batches per Taylor estimate")
    ap.add_argument("--importance", choices=["taylor", "l1"], default="taylor")
    ap.add_argument("--onnx", type=Path, help="also export Torch-Pruning's model here (edgeprune's exporter)")
    ap.add_argument("--name", help="results file name (default torch_pruning_<data>_<model>_<epochs>ep_<importance>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    saved = json.loads((args.match / "config.json").read_text())
    cfg = TrainConfig(**saved["config"])
    schedule = schedule_of(cfg)
    metrics_path = args.match / "metrics.json"
    # The run may still be training (both can run side by side): then aim at its budget.
    torch.manual_seed(cfg.seed)
    data = load_data(
        cfg.dataset,
        cfg.data_dir,
        seed=cfg.seed,
        limit=cfg.limit,
        val_fraction=cfg.val_fraction,
        options=cfg.data_options,
    )
    meta = data.input_meta()
    model = build_model({"name": cfg.model, "config": {**default_config(cfg.model, meta), **cfg.model_config}})
    weights_init = None
    if cfg.weights:  # the matched run started from pretrained weights: so does Torch-Pruning, loaded alike
        from edgeprune.models.weights import load_weights

        weights_init = load_weights(model, Path(cfg.weights), describe=cfg.model)
    example = data.prepare(data.train.x[:2])
    # a latency budget is matched in MACs: the run's final MACs, reached on a cubic ramp of MACs
    by_latency = cfg.target_latency_ms is not None
    by_macs = cfg.target_macs is not None or by_latency
    size = (lambda m: macs_of(m, example)) if by_macs else count_params
    base = size(model)
    if metrics_path.exists():
        done = json.loads(metrics_path.read_text())
        target = done["macs"] if by_macs else done["dense_params"]
    elif by_latency:
        raise SystemExit(f"{args.match} has a latency budget: let it finish, then match its final MACs")
    else:
        target = int((cfg.target_macs if by_macs else cfg.target_params) * base)
    importance = (
        tp.importance.GroupTaylorImportance()
        if args.importance == "taylor"
        else tp.importance.GroupMagnitudeImportance(p=1)
    )
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        global_pruning=True,
        pruning_ratio=0.97,
        iterative_steps=400,
        ignored_layers=[classifier_of(model)],
        round_to=cfg.round_to,
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n, bs = len(data.train), cfg.batch_size
    lengths = data.lengths(data.train.x) if cfg.group_by_length else None
    history, t_start, steps_taken, teacher, skipped_steps, groups_put_back = [], time.perf_counter(), 0, None, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        if cfg.teacher and teacher is None:  # the matched run's --teacher: its outputs, from the first step
            teacher = teacher_outputs(Path(cfg.teacher), data, data.input_meta(), model, logits_of)
        elif cfg.distill and teacher is None and schedule.phase(epoch) != "warmup":
            teacher = logits_of(model, data, data.train.x)  # as edgeprune does: once, before pruning
        model.train()
        for group in opt.param_groups:  # the same fine-tuning learning-rate schedule as the matched run
            group["lr"] = cfg.lr * schedule.lr_scale(epoch)
        perm = epoch_order(n, cfg.seed, epoch, lengths, bs)  # the matched run's order of this epoch
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            logits = model(data.prepare(data.train.x[idx]))
            soft = None if teacher is None else teacher[idx]
            loss = training_loss(logits, data.train.y[idx], soft, cfg.distill, cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if schedule.phase(epoch) == "prune":
            fraction = schedule.ramp(epoch, target / base) if by_latency else schedule.budget(epoch)
            allowed = max(fraction * base, target) if fraction is not None else base
            while size(model) > allowed and steps_taken < 400:
                if args.importance == "taylor":
                    taylor_grads(model, data, perm, bs, args.grad_batches)
                steps_taken += 1
                pruned, put_back = prune_step(pruner, model, size, allowed, 0.99 * target)
                groups_put_back += put_back
                if put_back and not pruned:
                    skipped_steps += 1  # every group would overshoot: this epoch's pruning ends here
                    break
            model.zero_grad()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        val = evaluate(model, data, data.val)
        history.append(
            {
                "epoch": epoch,
                "params": count_params(model),
                "macs": macs_of(model, example),
                "val_accuracy": val["accuracy"],
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"epoch {epoch}/{cfg.epochs} params {count_params(model):,} val acc {val['accuracy']:.4f} "
            f"{history[-1]['seconds']:.1f}s",
            flush=True,
        )
    train_seconds = time.perf_counter() - t_start
    test = evaluate(model, data, data.test)
    while not metrics_path.exists():  # wait for the edgeprune run trained alongside
        time.sleep(30)
    ep_metrics = json.loads(metrics_path.read_text())

    saved_model = torch.load(args.match / "model.pt", weights_only=True)
    ours = load_model(saved_model["arch"], saved_model["state_dict"]).eval()
    latency = torch_latency(
        {"edgeprune": ours, "torch_pruning": model.eval()},
        lambda b: torch.randn(b, *example.shape[1:]),
        batch=1,
        threads=1,
    )
    result = {
        "dataset": cfg.dataset,
        "epochs": cfg.epochs,
        "matched_run": str(args.match),
        "schedule": {
            "warmup_epochs": cfg.warmup_epochs,
            "prune_until": cfg.prune_until,
            "round_to": cfg.round_to,
            "budget": "macs" if by_macs else "params",
            "target": target,
            "importance": args.importance,
            "distill": cfg.distill,
            "distill_temperature": cfg.distill_temperature,
            "weights_init": weights_init,
            "grad_batches": args.grad_batches,
            "tp_steps_taken": steps_taken,
            "tp_steps_with_every_group_put_back": skipped_steps,
            "tp_groups_put_back": groups_put_back,
            "floor": "a group that would take the model under 0.99 x target is put back",
        },
        "torch_pruning": {
            "params": count_params(model),
            "macs": macs_of(model, example),
            "test_accuracy": test["accuracy"],
            "test_f1": test["f1"],
            "train_seconds": train_seconds,
            "widths": {
                n: m.out_channels if isinstance(m, torch.nn.modules.conv._ConvNd) else m.out_features
                for n, m in model.named_modules()
                if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))
            },
        },
        "edgeprune": {
            "params_dense": ep_metrics["dense_params"],
            "params_live": ep_metrics["params"],
            "macs": ep_metrics.get("macs"),
            "test_accuracy": ep_metrics["test_accuracy"],
            "test_f1": ep_metrics["test_f1"],
            "train_seconds": ep_metrics["train_seconds"],
            "widths": ep_metrics["widths"],
        },
        "torch_latency_batch1_threads1_ms": latency,
        "history": history,
        "note": "wall times come from different processes on a shared 2-core machine; compare with care",
    }
    result["edgeprune_accuracy_minus_torch_pruning_points"] = 100 * (ep_metrics["test_accuracy"] - test["accuracy"])
    print(json.dumps({k: result[k] for k in ("torch_pruning", "edgeprune")}, indent=2))
    if by_macs:
        result["macs_ratio_torch_pruning_over_edgeprune"] = result["torch_pruning"]["macs"] / ep_metrics["macs"]
    if args.onnx:
        from edgeprune.export.onnx_export import export_onnx

        args.onnx.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model.eval(), meta, args.onnx)
        result["onnx"] = str(args.onnx)
    name = f"torch_pruning_{Path(cfg.dataset).name}_{Path(cfg.model).name.replace(':', '-')}_{cfg.epochs}ep"
    print("wrote", record(args.name or f"{name}_{args.importance}", result))


if __name__ == "__main__":
    main()
