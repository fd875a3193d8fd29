"""Latency in milliseconds from per-weight-tensor MACs, fitted to a measured latency table (numpy only).

    predicted_ms = intercept + sum_f coef_f * MACs_f        (intercept >= 0, every coef_f >= 0)

A feature f is the MACs per example of a set of weight tensors. Three ways of forming them are
tried, finest first: one feature per weight tensor ("tensor"), one per producing group, i.e. the
tensors whose output units a prunable group owns, plus the tensors that only read a group's
units (a classifier reading the last hidden layer) counted with that group ("group"), and one
feature for all MACs ("total"). Tensors whose MACs are the same in every probe (layers no group
changes) cannot be told from the intercept and are left in it. A way is tried only when the
fitting samples outnumber its unknowns by two or more; among those, the one with the lowest
leave-one-out relative error on the fitting samples is kept (ties: the coarser). So a model with
more weight tensors than the probes can pin down falls back to per-group features, then to one.

The fit is a non-negative least squares (Lawson-Hanson, below) on relative errors: each sample's
row is divided by its measured time, so a 0.1 ms probe counts as much as a 10 ms one. The time
fitted is each probe's p50_ms, or its round_min_ms (the median of its least disturbed round) when
the table says the machine was busy while it was measured. Non-negative
coefficients make the prediction monotone: more channels never predict less time. The held-out
probes (the table's samples marked held_out) are not fitted; the fit reports their mean and max
relative error, the honest figure for how far a prediction can be trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import UserError

TABLE_FORMAT = "edgeprune.latency-table"
TABLE_VERSION = 1
# what edgeprune.latency.probes writes (torch) and edgeprune.latency.table reads (runtime only)
PROBES_FORMAT = "edgeprune.latency-probes"
PROBES_VERSION = 1
PROBES_MANIFEST = "probes.json"
LEVELS = ("tensor", "group", "total")
# What is fitted: the median of all timed calls, or on a busy machine (the table's conditions.busy)
# the median of the least disturbed round, which docs/bench.md names the steadier figure there.
TARGETS = ("p50_ms", "round_min_ms")
MEASURE = "edgeprune bench --latency-probes PROBES --json TABLE"
MAKE_PROBES = "edgeprune probes RUN --out PROBES (or edgeprune.latency.probes.make_probes)"


def fingerprint(arch: str, widths: dict[str, int], inputs: list[str]) -> str:
    """sha256 of the architecture: its name, every prunable group with its full width, and the
    input signature (edgeprune.latency.probes.input_signature). Equal for the same model however
    it was built; different when a layer, a width or the input resolution differs."""
    text = json.dumps(
        {
            "arch": str(arch),
            "groups": sorted([str(k), int(v)] for k, v in widths.items()),
            "inputs": [str(i) for i in inputs],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


# --- non-negative least squares -----------------------------------------------------------------


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0 (Lawson and Hanson's active-set method)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    tol = 10 * np.finfo(np.float64).eps * max(m, n) * max(float(np.abs(a).sum(axis=0).max(initial=0.0)), 1.0)
    budget = max_iter if max_iter is not None else 30 * (n + 1)
    w = a.T @ (b - a @ x)
    while budget > 0 and not passive.all() and (w[~passive] > tol).any():
        free = np.flatnonzero(~passive)
        passive[free[np.argmax(w[free])]] = True
        while True:
            budget -= 1
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all() or budget <= 0:
                break
            # step from x towards z as far as feasibility allows, then drop what reached zero
            neg = passive & (z <= 0)
            alpha = float(np.min(x[neg] / np.maximum(x[neg] - z[neg], np.finfo(np.float64).tiny)))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        x = np.maximum(z, 0.0)
        w = a.T @ (b - a @ x)
    return x


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients of columns `x` (the first is the constant) fitting `y` in relative terms."""
    rows = x / y[:, None]
    scale = np.abs(rows).max(axis=0)
    scale[scale == 0] = 1.0
    return nnls(rows / scale, np.ones(len(y))) / scale


# --- tables -----------------------------------------------------------------------------------


