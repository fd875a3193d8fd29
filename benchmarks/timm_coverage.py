"""Which timm models edgeprune prunes (and Torch-Pruning, on the same models and versions).

The models: the smallest member (fewest parameters, counted on the meta device) of every timm
family whose smallest member has at most --max-params (10M, an edge model's size; the left-out
families are listed in the JSON), a family being the name's stem (`mobilenetv3_small_050` ->
mobilenetv3, `tf_efficientnet_lite0` -> tf_efficientnet), plus every name given with --also.
timm's own `test_*` models are left out.
Each is built with random weights (pretrained=False, 1000 classes), its norms given non-trivial
statistics, at 96x96 (a model that only runs at its own size gets that size).

For each model, three checks:

1. exact: edgeprune traces it and removes 30% of every prunable group's channels at random; the
   model compacted in place must compute what the masked model computes (trace_coverage.py's rule).
   Statuses: exact, wrong (never allowed), not pruned (nothing prunable; the frozen reasons are
   recorded), refused (a UserError: one sentence), crashed (any other exception).
2. budget: `Pruner(model, x, Adam, epochs=4, target_macs=0.7, progressive=False,
   prune_connections=False)`, two steps an epoch on random labels, then `finalize()`: the MACs
   reached, whether the budget was met, and whether a miss was said (a BudgetWarning). A miss
   without a warning is *silent*: never allowed.
3. Torch-Pruning 1.6 beside it: MetaPruner, L2 group magnitude, pruning_ratio 0.3, the classifier
   ignored; exact or wrong by the same comparison (trace_coverage.run_torch_pruning), and its
   MACs reduction.

    python benchmarks/timm_coverage.py                        # every family's smallest member
    python benchmarks/timm_coverage.py --models mobilenetv3_small_050 repvgg_a0
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import signal
import time
import traceback
import warnings
from collections import Counter

import timm
import torch
import torch.nn.functional as F
from common import RESULTS, record
from trace_coverage import NUM_CLASSES, randomize_norms, run_edgeprune, run_torch_pruning

from edgeprune import BudgetWarning, Pruner
from edgeprune.errors import UserError
from edgeprune.prune.cost import CostModel
from edgeprune.run import atomic_write_json

SIZE = 96
TARGET_MACS = 0.7
SECONDS = 90  # a check that takes longer than this is a row marked 'timeout' (--seconds)
# the families the issue named: every one must prune
MOBILE = [
    "mobilenetv3",
    "mobilenetv4",
    "efficientnet",
    "tf_efficientnet",
    "mnasnet",
    "ghostnet",
    "lcnet",
    "fbnetc",
    "regnetx",
    "regnety",
    "repvgg",
    "mobileone",
    "tinynet",
    "densenet",
]


def family(name: str) -> str:
    m = re.match(r"((?:tf|tv|gc|eca|legacy)_)?[a-z]+?(?:v\d+)?(?=[_\d]|$)", name)
    return m.group(0) if m else name


def smallest_per_family(names: list[str]) -> dict[str, str]:
    """family -> its member with the fewest parameters (built on the meta device: no memory, no time)."""
    best: dict[str, tuple[int, str]] = {}
    for name in names:
        if name.startswith("test_"):
            continue
        try:
            with torch.device("meta"):
                n = sum(p.numel() for p in timm.create_model(name).parameters())
        except Exception:  # noqa: BLE001 - a model that does not build is not in the table
            continue
        f = family(name)
        if f not in best or (n, name) < best[f]:
            best[f] = (n, name)
    return {f: name for f, (_, name) in sorted(best.items())}


def families() -> tuple[dict[str, str], dict[str, int]]:
    """smallest_per_family over every timm model and each one's parameter count, kept in
    results/timm_families.json for this timm version (the scan builds ~1,400 models on the meta
    device: minutes on 2 cores)."""
    path = RESULTS / "timm_families.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("timm") != timm.__version__:
        saved = {"timm": timm.__version__, "families": smallest_per_family(timm.list_models())}
    if "params" not in saved:
        saved["params"] = {n: param_count(n) for n in saved["families"].values()}
        atomic_write_json(path, saved)
    return saved["families"], saved["params"]


def param_count(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in timm.create_model(name).parameters())


def build(name: str) -> tuple[torch.nn.Module, int]:
    """The model in eval mode with randomized norms, and the input size it runs at (96, or its own)."""
    torch.manual_seed(0)
    for kwargs in ({}, {"img_size": SIZE}):
        try:
            model = timm.create_model(name, num_classes=NUM_CLASSES, **kwargs).eval()
            with torch.no_grad():
                model(torch.randn(1, 3, SIZE, SIZE))
            return randomize_norms(model), SIZE
        except Exception:  # noqa: BLE001 - try the next way
            continue
    model = timm.create_model(name, num_classes=NUM_CLASSES).eval()
    return randomize_norms(model), model.pretrained_cfg["input_size"][-1]


def macs(model, x) -> int:
    cost = CostModel(model, x[:1])
    return cost.macs({k: tuple(p.shape) for k, p in model.named_parameters()})


def edgeprune_exact(model, x) -> dict:
    before = macs(model, x)
    out = run_edgeprune(model, x, 0.3)
    if out["status"] == "refused" and "no channel space is prunable" in out.get("reason", ""):
        out["status"] = "not pruned"
    if out["status"] in ("exact", "wrong"):
        out["macs_kept"] = round(macs(model, x) / before, 4)
    return out


def edgeprune_budget(model, x) -> dict:
    """The issue's run: a MACs budget of 0.7 over 4 epochs of 2 steps, masks until the end."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pruner = Pruner(
                model, x[:2], opt, epochs=4, target_macs=TARGET_MACS, progressive=False, prune_connections=False
            )
        except UserError as e:
            return {"status": "refused", "reason": str(e)}
        for epoch in range(1, 5):
            for _ in range(2):
                y = torch.randint(0, NUM_CLASSES, (len(x),), generator=g)
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                pruner.after_backward()
                opt.step()
            pruner.end_epoch(epoch)
        pruner.finalize()
    said = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    summary = pruner.summary()
    kept = summary.macs_after / summary.macs_before
    met = bool(summary.budget and summary.budget.get("met"))
    return {
        "status": "met" if met else "missed",
        "macs_kept": round(kept, 4),
        "said": said[:3],
        "silent": (not met) and not said,
        "frozen": len(pruner.frozen),
    }


