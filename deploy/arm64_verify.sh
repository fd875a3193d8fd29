#!/usr/bin/env bash
# ARM64 verification without a Pi and without a Docker engine: install the base install
# (no torch) into an arm64 Debian bookworm root the way docker/Dockerfile does, run it under
# qemu-user, run the image's entrypoint (`edgeprune bench`) on a bundle, and check the arm64
# predictions against the host's (same argmax, outputs within tolerance).
#
#   deploy/arm64_verify.sh [--bundle DIR] [--out FILE] [--cache DIR] [--keep-root]
#
#   --bundle DIR   bundle to check (default: a tiny one from tests/bundle_fixture.py)
#   --out FILE     result JSON (default benchmarks/results/arm64_emulated.json)
#   --cache DIR    root tarball and aarch64 wheels (default $EDGEPRUNE_CACHE or /work/cache)
#   --keep-root    leave the extracted root in place (unmounted) for inspection
#
# Needs root, qemu-user-static, binfmt-support, debootstrap (first run only). Emulation is
# hundreds of times slower than a device: timings recorded here are labeled emulated and say
# nothing about a Raspberry Pi; the check is about correctness.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=deploy/lib_root.sh
. "$HERE/lib_root.sh"

CACHE=${EDGEPRUNE_CACHE:-/work/cache}
BUNDLE=""
OUT=$REPO/benchmarks/results/arm64_emulated.json
KEEP=0
HOST_PY=${PYTHON:-$REPO/.venv/bin/python}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}   # the default qemu CPU model is ~15x slower
BENCH_FLAGS=(--target rpi4 --batch 1 --warmup 1 --runs 3 --rounds 1)
CMDLINE="deploy/arm64_verify.sh $*"

while [ $# -gt 0 ]; do
    case $1 in
        --bundle) BUNDLE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        --keep-root) KEEP=1; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1'; see --help" ;;
    esac
done

[ "$(id -u)" = 0 ] || die "needs root (chroot, mount); run with sudo"
[ -x "$HOST_PY" ] || HOST_PY=$(command -v python3)
"$HOST_PY" -c 'import onnxruntime, numpy' 2>/dev/null ||
    die "$HOST_PY lacks onnxruntime/numpy; set PYTHON to an interpreter with the base install"
ensure_binfmt
mkdir -p "$CACHE"
OUT=$(realpath -m "$OUT")