def _corrupt(name: str, reason: str) -> UserError:
    return UserError(f"{name} is not a readable latency table ({reason}); measure the probes again with {MEASURE}.")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_table(table, name: str = "the latency table") -> dict:
    """`table` if it has the shape of a latency table, else a UserError naming what is wrong."""
    if not isinstance(table, dict):
        raise _corrupt(name, "it is not a JSON object")
    if table.get("format") != TABLE_FORMAT:
        raise _corrupt(name, f"its format is {table.get('format')!r}, not {TABLE_FORMAT!r}")
    version = table.get("version")
    if isinstance(version, int) and version > TABLE_VERSION:
        raise UserError(
            f"{name} has latency-table version {version}, this edgeprune reads version {TABLE_VERSION}; "
            "upgrade edgeprune or measure the probes again with this version."
        )
    if version != TABLE_VERSION:
        raise _corrupt(name, f"its version is {version!r}")
    for key in ("threads", "batch"):
        if not isinstance(table.get(key), int) or isinstance(table.get(key), bool) or table[key] < 1:
            raise _corrupt(name, f"{key!r} is missing or not a positive integer")
    if not isinstance(table.get("fingerprint"), str) or not table["fingerprint"]:
        raise _corrupt(name, "it has no model fingerprint")
    samples = table.get("samples")
    if not isinstance(samples, list) or not samples:
        raise _corrupt(name, "it lists no samples")
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise _corrupt(name, f"sample {i} is not an object")
        if not isinstance(s.get("widths"), dict) or not all(isinstance(v, int) for v in s["widths"].values()):
            raise _corrupt(name, f"sample {i} has no widths")
        macs = s.get("macs")
        if not isinstance(macs, dict) or not macs or not all(_number(v) and v >= 0 for v in macs.values()):
            raise _corrupt(name, f"sample {i} has no per-tensor MACs")
        for key in TARGETS:
            if s.get(key) is not None and not (_number(s[key]) and s[key] > 0):
                raise _corrupt(name, f"sample {i} has an impossible {key} {s[key]!r}")
        if not isinstance(s.get("held_out", False), bool):
            raise _corrupt(name, f"sample {i} has a held_out that is not true or false")
    if not isinstance(table.get("tensor_owner", {}), dict) or not isinstance(table.get("macs_factors", {}), dict):
        raise _corrupt(name, "its tensor_owner or macs_factors is not an object")
    return table


def table_runtime(table: dict) -> str:
    """The runtime a table was measured on (tables from before runtimes were recorded: onnxruntime)."""
    return str(table.get("runtime") or "onnxruntime")


