"""The machine a benchmark ran on: CPU, instruction sets, cores, versions, emulation."""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
from pathlib import Path

# Instruction sets that decide whether INT8 kernels pay off (see edgeprune/targets.py).
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512vnni",
    "avx_vnni",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
    "dotprod",
    "i8mm",
)

# /proc/cpuinfo on ARM names the core by its part number only.
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
}

ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict:
    """CPU model and the instruction-set flags of the first processor block."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip().lower(), value.strip())
    flags = set((info.get("flags") or info.get("features") or "").split())
    model = info.get("model name") or info.get("hardware") or info.get("cpu model")
    part = info.get("cpu part")
    if not model and part:
        model = ARM_PARTS.get(part.lower(), f"ARM part {part}")
    return {
        "cpu_model": model,
        "vendor": info.get("vendor_id"),
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
    }


def cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 quota (docker --cpus), None when unlimited or unknown."""
    parts = _read("/sys/fs/cgroup/cpu.max").split()
    if len(parts) == 2 and parts[0] != "max":
        try:
            return int(parts[0]) / int(parts[1])
        except ValueError:
            return None
    return None


def usable_cores() -> int:
    """Cores this process may use: affinity mask, capped by a container CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(n, math.ceil(quota))) if quota else n


def emulation(machine: str, cpu: dict, cpuinfo: str) -> str | None:
    """Why we believe this process is emulated, or None; emulated timings are not device timings."""
    if os.environ.get("EDGEPRUNE_EMULATED", "") not in ("", "0"):
        return "EDGEPRUNE_EMULATED is set"
    # qemu-user shows the host's /proc/cpuinfo to the guest, so the two architectures disagree.
    if machine in ARM_MACHINES and (cpu["vendor"] in ("GenuineIntel", "AuthenticAMD") or "avx2" in cpu["isa"]):
        return f"platform is {machine} but /proc/cpuinfo describes an x86 CPU (qemu-user)"
    if machine in ("x86_64", "AMD64") and "CPU implementer" in cpuinfo:
        return f"platform is {machine} but /proc/cpuinfo describes an ARM CPU"
    return None


def machine_info(label: str | None = None) -> dict:
    """Everything a reader needs to judge where numbers came from."""
    import onnxruntime as ort

    cpuinfo = _read("/proc/cpuinfo")
    cpu = parse_cpuinfo(cpuinfo)
    machine = platform.machine()
    reason = emulation(machine, cpu, cpuinfo)
    if reason and "/proc/cpuinfo describes" in reason:
        # The flags are the host's, not the emulated CPU's; reporting them would mislead.
        cpu = {"cpu_model": f"{machine} emulated on {cpu['cpu_model']}", "isa": [], "vendor": cpu["vendor"]}
    return {
        "label": label or socket.gethostname(),
        "hostname": socket.gethostname(),
        "board": _read("/proc/device-tree/model").strip("\x00\n ") or None,
        "cpu_model": cpu["cpu_model"] or platform.processor() or None,
        "isa": cpu["isa"],
        "cores_logical": os.cpu_count(),
        "cores_usable": usable_cores(),
        "cpu_quota": cpu_quota(),
        "machine": machine,
        "system": platform.system(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "onnxruntime": ort.__version__,
        "execution_provider": "CPUExecutionProvider",
        "available_providers": ort.get_available_providers(),
        "emulated": reason is not None,
        "emulation_reason": reason,
    }