WORK=$(mktemp -d "$CACHE/arm64-verify.XXXXXX")
ROOT=$WORK/root
cleanup() {
    local rc=$?
    root_unmount_all "$ROOT" || log "could not unmount everything under $ROOT"
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK"
    else
        root_remove "$WORK" || log "left $WORK in place (mounts remain)"
    fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

if [ -z "$BUNDLE" ]; then
    BUNDLE=$WORK/bundle
    "$HOST_PY" "$REPO/tests/bundle_fixture.py" "$BUNDLE" --int8 >/dev/null 2>"$WORK/fixture.log" ||
        { cat "$WORK/fixture.log" >&2; die "could not make the tiny bundle (needs onnx on the host)"; }
fi
if [ ! -f "$BUNDLE/meta.json" ] && [ ! -f "$BUNDLE/model.onnx" ]; then
    die "'$BUNDLE' is not a bundle (no meta.json or model.onnx)"
fi
BUNDLE=$(cd "$BUNDLE" && pwd)

TARBALL=$("$HERE/arm64_rootfs.sh" --cache "$CACHE")

# aarch64 wheels, fetched on the host (seconds, no emulation). The pyproject pin keeps
# onnxruntime off 1.21.0, which dies with an illegal instruction on the Pi 4.
WHEELS=$CACHE/wheels-aarch64
log "aarch64 wheels -> $WHEELS"
"$HOST_PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --python-version 3.11 --implementation cp \
    -d "$WHEELS" "onnxruntime>=1.17,!=1.21.0" "numpy>=1.24" "psutil>=5.9" "typer>=0.12" \
    "rich>=13" "setuptools>=64" 2>"$WORK/download.log" ||
    { tail -n 5 "$WORK/download.log" >&2; die "could not download aarch64 wheels"; }

log "extracting $TARBALL"
mkdir -p "$ROOT"
tar --numeric-owner -xzf "$TARBALL" -C "$ROOT"
install_qemu_into "$ROOT"
# The same inputs the image build sees (.dockerignore allow-list), at the same paths.
mkdir -p "$ROOT/src" "$ROOT/wheels" "$ROOT/bundle" "$ROOT/results" "$ROOT/usr/local/bin"
tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml README.md edgeprune | tar -C "$ROOT/src" -xf -
cp "$WHEELS"/*.whl "$ROOT/wheels/"
cp -r "$BUNDLE/." "$ROOT/bundle/"
cp "$REPO/docker/entrypoint.sh" "$ROOT/usr/local/bin/edgeprune-entrypoint"
chmod 0755 "$ROOT/usr/local/bin/edgeprune-entrypoint"
cp "$HERE/predict.py" "$ROOT/opt/predict.py"
write_arm64_cpuinfo "$WORK/cpuinfo"
root_mount_runtime "$ROOT" "$WORK/cpuinfo"

# The Dockerfile's build step, under emulation (pip reads only local aarch64 wheels).
log "installing the base install in the arm64 root (emulated; a few minutes)"
t0=$(date +%s)
root_exec "$ROOT" 1800 /bin/sh -c 'python3 -m venv /opt/edgeprune &&
    PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    /opt/edgeprune/bin/pip install --quiet /src' >"$WORK/install.log" 2>&1 ||
    { tail -n 20 "$WORK/install.log" >&2; die "base install failed in the arm64 root"; }
INSTALL_S=$(( $(date +%s) - t0 ))
log "installed in ${INSTALL_S}s"

root_exec "$ROOT" 600 /opt/edgeprune/bin/python -c '
import importlib.util, json, platform, numpy, onnxruntime
assert importlib.util.find_spec("torch") is None, "torch leaked into the runtime install"
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
                  "torch_installed": False}))' >"$WORK/arm_versions.json" 2>"$WORK/versions.log" ||
    { cat "$WORK/versions.log" >&2; die "import onnxruntime failed under emulation"; }

log "predictions: host"
"$HOST_PY" "$HERE/predict.py" run "$BUNDLE" "$WORK/host.npz" --timing-runs 3 >"$WORK/host_run.json"
log "predictions: arm64 (emulated)"
t0=$(date +%s)
root_exec "$ROOT" 900 /opt/edgeprune/bin/python /opt/predict.py run /bundle /results/arm64.npz \
    --timing-runs 3 >"$WORK/arm_run.json" 2>"$WORK/arm_run.log" ||
    { cat "$WORK/arm_run.log" >&2; die "predictions failed under emulation"; }
PREDICT_S=$(( $(date +%s) - t0 ))
COMPARE_RC=0
"$HOST_PY" "$HERE/predict.py" compare "$WORK/host.npz" "$ROOT/results/arm64.npz" \
    >"$WORK/compare.json" || COMPARE_RC=$?

# The image's entrypoint, as `docker run ... edgeprune-runtime --target rpi4` would call it.
BENCH_RC=0
BENCH_S=0
if root_exec "$ROOT" 600 /opt/edgeprune/bin/edgeprune bench --help >/dev/null 2>&1; then
    log "entrypoint: edgeprune bench ${BENCH_FLAGS[*]} (emulated)"
    t0=$(date +%s)
    root_exec "$ROOT" 1800 /usr/bin/env PATH=/opt/edgeprune/bin:/usr/bin:/bin \
        EDGEPRUNE_EMULATED=1 EDGEPRUNE_DEVICE=arm64-emulated EDGEPRUNE_JSON=bench.json \
        /usr/local/bin/edgeprune-entrypoint "${BENCH_FLAGS[@]}" >"$WORK/bench.log" 2>&1 || BENCH_RC=$?
    BENCH_S=$(( $(date +%s) - t0 ))
    [ "$BENCH_RC" = 0 ] || tail -n 20 "$WORK/bench.log" >&2
else
    BENCH_RC=127
    echo "edgeprune bench is not available in this checkout" >"$WORK/bench.log"
fi
[ -f "$ROOT/results/bench.json" ] && cp "$ROOT/results/bench.json" "$WORK/bench.json"

mkdir -p "$(dirname "$OUT")"
"$HOST_PY" - "$WORK" "$OUT" "$CMDLINE" "$INSTALL_S" "$PREDICT_S" "$BENCH_S" "$BENCH_RC" \
    "$COMPARE_RC" "$(qemu-aarch64-static --version | head -n1)" "$TARBALL" "${BENCH_FLAGS[*]}" <<'PY'
import datetime, json, os, platform, sys
from pathlib import Path

work, out, cmd, install_s, predict_s, bench_s, bench_rc, compare_rc, qemu, tarball, flags = sys.argv[1:]
w = Path(work)
load = lambda name: json.loads((w / name).read_text()) if (w / name).exists() else None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
compare, bench = load("compare.json"), load("bench.json")
arm_run, host_run = load("arm_run.json"), load("host_run.json")
bench_summary = None
if bench:
    bench_summary = [{"name": r.get("name"), "status": r.get("status"),
                      "latency_emulated": r.get("latency"), "accuracy": r.get("accuracy")}
                     for r in bench.get("results", [])]
bench_ok = int(bench_rc) == 0 and bool(bench_summary) and all(
    r["status"] == "ok" for r in bench_summary)
result = {
    "what": ("ARM64 correctness check under qemu-user emulation. Every timing in this file is "
             "EMULATED on an x86 host: it is not a Raspberry Pi number and must not be compared "
             "with device results."),
    "emulated": True,
    "passed": int(compare_rc) == 0 and bench_ok,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "command": cmd,
    "host": {"machine": platform.machine(), "cpu_model": cpu, "cores": os.cpu_count(),
             "kernel": platform.release(), "python": platform.python_version(),
             "onnxruntime": (host_run or {}).get("onnxruntime"),
             "numpy": (host_run or {}).get("numpy")},
    "emulation": {"qemu": qemu, "qemu_cpu": os.environ.get("QEMU_CPU"),
                  "rootfs": f"Debian bookworm arm64, debootstrap minbase ({Path(tarball).name})",
                  "cpuinfo": "fake Cortex-A72 /proc/cpuinfo bind-mounted (onnxruntime needs an ARM one)"},
    "arm64": load("arm_versions.json"),
    "install": {"how": "python3 -m venv /opt/edgeprune && pip install /src (the Dockerfile's "
                       "build step) from local aarch64 wheels, inside the root under qemu",
                "seconds_emulated": int(install_s)},
    "predictions": {"ok": int(compare_rc) == 0,
                    "reference": "the same bundle and eval.npz on the host (x86_64)",
                    **(compare or {"error": "no comparison"})},
    "bench": {"command": f"edgeprune-entrypoint {flags} (EDGEPRUNE_EMULATED=1)",
              "exit_code": int(bench_rc), "ok": bench_ok, "wall_seconds_emulated": int(bench_s),
              "results": bench_summary,
              "machine": (bench or {}).get("machine")},
    "emulated_latency": {
        "label": "EMULATED (qemu-user on x86) - not device numbers",
        "predict_batch1_ms_median_emulated": {k: v["batch1_ms_median"]
                                              for k, v in (arm_run or {}).get("models", {}).items()},
        "predict_batch1_ms_median_host_native": {k: v["batch1_ms_median"]
                                                 for k, v in (host_run or {}).get("models", {}).items()},
        "predict_wall_seconds_emulated": int(predict_s),
    },
    "accuracy": {"arm64": {k: v["accuracy"] for k, v in (arm_run or {}).get("models", {}).items()},
                 "host": {k: v["accuracy"] for k, v in (host_run or {}).get("models", {}).items()}},
}
Path(out).write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({"passed": result["passed"], "predictions": compare, "bench_ok": bench_ok,
                  "out": out}, indent=2))
sys.exit(0 if result["passed"] else 1)
PY
