"""Assemble benchmarks/results/arm64_emulated.json from the pieces arm64_verify.sh leaves in WORK.

    python arm64_report.py WORK OUT.json FACTS.json

FACTS.json holds what the shell knows (command, mode, seconds, exit codes, qemu version, ...).
Exits 1 unless predictions agree and the emulated bench ran. Standard library only.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
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
    per_model = lambda run, key: {k: v[key] for k, v in run.get("models", {}).items()}
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
        "passed": predictions_ok and bench_ok and (latency is None or latency["ok"]),
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
        "bench_ok": result["bench"]["ok"],
        "latency_table_ok": (result["latency_table"] or {}).get("ok"),
        "out": str(out),
    }
    print(json.dumps(summary, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
