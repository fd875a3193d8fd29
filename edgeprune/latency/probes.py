"""Probes: the same architecture at sampled widths, exported to ONNX, so a latency model can be
measured on the machine that will run it (torch; the measuring side needs only onnxruntime).

Which units a probe drops does not matter for its latency, only how many: each probe is a copy
of the model compacted in place (edgeprune.prune.surgery.compact_) to its widths. Widths are
sampled so that a fit of per-tensor MACs is well conditioned: the full model, the all-minimum
model, and models whose every group keeps an independent uniform fraction of the range between
its minimum and its full width (rounded up to `round_to`, never below `min_width`, as the pruner
rounds). A share of the random ones is held out of the fit to measure its error.

`probes.json` (the manifest, beside the .onnx files and a MANIFEST.sha256) records for every probe
its widths and its MACs per example of every weight tensor, plus the architecture's fingerprint
(edgeprune.latency.model.fingerprint) that a latency table carries along.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeprune.errors import UserError
from edgeprune.latency.model import PROBES_FORMAT, PROBES_MANIFEST, PROBES_VERSION, fingerprint
from edgeprune.prune.cost import CostModel
from edgeprune.prune.groups import GROUP_BUILDERS, Group, model_groups
from edgeprune.prune.schedule import PruneSchedule, round_keep
from edgeprune.prune.surgery import compact_
from edgeprune.version import __version__

DEFAULT_N = 32
HELD_OUT = 0.25


def default_count(groups: int) -> int:
    """Probes to make for a model of `groups` prunable groups: enough that the per-group fit
    (edgeprune.latency.model: a cost per group and an intercept) has twice as many measured probes
    as unknowns once a quarter is held out, and never fewer than DEFAULT_N. With 32 probes a model of
    24 groups (EfficientNet-Lite0) could only be fitted to its total MACs."""
    return max(DEFAULT_N, math.ceil(2 * (groups + 1) / (1 - HELD_OUT)))


def _inputs(example_inputs) -> tuple[torch.Tensor, ...]:
    return (example_inputs,) if torch.is_tensor(example_inputs) else tuple(example_inputs)


def arch_name(model: nn.Module) -> str:
    return getattr(model, "arch_name", type(model).__name__)


def groups_of(model: nn.Module, example_inputs) -> list[Group]:
    """The coupling groups the pruner uses: declared for the study's models, traced for any other."""
    if arch_name(model) in GROUP_BUILDERS:
        return model_groups(model)
    from edgeprune.prune.trace import trace_groups

    return trace_groups(model, _inputs(example_inputs)).groups


def input_signature(example_inputs) -> list[str]:
    """What the latency depends on in the inputs, batch aside: float inputs by their shape (the
    image resolution), integer ones (tokens) by their rank (sequences vary in length)."""
    out = []
    for x in _inputs(example_inputs):
        if x.dtype.is_floating_point:
            out.append("float[" + "x".join(str(d) for d in x.shape[1:]) + "]")
        else:
            out.append(f"int[rank {x.dim()}]")
    return out


def model_fingerprint(model: nn.Module, example_inputs, groups: list[Group] | None = None, widths=None) -> str:
    """The fingerprint a latency table of `model` carries. `widths` (group -> full width) defaults
    to the groups' widths now; a pruner that has compacted already passes its widths before pruning."""
    groups = groups if groups is not None else groups_of(model, example_inputs)
    widths = widths if widths is not None else {g.name: g.width for g in groups}
    return fingerprint(arch_name(model), widths, input_signature(example_inputs))


