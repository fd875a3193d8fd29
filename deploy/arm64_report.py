"""Assemble benchmarks/results/arm64_emulated.json from the pieces arm64_verify.sh leaves in WORK.

    python arm64_report.py WORK OUT.json FACTS.json

FACTS.json holds what the shell knows (command, mode, seconds, exit codes, qemu version, ...).
Exits 1 unless predictions agree, the emulated bench ran and every runtime that has an aarch64
wheel was installed and imports. A runtime that imports but cannot run under qemu-user is recorded
with its reason ("runtimes"): emulation proves the path, a device proves the rest. Standard library only.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import sys
from pathlib import Path

LABEL = "EMULATED (qemu-user on x86) - not device numbers"


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _host_cpu() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _last_line(path: Path) -> str | None:
    """The last non-empty line of a log: the one that says why."""
    lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()] if path.exists() else []
    return lines[-1][:300] if lines else None


def exit_reason(rc: int, log_line: str | None) -> str:
    """One line: how a process under emulation ended and its last words."""
    how = f"exit {rc}"
    if rc == 124 or rc == 137:
        how += " (timed out)"
    elif rc > 128:
        try:
            how += f" ({signal.Signals(rc - 128).name})"
        except ValueError:
            pass
    return f"{how}: {log_line}" if log_line else how


def runtime_rows(work: Path, facts: dict, host_run: dict, arm_run: dict, compare: dict | None) -> dict:
    """Per runtime asked for: its aarch64 wheel (or why none), installed, imported (version), ran,
    and per model the top-1 agreement with the host's onnxruntime FP32 and the emulated latency."""
    wheels = (_load(work / "wheels.json") or {}).get("runtimes", {})
    installed = set(facts.get("installed", "onnxruntime").split(","))
    arm_versions = _load(work / "arm_versions.json") or {}
    host_models = host_run.get("models", {})
    out = {}
    for rt in [r for r in facts.get("runtimes", "onnxruntime").split(",") if r]:
        w = wheels.get(rt, {})
        row = {
            "aarch64_wheel": {
                k: (w[k].get("wheel") if w[k].get("available") else f"none: {w[k].get('reason')}")
                for k in ("manylinux2014", "bookworm")
                if k in w
            },
            "installed": rt in installed,
            "imported": False,
            "version": None,
            "ran": False,
            "reason": None,
            "models": {},
        }
        if rt == "onnxruntime":
            row.update(imported=bool(arm_versions), version=arm_versions.get("onnxruntime"))
            run, cmp = arm_run, compare
            run_rc = 0 if arm_run else None
        else:
            if not row["installed"]:
                row["reason"] = "no cp311 aarch64 wheel: " + str((w.get("bookworm") or {}).get("reason"))
                out[rt] = row
                continue
            rc_file = work / f"rt-{rt}.import.rc"
            imp = _load(work / f"rt-{rt}.import.json") or {}
            import_rc = int(rc_file.read_text().split()[0]) if rc_file.exists() else None
            row["imported"] = import_rc == 0 and not imp.get("missing")
            row["version"] = imp.get("version")
            if not row["imported"]:
                row["reason"] = imp.get("missing") or exit_reason(
                    import_rc if import_rc is not None else -1, _last_line(work / f"rt-{rt}.import.log")
                )
            rc_file = work / f"rt-{rt}.run.rc"
            run_rc = int(rc_file.read_text().split()[0]) if rc_file.exists() else None
            if run_rc not in (None, 0) and row["reason"] is None:
                row["reason"] = exit_reason(run_rc, _last_line(work / f"rt-{rt}.run.log"))
            run = _load(work / f"rt-{rt}.run.json") or {} if run_rc == 0 else {}
            cmp = _load(work / f"rt-{rt}.compare.json")
        for key, m in (run or {}).get("models", {}).items():
            host = host_models.get(key, {})
            c = ((cmp or {}).get("models") or {}).get(key, {})
            row["models"][key] = {
                "ran": "skipped" not in m,
                "skipped": m.get("skipped"),
                "agreement_with_host_onnxruntime_float": c.get("agreement_with_a_float"),
                "agreement_with_host_same_model": c.get("argmax_agreement"),
                "max_abs_diff_vs_host_same_model": c.get("max_abs_diff"),
                "within_tolerance_of_host": c.get("ok"),  # same top-1 on every row and |diff| <= atol
                "atol": c.get("atol"),
                "accuracy_arm64": m.get("accuracy"),
                "accuracy_host": host.get("accuracy"),
                "batch1_ms_median_emulated": m.get("batch1_ms_median"),
                "batch1_ms_median_host_native": host.get("batch1_ms_median"),
            }
        row["ran"] = (
            row["imported"] and run_rc == 0 and bool(row["models"]) and all(m["ran"] for m in row["models"].values())
        )
        if run_rc == 0 and not row["ran"] and row["reason"] is None:
            skipped = [f"{k}: {m['skipped']}" for k, m in row["models"].items() if m["skipped"]]
            row["reason"] = "; ".join(skipped) or "the bundle has no model for this runtime"
        out[rt] = row
    return out