def read_table(path: Path) -> dict:
    """The latency table at `path`, checked for shape; a UserError (one sentence) if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; measure a latency table with {MEASURE.replace('TABLE', str(path))}.")
    try:
        table = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise _corrupt(str(path), "it is not text") from None
    except json.JSONDecodeError as e:
        raise _corrupt(str(path), f"invalid JSON at line {e.lineno}") from None
    except OSError as e:
        raise _corrupt(str(path), e.strerror or type(e).__name__) from None
    return validate_table(table, str(path))


def check_table(
    table: dict,
    fingerprint: str | None = None,
    threads: int | None = None,
    batch: int | None = None,
    name: str = "the latency table",
    runtime: str | None = None,
) -> None:
    """A UserError unless `table` was measured for this model (`fingerprint`), with these `threads`
    and this `batch` size, on this `runtime` (a None argument is not checked)."""
    validate_table(table, name)
    measured_on = table_runtime(table)
    if runtime is not None and measured_on != runtime:
        raise UserError(
            f"{name} was measured on {measured_on}, the budget is for {runtime}; measure the probes on {runtime} "
            f"with edgeprune bench --latency-probes PROBES --runtime {runtime} --json TABLE."
        )
    again = f"edgeprune bench --latency-probes PROBES --threads {threads or table['threads']} "
    again += f"--batch {batch or table['batch']} --json TABLE"
    if fingerprint is not None and table["fingerprint"] != fingerprint:
        raise UserError(
            f"{name} was measured for another model (fingerprint {table['fingerprint'][:12]}, this model's is "
            f"{fingerprint[:12]}); make probes of this model with {MAKE_PROBES} and measure them with {again}."
        )
    for key, want in (("threads", threads), ("batch", batch)):
        if want is not None and table[key] != want:
            what = f"{table[key]} threads" if key == "threads" else f"batch size {table[key]}"
            now = f"{want} threads" if key == "threads" else f"batch size {want}"
            raise UserError(
                f"{name} was measured with {what}, this run uses {now}; measure the probes again with {again}."
            )


# --- the fit ----------------------------------------------------------------------------------


def _features(tensors: list[str], owner: dict[str, str], level: str) -> dict[str, list[str]]:
    if level == "tensor":
        return {t: [t] for t in tensors}
    if level == "total":
        return {"total": list(tensors)}
    out: dict[str, list[str]] = {}
    for t in tensors:
        out.setdefault(str(owner.get(t) or "other"), []).append(t)
    return out


def _matrix(samples: list[dict], features: dict[str, list[str]]) -> np.ndarray:
    cols = [[sum(float(s["macs"].get(t, 0.0)) for t in ts) for ts in features.values()] for s in samples]
    return np.hstack([np.ones((len(samples), 1)), np.asarray(cols, dtype=np.float64).reshape(len(samples), -1)])


def _rel_errors(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(pred - y) / y


def _loo(x: np.ndarray, y: np.ndarray) -> float:
    """Mean relative error of each sample predicted by a fit on all the others."""
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        errs.append(float(_rel_errors(x[i : i + 1] @ _solve(x[keep], y[keep]), y[i : i + 1])[0]))
    return float(np.mean(errs))


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None else round(float(v), digits)


@dataclass
class LatencyModel:
    """ms = intercept_ms + sum over features of coef[f] * (MACs of the tensors in features[f])."""

    intercept_ms: float
    features: dict[str, list[str]]
    coef: dict[str, float]  # ms per MAC
    level: str
    macs_factors: dict[str, float] = field(default_factory=dict)  # weight -> uses per example (the probes')
    fingerprint: str | None = None
    threads: int | None = None
    batch: int | None = None
    emulated: bool | None = None
    report: dict = field(default_factory=dict)  # what the fit did and how well: the table's "fit"

    @classmethod
    def fit(cls, table: dict, name: str = "the latency table", target: str | None = None) -> LatencyModel:
        """Fit to the non-held-out measured samples of `table`; `report` holds the held-out errors.
        `target` is p50_ms or round_min_ms (default: round_min_ms if the machine was busy)."""
        validate_table(table, name)
        if target is None:
            busy = bool((table.get("conditions") or {}).get("busy"))
            has_min = all(s.get("round_min_ms") is not None for s in table["samples"] if s.get("p50_ms") is not None)
            target = "round_min_ms" if busy and has_min else "p50_ms"
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
        ok = [s for s in table["samples"] if s.get(target) is not None and s.get("status", "ok") == "ok"]
        fit_s = [s for s in ok if not s.get("held_out")]
        held = [s for s in ok if s.get("held_out")]
        tensors = sorted({t for s in ok for t in s["macs"]})
        y = np.array([float(s[target]) for s in fit_s])
        m = np.array([[float(s["macs"].get(t, 0.0)) for t in tensors] for s in ok]).reshape(len(ok), len(tensors))
        spread = m.max(axis=0, initial=0.0) - m.min(axis=0, initial=0.0) if len(ok) else np.zeros(len(tensors))
        varying = [t for t, d in zip(tensors, spread) if d > 1e-9 * max(1.0, float(np.abs(m).max(initial=0.0)))]
        owner = table.get("tensor_owner") or {}
        candidates: dict[str, dict[str, list[str]]] = {}
        for level in LEVELS:
            feats = _features(varying, owner, level) if varying else {}
            if any(f == feats for f in candidates.values()):
                continue  # the same partition as a finer way
            if len(fit_s) >= len(feats) + 3:  # unknowns: the features and the intercept; 2 to spare
                candidates[level] = feats
        if not candidates:
            raise UserError(
                f"{name} has {len(fit_s)} measured probes to fit, too few for a latency model; "
                f"make more probes (make_probes n=, at least 8) and measure them with {MEASURE}."
            )
        loo = {level: _loo(_matrix(fit_s, f), y) for level, f in candidates.items()}
        level = min(loo, key=lambda k: (loo[k], -LEVELS.index(k)))
        feats = candidates[level]
        sol = _solve(_matrix(fit_s, feats), y)
        model = cls(
            intercept_ms=float(sol[0]),
            features=feats,
            coef={f: float(c) for f, c in zip(feats, sol[1:])},
            level=level,
            macs_factors={k: float(v) for k, v in (table.get("macs_factors") or {}).items()},
            fingerprint=table["fingerprint"],
            threads=table["threads"],
            batch=table["batch"],
            emulated=table.get("emulated"),
        )
        fit_err = _rel_errors(np.array([model.predict(s["macs"]) for s in fit_s]), y)
        held_y = np.array([float(s[target]) for s in held])
        held_pred = np.array([model.predict(s["macs"]) for s in held])
        held_err = _rel_errors(held_pred, held_y) if held else np.zeros(0)
        model.report = {
            "method": "non-negative least squares on relative error (Lawson-Hanson), intercept >= 0",
            "target": target,
            "level": level,
            "levels_tried": {k: {"features": len(candidates[k]), "loo_mean_rel_error": _r(v)} for k, v in loo.items()},
            "features": feats,
            "constant_tensors": [t for t in tensors if t not in varying],
            "intercept_ms": _r(model.intercept_ms),
            "coef_ms_per_mmac": {f: _r(c * 1e6, 9) for f, c in model.coef.items()},
            "n_fit": len(fit_s),
            "n_held_out": len(held),
            "n_failed": len(table["samples"]) - len(ok),
            "fit_mean_rel_error": _r(fit_err.mean()),
            "fit_max_rel_error": _r(fit_err.max()),
            "held_out_mean_rel_error": _r(held_err.mean()) if held else None,
            "held_out_max_rel_error": _r(held_err.max()) if held else None,
            "held_out": [
                {"id": s.get("id"), "measured_ms": _r(t), "predicted_ms": _r(p)}
                for s, t, p in zip(held, held_y, held_pred)
            ],
        }
        return model

    def predict(self, macs: dict[str, float]) -> float:
        """Predicted ms per call (at the table's batch size) of the model whose weight tensors have
        these MACs per example (weight name -> numel after compaction x uses per example)."""
        missing = sorted({t for ts in self.features.values() for t in ts} - set(macs))
        if missing:
            raise ValueError(f"no MACs given for {', '.join(missing[:5])}; pass every weight tensor of the model")
        return self.intercept_ms + sum(c * sum(float(macs[t]) for t in self.features[f]) for f, c in self.coef.items())

    def macs_from_shapes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, float]:
        """Per-tensor MACs per example from parameter shapes, with the probes' uses per example."""
        return {k: math.prod(shapes[k]) * u for k, u in self.macs_factors.items() if k in shapes}

    def predict_shapes(self, shapes: dict[str, tuple[int, ...]]) -> float:
        """Predicted ms from parameter shapes (name -> shape after compaction): the MACs are counted
        with the uses per example of the probes, the ones the coefficients were fitted with."""
        return self.predict(self.macs_from_shapes(shapes))

    def breakdown(self, macs: dict[str, float]) -> dict[str, float]:
        """The predicted ms split into the intercept and each feature's share."""
        out = {"intercept": self.intercept_ms}
        out.update({f: c * sum(float(macs[t]) for t in self.features[f]) for f, c in self.coef.items()})
        return out


def load_latency_model(
    path: Path, fingerprint: str | None = None, threads: int | None = None, batch: int | None = None
) -> LatencyModel:
    """Read the table at `path`, check it was measured for this model, threads and batch size
    (UserError otherwise, one sentence naming the fix), and fit it."""
    table = read_table(path)
    check_table(table, fingerprint, threads, batch, name=str(path))
    return LatencyModel.fit(table, name=str(path))