def macs_per_tensor(factors: dict[str, float], shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """MACs per example of each weight tensor: numel(shape) x uses per example."""
    return {k: int(round(math.prod(shapes[k]) * f)) for k, f in factors.items() if k in shapes}


def tensor_owners(groups: list[Group], tensors) -> dict[str, str]:
    """For each tensor, the group that produces its output units (a scored slice on dim 0), else
    the first group that owns a slice of it (a classifier: the group it reads), else none."""
    owner: dict[str, str] = {}
    for rank in (lambda s: s.scored and s.dim == 0, lambda s: s.scored, lambda s: True):
        for g in groups:
            for s in g.slices:
                if s.name in tensors and s.name not in owner and rank(s):
                    owner[s.name] = g.name
    return owner


def min_widths(groups: list[Group], min_width: int, round_to: int) -> dict[str, int]:
    return {g.name: max(round_keep(0, g.width, round_to, min_width), len(g.protected), 1) for g in groups}


def sample_widths(
    groups: list[Group],
    n: int,
    seed: int = 0,
    min_width: int = PruneSchedule.min_width,
    round_to: int = PruneSchedule.round_to,
    held_out: float = HELD_OUT,
) -> list[tuple[str, dict[str, int], bool]]:
    """(kind, widths, held_out) of up to `n` distinct width settings: the full model, the
    all-minimum model, then random ones (fewer when fewer distinct settings exist)."""
    rng = np.random.default_rng(seed)
    full = {g.name: g.width for g in groups}
    low = min_widths(groups, min_width, round_to)
    out = [("full", full)]
    if low != full:
        out.append(("min", low))
    seen = {tuple(sorted(w.items())) for _, w in out}
    tries = 0
    while len(out) < n and tries < 200 * n:
        tries += 1
        w = {}
        for g in groups:
            lo, hi = low[g.name], full[g.name]
            keep = round_keep(int(math.ceil(lo + rng.uniform() * (hi - lo))), hi, round_to, min_width)
            w[g.name] = max(keep, lo)
        key = tuple(sorted(w.items()))
        if key not in seen:
            seen.add(key)
            out.append(("random", w))
    random_ids = [i for i, (kind, _) in enumerate(out) if kind == "random"]
    n_held = min(len(random_ids), int(round(held_out * len(out))))
    held = set(rng.choice(random_ids, size=n_held, replace=False).tolist()) if n_held else set()
    return [(kind, w, i in held) for i, (kind, w) in enumerate(out)]


def at_widths(model: nn.Module, groups: list[Group], widths: dict[str, int]) -> nn.Module:
    """A copy of `model` (eval mode) compacted to `widths`: each group loses its last units
    (never its protected ones); which units go does not change the latency."""
    m = copy.deepcopy(model).eval()
    removed = {}
    for g in groups:
        keep = widths.get(g.name, g.width)
        if keep >= g.width:
            continue
        protected = set(g.protected)
        candidates = [u for u in range(g.width) if u not in protected]
        gone = g.width - keep
        removed[g.name] = torch.tensor(candidates[len(candidates) - gone :], dtype=torch.long)
    if removed:
        compact_(m, groups, removed)
    return m


def infer_meta(example_inputs) -> dict:
    """The input description export needs, for a model fed one float tensor."""
    xs = _inputs(example_inputs)
    if len(xs) != 1:
        raise UserError(f"probes export models with one input; this one takes {len(xs)}.")
    x = xs[0]
    if not x.dtype.is_floating_point:
        raise UserError(
            "a model fed token ids needs meta= with its task and vocab_size, e.g. "
            '{"task": "text", "input_shape": ["batch", "seq"], "vocab_size": 20000, "max_len": 256}.'
        )
    return {"task": "image", "input_shape": ["batch", *x.shape[1:]], "input_dtype": "float32"}


def _probe_metadata(meta: dict, probe_id: str, params: int) -> dict:
    """What bench reads from the file (onnxruntime's model metadata): how to feed it."""
    keys = ("task", "input_shape", "input_dtype", "vocab_size", "max_len", "dataset")
    return {"format": 1, **{k: meta.get(k) for k in keys}, "params": params, "probe": probe_id}


def make_probes(
    model: nn.Module,
    example_inputs,
    groups: list[Group] | None,
    out_dir: Path,
    n: int | None = None,
    seed: int = 0,
    min_width: int = PruneSchedule.min_width,
    round_to: int = PruneSchedule.round_to,
    meta: dict | None = None,
    held_out: float = HELD_OUT,
    opset: int = 17,
    progress=lambda s: None,
) -> dict:
    """Write up to `n` probes of `model` (at sampled widths; default `default_count` of its groups)
    as ONNX files and `probes.json` into `out_dir`; returns the manifest. `groups` defaults to the
    pruner's (declared or traced); `meta` is the run's input description (inferred for one float input)."""
    from edgeprune.manifest import write_manifest
    from edgeprune.models.to_onnx import export_onnx, finalize, metadata_props
    from edgeprune.run import atomic_write_json

    if n is not None and n < 4:
        raise UserError(f"make at least 4 probes (the full, the smallest and two to fit and hold out); got n={n}.")
    xs = _inputs(example_inputs)
    groups = groups if groups is not None else groups_of(model, xs)
    if not groups:
        raise UserError(f"the {arch_name(model)} model has no prunable groups, so its latency cannot change.")
    n = default_count(len(groups)) if n is None else n
    meta = dict(meta) if meta is not None else infer_meta(xs)
    factors = CostModel(model, xs).macs_factors or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("p[0-9][0-9][0-9].onnx"):
        old.unlink()  # a previous set must not mix with this one
    probes = []
    for i, (kind, widths, held) in enumerate(sample_widths(groups, n, seed, min_width, round_to, held_out)):
        pid = f"p{i:03d}"
        progress(f"probe {pid} ({kind})")
        m = at_widths(model, groups, widths)
        shapes = {k: tuple(p.shape) for k, p in m.named_parameters()}
        params = sum(p.numel() for p in m.parameters())
        path = out_dir / f"{pid}.onnx"
        export_onnx(m, meta, path, opset=opset)
        finalize(path, metadata_props(_probe_metadata(meta, pid, params)))
        probes.append(
            {
                "id": pid,
                "file": path.name,
                "kind": kind,
                "held_out": held,
                "widths": widths,
                "params": params,
                "macs": macs_per_tensor(factors, shapes),
            }
        )
    manifest = {
        "format": PROBES_FORMAT,
        "version": PROBES_VERSION,
        "fingerprint": model_fingerprint(model, xs, groups),
        "arch": arch_name(model),
        "inputs": input_signature(xs),
        "meta": meta,
        "groups": {g.name: g.width for g in groups},
        "settings": {"n": n, "seed": seed, "min_width": min_width, "round_to": round_to, "held_out": held_out},
        "macs_factors": factors,
        "tensor_owner": tensor_owners(groups, set(factors)),
        "probes": probes,
        "edgeprune_version": __version__,
    }
    atomic_write_json(out_dir / PROBES_MANIFEST, manifest)
    write_manifest(out_dir)
    return manifest


def run_probes(run_dir: Path, out_dir: Path | None = None, **kw) -> tuple[dict, Path]:
    """Probes of a run's model at full width, built from RUN/config.json exactly as `edgeprune
    train` builds it (so it needs no weights: a run just started, or a baseline of the same
    dataset and model, gives the fingerprint of its pruned runs); written to RUN/latency/probes
    unless `out_dir` is given. Returns (manifest, the probes directory)."""
    from edgeprune.models import build_model, default_config
    from edgeprune.models.to_onnx import example_input
    from edgeprune.run import read_json

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json); start it with edgeprune train.")
    saved = read_json(run_dir / "config.json")
    cfg = saved.get("config") if isinstance(saved, dict) else None
    meta = saved.get("input") if isinstance(saved, dict) else None
    if not isinstance(cfg, dict) or not isinstance(meta, dict) or not cfg.get("model"):
        raise UserError(f"{run_dir / 'config.json'} does not describe a run; re-create the run with edgeprune train.")
    spec = {"name": cfg["model"], "config": {**default_config(cfg["model"], meta), **(cfg.get("model_config") or {})}}
    torch.manual_seed(0)
    model = build_model(spec).eval()
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "latency" / "probes"
    return make_probes(model, example_input(meta), None, out_dir, meta=meta, **kw), out_dir