def guarded(fn, *args, seconds: int = SECONDS) -> dict:
    def timeout(*_):
        raise TimeoutError(f"over {seconds} s")

    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        return fn(*args)
    except TimeoutError as e:
        return {"status": "timeout", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - one model's failure is a row
        reason = f"{type(e).__name__}: {e}"[:500]
        return {"status": "crashed", "reason": reason, "where": traceback.format_exc(limit=-3)}
    finally:
        signal.alarm(0)


def tp_row(model, x) -> dict:
    import torch_pruning as tp

    before = macs(model, x)
    out = run_torch_pruning(model, x, 0.3, importance=tp.importance.MagnitudeImportance(p=2))
    pruned = out.pop("model", None)
    if pruned is not None and out["status"] in ("exact", "wrong"):
        out["macs_kept"] = round(macs(pruned, x) / before, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", help="timm names (default: every family's smallest member)")
    ap.add_argument("--also", nargs="*", default=[], help="more timm names beside the families'")
    ap.add_argument(
        "--max-params",
        type=float,
        default=10e6,
        help="leave out families whose smallest member has more parameters (default 10M: an edge model's size)",
    )
    ap.add_argument("--seconds", type=int, default=SECONDS, help="time limit of each check of each model")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-torch-pruning", action="store_true")
    ap.add_argument("--name", default="timm_coverage", help="results/<name>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    left_out: dict[str, int] = {}
    if args.models:
        chosen = {family(n): n for n in args.models}
    else:
        chosen, params = families()
        left_out = {n: params[n] for n in chosen.values() if params[n] > args.max_params}
        chosen = {f: n for f, n in chosen.items() if params[n] <= args.max_params}
        print(f"{len(chosen)} families; {len(left_out)} left out (over {args.max_params:.0f} parameters)", flush=True)
    for n in args.also:
        chosen.setdefault(n, n)
    rows = []
    for fam, name in chosen.items():
        t0 = time.perf_counter()
        try:
            model, size = build(name)
        except Exception as e:  # noqa: BLE001
            rows.append({"family": fam, "model": name, "build": f"{type(e).__name__}: {e}"[:300]})
            continue
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        row = {"family": fam, "model": name, "input": [2, 3, size, size]}
        row["edgeprune"] = guarded(edgeprune_exact, copy.deepcopy(model), x, seconds=args.seconds)
        row["budget"] = guarded(edgeprune_budget, copy.deepcopy(model), x, seconds=args.seconds)
        if not args.no_torch_pruning:
            row["torch_pruning"] = guarded(tp_row, copy.deepcopy(model), x, seconds=args.seconds)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(_line(row), flush=True)
        record(args.name, _payload(rows, left_out, args.max_params))
    payload = _payload(rows, left_out, args.max_params)
    record(args.name, payload)
    print(payload["summary"])


def _payload(rows: list[dict], left_out: dict, max_params: float) -> dict:
    built = [r for r in rows if "edgeprune" in r]
    kinds = ("edgeprune", "budget", "torch_pruning")
    count = {k: dict(Counter(r[k]["status"] for r in built if k in r)) for k in kinds}
    fams = {r["family"]: r for r in built}
    summary = {
        "families": len(built),
        "not_built": [r["model"] for r in rows if "build" in r],
        **{f"{k}_statuses": v for k, v in count.items()},
        "edgeprune_exact": count["edgeprune"].get("exact", 0),
        "torch_pruning_exact": count["torch_pruning"].get("exact", 0),
        "wrong": [r["model"] for r in built if r["edgeprune"]["status"] == "wrong"],
        "silent": [r["model"] for r in built if r["budget"].get("silent")],
        "budget_met_share": round(count["budget"].get("met", 0) / max(1, len(built)), 3),
        "mobile_families": {
            f: (fams[f]["model"], fams[f]["edgeprune"]["status"], fams[f]["budget"].get("macs_kept"))
            for f in MOBILE
            if f in fams
        },
    }
    return {
        "size": SIZE,
        "target_macs": TARGET_MACS,
        "fraction": 0.3,
        "max_params": max_params,
        "left_out": left_out,
        "summary": summary,
        "rows": rows,
    }


def _line(row: dict) -> str:
    e, b = row["edgeprune"], row["budget"]
    t = row.get("torch_pruning", {})
    cell = lambda r: f"{r.get('status', '-')}{' ' + str(r.get('macs_kept')) if 'macs_kept' in r else ''}"  # noqa: E731
    return f"{row['model']:36s} edgeprune {cell(e):18s} budget {cell(b):16s} tp {cell(t):18s} ({row['seconds']} s)"


if __name__ == "__main__":
    main()