def build(work: Path, facts: dict) -> dict:
    compare, bench = _load(work / "compare.json"), _load(work / "bench.json")
    arm_run, host_run = _load(work / "arm_run.json") or {}, _load(work / "host_run.json") or {}
    rows = None
    if bench:
        rows = [
            {
                "name": r.get("name"),
                "status": r.get("status"),
                "error": r.get("error"),
                "latency_emulated": r.get("latency"),
                "accuracy": r.get("accuracy"),
                "f1": r.get("f1"),
            }
            for r in bench.get("results", [])
        ]
    bench_ok = facts["bench_rc"] == 0 and bool(rows) and all(r["status"] == "ok" for r in rows)
    predictions_ok = facts["compare_rc"] == 0 and bool(compare)
    per_model = lambda run, key: {k: v.get(key) for k, v in run.get("models", {}).items()}
    runtimes = runtime_rows(work, facts, host_run, arm_run, compare)
    carried = all(r["imported"] for r in runtimes.values() if r["installed"])
    latency = None
    if facts.get("latency_rc") is not None:  # --probes: a latency table measured by the entrypoint
        table = _load(Path(facts["latency_table"])) if facts.get("latency_table") else None
        latency = {
            "command": f"edgeprune-entrypoint {facts['latency_flags']} "
            "(probes mounted at /bundle, EDGEPRUNE_EMULATED=1)",
            "exit_code": facts["latency_rc"],
            "ok": facts["latency_rc"] == 0 and bool(table) and bool(table.get("emulated")),
            "wall_seconds_emulated": facts["latency_s"],
            "table": facts.get("latency_table"),
            "emulated": (table or {}).get("emulated"),
            "samples": len((table or {}).get("samples") or []),
            "threads": (table or {}).get("threads"),
            "fit": (table or {}).get("fit"),
        }
    return {
        "what": (
            "ARM64 correctness check under qemu-user emulation. Every timing in this file is "
            "EMULATED on an x86 host: it is not a Raspberry Pi number and must not be "
            "compared with device results."
        ),
        "emulated": True,
        "passed": predictions_ok and bench_ok and carried and (latency is None or latency["ok"]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": facts["command"],
        "mode": facts["mode"],
        "host": {
            "machine": platform.machine(),
            "cpu_model": _host_cpu(),
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "onnxruntime": host_run.get("onnxruntime"),
            "numpy": host_run.get("numpy"),
        },
        "emulation": {
            "qemu": facts["qemu"],
            "qemu_cpu": facts["qemu_cpu"],
            "rootfs": f"Debian bookworm arm64, debootstrap minbase ({facts['rootfs']})",
            "cpuinfo": (
                "Cortex-A72 /proc/cpuinfo bind-mounted over the host's "
                "(onnxruntime crashes parsing an x86 one under qemu)"
            ),
        },
        "arm64": _load(work / "arm_versions.json"),
        "install": {"how": facts["install_how"], "seconds_emulated": facts["install_s"], "image": facts.get("image")},
        "predictions": {
            "ok": predictions_ok,
            "reference": "the same bundle and eval.npz on the host (x86_64)",
            **(compare or {"error": "no comparison"}),
        },
        "bench": {
            "command": f"edgeprune-entrypoint {facts['bench_flags']} (EDGEPRUNE_EMULATED=1)",
            "exit_code": facts["bench_rc"],
            "ok": bench_ok,
            "wall_seconds_emulated": facts["bench_s"],
            "results": rows,
            "machine": (bench or {}).get("machine"),
        },
        "emulated_latency": {
            "label": LABEL,
            "predict_batch1_ms_median_emulated": per_model(arm_run, "batch1_ms_median"),
            "predict_batch1_ms_median_host_native": per_model(host_run, "batch1_ms_median"),
            "predict_wall_seconds_emulated": facts["predict_s"],
        },
        "accuracy": {"arm64": per_model(arm_run, "accuracy"), "host": per_model(host_run, "accuracy")},
        "runtimes": {
            "label": LABEL + "; batch1_ms_median_emulated is emulated latency",
            "asked": facts.get("runtimes", "onnxruntime"),
            "installed": facts.get("installed", "onnxruntime"),
            "every_installed_runtime_imports": carried,
            "ran_under_emulation": [k for k, r in runtimes.items() if r["ran"]],
            "not_run_under_emulation": {k: r["reason"] for k, r in runtimes.items() if not r["ran"]},
            # recorded, not failed: the tolerance of another runtime across ISAs is a finding to read
            "models_outside_host_tolerance": [
                k for r in runtimes.values() for k, m in r["models"].items() if m["within_tolerance_of_host"] is False
            ],
            "wheel_check": (_load(work / "wheels.json") or {}).get("platform_sets"),
            "per_runtime": runtimes,
        },
        "latency_table": latency,
    }


def main() -> int:
    work, out, facts_path = (Path(a) for a in sys.argv[1:4])
    result = build(work, json.loads(facts_path.read_text()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {
        "passed": result["passed"],
        "mode": result["mode"],
        "predictions": result["predictions"].get("models"),
        "runtimes_ran": result["runtimes"]["ran_under_emulation"],
        "runtimes_not_run": result["runtimes"]["not_run_under_emulation"],
        "bench_ok": result["bench"]["ok"],
        "latency_table_ok": (result["latency_table"] or {}).get("ok"),
        "out": str(out),
    }
    print(json.dumps(summary, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
