"""Which measured variant to ship: the fastest one whose accuracy is within the tolerance.

Rows are grouped by model (a bundle, or a file's stem): its variants on every runtime. The
reference is onnxruntime's float row of the group (the checked export), else the most accurate
row. Speed is the p50 at the first batch size measured, the floor included: a device pays it.
"""

from __future__ import annotations

from edgeprune.bench.runtimes import DEFAULT


def group_of(row: dict) -> str:
    """'run/float@openvino' -> 'run'; a file's stem is its own group."""
    return row["name"].split("@")[0].split("#")[0].rsplit("/", 1)[0]


def _p50(row: dict, batch: str) -> float | None:
    lat = row["latency"].get(batch)
    return lat["p50_ms"] if lat else None


def choose(rows: list[dict], batch: int, max_acc_drop: float) -> list[dict]:
    """One choice per group, and each row's "ship" flag set (True for the chosen row only)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        row["ship"] = False
        groups.setdefault(group_of(row), []).append(row)
    out = []
    for group, members in groups.items():
        ok = [r for r in members if r["status"] == "ok" and _p50(r, str(batch)) is not None]
        if not ok:
            out.append({"group": group, "name": None, "reason": "no variant was measured"})
            continue
        on_default = [r for r in ok if r["runtime"] == DEFAULT]
        ref = next((r for r in on_default if r["variant"] == "float"), on_default[0] if len(on_default) == 1 else None)
        scored = [r for r in ok if r["accuracy"] is not None]
        if scored:
            ref_acc = (
                ref["accuracy"]
                if ref is not None and ref["accuracy"] is not None
                else max(r["accuracy"] for r in scored)
            )
            within = [r for r in scored if (ref_acc - r["accuracy"]) * 100 <= max_acc_drop + 1e-9]
            how = f"fastest at batch {batch} within {max_acc_drop:g} accuracy points of {ref_acc:.4f}"
        else:
            within = ok
            how = f"fastest at batch {batch}; no eval data, so accuracy was not compared"
        best = min(within, key=lambda r: _p50(r, str(batch)))
        best["ship"] = True
        dropped = sorted(r["name"] for r in scored if r not in within)
        choice = {
            "group": group,
            "name": best["name"],
            "runtime": best["runtime"],
            "variant": best["variant"],
            "precision": best.get("precision"),
            "p50_ms": _p50(best, str(batch)),
            "batch": batch,
            "speedup_vs_onnxruntime_float": (
                round(_p50(ref, str(batch)) / _p50(best, str(batch)), 3) if ref is not None else None
            ),
            "reason": how + (f"; too inaccurate: {', '.join(dropped)}" if dropped else ""),
        }
        out.append(choice)
    return out
