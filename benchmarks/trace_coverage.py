"""Which torchvision classifiers edgeprune's traced coupling prunes exactly (and Torch-Pruning's, if installed).

Every classification model in `torchvision.models.list_models(module=torchvision.models)` is
built with random weights (weights=None, eval mode, non-trivial BatchNorm statistics), traced,
and 30% of the channels of every prunable group are removed at random; the model compacted in
place must compute what the same model with those channels' slices zeroed computes, on random
input at batch 2:

- exact: max |compacted - masked| <= TOL * max(1, max |masked|) (float32 summation order only)
- wrong: a larger difference (a coupling bug; must never happen)
- refused: edgeprune raised a UserError (an untraceable model), or nothing was left to prune
- error: an exception anywhere else (a bug in this benchmark or in the pruner)

Torch-Pruning (pip install torch-pruning; optional) prunes the same models with its own
DependencyGraph (MetaPruner, random importance, pruning_ratio=0.3 per group, the classifier
ignored). Its pruned model is compared with its own masked model: the pruning runs on a float64
copy whose every entry holds its own index, so the entries that survive tell exactly what it
removed; the original model with every other entry zeroed is the reference. Torch-Pruning also
prunes channels that a LayerNorm normalizes over; removing those changes the statistics of the
channels that stay, so such a model differs from its masked one and counts as wrong here (it is
why edgeprune freezes those spaces).

    python benchmarks/trace_coverage.py [--models resnet18 mobilenet_v2 ...] [--size 224]
    python benchmarks/trace_coverage.py --size 112   # what results/trace_coverage.json ran (2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import time
import traceback
from collections import Counter

import torch
import torchvision
from common import record
from torch import nn

from edgeprune.errors import UserError
from edgeprune.prune.groups import param_masks_for_units
from edgeprune.prune.surgery import compact_
from edgeprune.prune.trace import trace_groups

TOL = 1e-4
NUM_CLASSES = 1000
# Inception v3 is defined at 299x299; the vision transformers (ViT, Swin, MaxViT) at 224x224
# (position embeddings, windows); every other model runs at --size.
MIN_SIZE = {"inception_v3": 299}
MIN_SIZE_PREFIX = {"vit_": 224, "swin_": 224, "maxvit_": 224}


def input_size(name: str, size: int) -> int:
    least = MIN_SIZE.get(name, next((v for k, v in MIN_SIZE_PREFIX.items() if name.startswith(k)), 0))
    return max(size, least)


def classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_norms(torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES).eval())


def randomize_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that a wrongly kept channel shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


def verdict(want: torch.Tensor, got: torch.Tensor) -> dict:
    diff = float((want - got).abs().max())
    scale = float(want.abs().max())
    return {"status": "exact" if diff <= TOL * max(1.0, scale) else "wrong", "max_diff": diff, "output_scale": scale}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_edgeprune(model: nn.Module, x: torch.Tensor, fraction: float) -> dict:
    t0 = time.perf_counter()
    try:
        traced = trace_groups(model, x[:1])
    except UserError as e:
        return {"status": "refused", "reason": str(e)}
    trace_s = time.perf_counter() - t0
    reasons = Counter(f.reason for f in traced.frozen)
    out = {
        "trace_s": round(trace_s, 2),
        "groups": len(traced.groups),
        "prunable_channels": sum(g.width for g in traced.groups),
        "frozen_channels": sum(f.width for f in traced.frozen if f.node != "output"),
        "frozen_reasons": dict(reasons.most_common()),
        "unused_layers": traced.unused,
    }
    g = torch.Generator().manual_seed(0)
    removed = {grp.name: torch.randperm(grp.width, generator=g)[: int(grp.width * fraction)] for grp in traced.groups}
    if not any(len(v) for v in removed.values()):
        return {**out, "status": "refused", "reason": "no channel space is prunable"}
    masked = copy.deepcopy(model)
    masks = param_masks_for_units(masked, traced.groups, removed)
    with torch.no_grad():
        state = masked.state_dict()
        for k, m in masks.items():
            state[k].masked_fill_(~m, 0)
    compact_(model, traced.groups, removed)
    with torch.no_grad():
        out.update(verdict(masked(x), model(x)))
    out["params_before"], out["params_after"] = count(masked), count(model)
    return out


def run_torch_pruning(model: nn.Module, x: torch.Tensor, fraction: float, importance=None) -> dict:
    """Torch-Pruning's MetaPruner (random importance unless `importance` is given) on a copy; the row
    holds its pruned model under "model"."""
    import torch_pruning as tp

    ids = copy.deepcopy(model).double()
    real = dict(model.named_parameters()) | dict(model.named_buffers())
    flat = {}
    with torch.no_grad():
        for k, t in list(ids.named_parameters()) + list(ids.named_buffers()):
            if t.is_floating_point():
                flat[k] = real[k].detach().reshape(-1)
                t.copy_(torch.arange(t.numel(), dtype=torch.float64).view(t.shape))
    ignored = [
        m
        for m in ids.modules()
        if (isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES)
        or (isinstance(m, nn.Conv2d) and m.out_channels == NUM_CLASSES)
    ]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        pruner = tp.pruner.MetaPruner(
            ids,
            x[:1].double(),
            importance=importance or tp.importance.RandomImportance(),
            pruning_ratio=fraction,
            ignored_layers=ignored,
        )
        pruner.step()
    out = {"prune_s": round(time.perf_counter() - t0, 2)}
    # The surviving entries name themselves: rebuild the pruned model with the real values, and
    # the masked reference with every other entry zeroed.
    masked = copy.deepcopy(model)
    masked_tensors = dict(masked.named_parameters()) | dict(masked.named_buffers())
    with torch.no_grad():
        for k, t in list(ids.named_parameters()) + list(ids.named_buffers()):
            if k not in flat:
                continue
            idx = t.detach().reshape(-1)
            if not torch.equal(idx, idx.round()) or idx.numel() and (idx.min() < 0 or idx.max() >= flat[k].numel()):
                return {**out, "status": "error", "reason": f"{k} is not a selection of the original entries"}
            keep = torch.zeros(flat[k].numel(), dtype=torch.bool)
            keep[idx.long()] = True
            t.data = flat[k][idx.long()].view(t.shape).to(torch.float32)
            masked_tensors[k].view(-1).masked_fill_(~keep, 0)
    ids.float()
    with torch.no_grad():
        out.update(verdict(masked(x), ids(x)))
    out["params_before"], out["params_after"] = count(model), count(ids)
    out["model"] = ids
    return out


def guarded(fn, name: str, x: torch.Tensor, fraction: float) -> dict:
    """fn on a fresh copy of model `name`; one model's failure is a row, not the end of the table."""
    try:
        return fn(build(name), x, fraction)
    except Exception as e:  # noqa: BLE001
        return {"status": "error", "reason": f"{type(e).__name__}: {e}", "where": traceback.format_exc(limit=-3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="torchvision names (default: every classification model)")
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--fraction", type=float, default=0.3, help="share of each group's channels removed")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-torch-pruning", action="store_true")
    ap.add_argument("--name", default="trace_coverage", help="results/<name>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models or classifiers()
    try:
        import torch_pruning  # noqa: F401

        with_tp = not args.no_torch_pruning
    except ImportError:
        with_tp = False
    rows = []
    for name in names:
        size = input_size(name, args.size)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        row = {"model": name, "input": [2, 3, size, size]}
        t0 = time.perf_counter()
        row["edgeprune"] = guarded(run_edgeprune, name, x, args.fraction)
        if with_tp:
            row["torch_pruning"] = guarded(run_torch_pruning, name, x, args.fraction)
            row["torch_pruning"].pop("model", None)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        cols = [f"edgeprune {_cell(row['edgeprune'])}"] + ([f"tp {_cell(row['torch_pruning'])}"] if with_tp else [])
        print(f"{name:28s} {'  '.join(cols)}  ({row['seconds']} s)", flush=True)
        summary = {t: dict(Counter(r[t]["status"] for r in rows)) for t in ("edgeprune", "torch_pruning") if t in row}
        path = record(
            args.name,
            {"fraction": args.fraction, "tolerance": TOL, "summary": summary, "rows": rows},
        )
        gc.collect()
    print(f"{summary}\nwrote {path}")


def _cell(r: dict) -> str:
    if r["status"] in ("exact", "wrong"):
        kept = r["params_after"] / r["params_before"]
        return f"{r['status']} (diff {r['max_diff']:.1e}, {kept:.0%} params kept)"
    return f"{r['status']}: {r.get('reason', '')[:80]}"


if __name__ == "__main__":
    main()
