#!/usr/bin/env bash
# ARM64 verification without a Pi and without a Docker engine. Builds docker/Dockerfile for
# linux/arm64 with buildah (no daemon; vfs storage, runc) over a base image made from a
# debootstrap'd Debian bookworm root, runs the image's entrypoint (`edgeprune bench`) on a bundle
# under qemu-user, and checks the arm64 predictions against the host's (same argmax, outputs
# within tolerance). Without buildah it does the Dockerfile's install steps in the root itself.
# Every runtime extra with a cp311 aarch64 wheel (deploy/arm64_wheels.py asks PyPI) is installed,
# imported and run on the bundle's models for it, each runtime in its own process.
#
#   deploy/arm64_verify.sh [--mode auto|image|chroot] [--bundle DIR] [--out FILE] [--cache DIR]
#                          [--runtimes LIST] [--save-image FILE] [--keep-root]
#                          [--probes DIR [--latency-out FILE]]
#
#   --mode M          image: buildah build + run; chroot: same install steps in a plain root;
#                     auto (default): image if buildah and runc are installed, else chroot
#   --bundle DIR      bundle to check (default: a tiny one from tests/bundle_fixture.py)
#   --out FILE        result JSON (default benchmarks/results/arm64_emulated.json)
#   --cache DIR       root tarball, aarch64 wheels, buildah storage (default /work/cache)
#   --runtimes LIST   runtimes to install and run: onnxruntime,openvino,ncnn or all (default all);
#                     onnxruntime is always in. One without an aarch64 wheel is recorded, not installed.
#                     Give a bundle exported with `edgeprune export RUN --runtimes all` to run them all
#   --save-image F    image mode: also write the arm64 image as a docker archive (docker load -i)
#   --keep-root       chroot mode: leave the extracted root in place (unmounted) for inspection
#   --probes DIR      also measure a latency table of these probes (`edgeprune probes RUN`) with
#                     the image's entrypoint, as `docker run -v DIR:/bundle ...` does on a device
#   --latency-out F   where that table goes (default benchmarks/results/latency-arm64-emulated.json);
#                     give it to `edgeprune train --latency-table F --target rpi4`. Its timings are
#                     emulated: the table proves the path, not the device's speed
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
MODE=auto BUNDLE="" OUT=$REPO/benchmarks/results/arm64_emulated.json KEEP=0 SAVE_IMAGE=""
PROBES="" RUNTIMES=all LATENCY_OUT=$REPO/benchmarks/results/latency-arm64-emulated.json
HOST_PY=${PYTHON:-$REPO/.venv/bin/python}
export QEMU_CPU=${QEMU_CPU:-cortex-a72}   # the default qemu CPU model is ~15x slower
BENCH_FLAGS=(--target rpi4 --batch 1 --warmup 1 --runs 3 --rounds 1)
LATENCY_FLAGS=(--target rpi4 --batch 1 --warmup 2 --runs 20 --rounds 1)
BASE_TAG=localhost/edgeprune-base-arm64:bookworm
IMAGE_TAG=localhost/edgeprune-runtime:arm64
CMDLINE="deploy/arm64_verify.sh $*"

while [ $# -gt 0 ]; do
    case $1 in
        --mode) MODE=$2; shift 2 ;;
        --bundle) BUNDLE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        --save-image) SAVE_IMAGE=$2; shift 2 ;;
        --keep-root) KEEP=1; shift ;;
        --probes) PROBES=$2; shift 2 ;;
        --runtimes) RUNTIMES=$2; shift 2 ;;
        --latency-out) LATENCY_OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1'; see --help" ;;
    esac
done

[ -x "$HOST_PY" ] || HOST_PY=$(command -v python3)
"$HOST_PY" -c 'import onnxruntime, numpy' 2>/dev/null ||
    die "$HOST_PY lacks onnxruntime/numpy; set PYTHON to an interpreter with the base install"
# The names are checked by edgeprune's own registry (bench/ imports no torch); onnxruntime leads.
RUNTIMES=$(PYTHONPATH=$REPO "$HOST_PY" -c '
import sys
from edgeprune.bench.runtimes import parse
from edgeprune.errors import UserError
try:
    names = parse(sys.argv[1])
except UserError as e:
    sys.exit(str(e).replace("--runtime ", "--runtimes "))
print(",".join(dict.fromkeys(("onnxruntime", *names))))' "$RUNTIMES" 2>&1) || die "$RUNTIMES"
[ "$(id -u)" = 0 ] || die "needs root (chroot, mount, buildah); run with sudo"
case $MODE in
    auto) if command -v buildah >/dev/null && command -v runc >/dev/null; then MODE=image
          else MODE=chroot; fi ;;
    image) if ! command -v buildah >/dev/null || ! command -v runc >/dev/null; then
               die "--mode image needs buildah and runc (apt-get install buildah runc)"
           fi ;;
    chroot) ;;
    *) die "--mode must be auto, image or chroot, not '$MODE'" ;;
esac
ensure_binfmt
mkdir -p "$CACHE"
OUT=$(realpath -m "$OUT")

WORK=$(mktemp -d "$CACHE/arm64-verify.XXXXXX")
ROOT=$WORK/root
CTR=""
BUILDAH=(buildah --storage-driver vfs --root "$CACHE/containers/storage"
         --runroot "$CACHE/containers/run")
cleanup() {
    local rc=$?
    [ -z "$CTR" ] || "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true
    root_unmount_all "$ROOT" || log "could not unmount everything under $ROOT"
    if [ "$KEEP" = 1 ] && [ "$MODE" = chroot ]; then
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
if [ -n "$PROBES" ]; then
    [ -f "$PROBES/probes.json" ] || die "'$PROBES' holds no probes.json; make one with: edgeprune probes RUN --out DIR"
    PROBES=$(cd "$PROBES" && pwd)
    LATENCY_OUT=$(realpath -m "$LATENCY_OUT")
else
    PROBES=$WORK/no-probes   # an empty mount point keeps both modes' mounts alike
    mkdir -p "$PROBES"
fi

TARBALL=$("$HERE/arm64_rootfs.sh" --cache "$CACHE")

# Which runtimes have a cp311 aarch64 wheel, asked of PyPI one by one with pyproject's requirement
# (the pin keeps onnxruntime off 1.21.0, which dies with SIGILL on the Pi 4). A runtime without
# one is recorded in the result and left out of the install, never silently.
WHEELS=$CACHE/wheels-aarch64
log "which of $RUNTIMES have cp311 aarch64 wheels; the wheels -> $WHEELS"
mapfile -t RUNTIME_REQS < <("$HOST_PY" "$HERE/arm64_wheels.py" --runtimes "$RUNTIMES" \
    --pyproject "$REPO/pyproject.toml" --dest "$WORK/wheel-probe" --out "$WORK/wheels.json" 2>"$WORK/wheels.log") ||
    { cat "$WORK/wheels.log" >&2; die "could not ask PyPI which runtimes have aarch64 wheels"; }
[ ! -s "$WORK/wheels.log" ] || sed 's/^/[arm64] /' "$WORK/wheels.log" >&2
INSTALLED=onnxruntime EXTRAS=""
for rt in ${RUNTIMES//,/ }; do
    [ "$rt" != onnxruntime ] || continue
    printf '%s\n' "${RUNTIME_REQS[@]}" | grep -q "^$rt\b" || continue
    INSTALLED=$INSTALLED,$rt EXTRAS=${EXTRAS:+$EXTRAS,}$rt
done
# The wheels themselves with their dependencies, fetched on the host (seconds, no emulation); the
# build reads only these. Bookworm's glibc (2.36) takes manylinux tags up to 2_36: OpenVINO's
# aarch64 wheels need 2_35.
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 36 -1 17); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
"$HOST_PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    "${PLATFORMS[@]}" --python-version 3.11 --implementation cp \
    -d "$WHEELS" "${RUNTIME_REQS[@]}" "numpy>=1.24" "psutil>=5.9" "typer>=0.12" \
    "rich>=13" "tokenizers>=0.20" "setuptools>=64" 2>"$WORK/download.log" ||
    { tail -n 5 "$WORK/download.log" >&2; die "could not download aarch64 wheels"; }
log "installing runtimes: $INSTALLED"

CPUINFO=$WORK/cpuinfo
write_arm64_cpuinfo "$CPUINFO"
mkdir -p "$WORK/results"
chmod 0777 "$WORK/results"   # the image runs as a non-root user

IMAGE_FACTS=None
if [ "$MODE" = image ]; then
    # Base image = the debootstrap root (python3, venv), so the build needs no registry.
    if ! "${BUILDAH[@]}" inspect --type image "$BASE_TAG" >/dev/null 2>&1 ||
        [ "$TARBALL" -nt "$CACHE/containers/base.stamp" ]; then
        log "base image $BASE_TAG from $(basename "$TARBALL")"
        mkdir -p "$WORK/basectx"
        ln "$TARBALL" "$WORK/basectx/rootfs.tar.gz" 2>/dev/null || cp "$TARBALL" "$WORK/basectx/rootfs.tar.gz"
        printf 'FROM scratch\nADD rootfs.tar.gz /\nCMD ["/bin/sh"]\n' >"$WORK/basectx/Containerfile"
        timeout 900 "${BUILDAH[@]}" bud --arch arm64 --os linux --runtime runc -q \
            -f "$WORK/basectx/Containerfile" -t "$BASE_TAG" "$WORK/basectx" >"$WORK/base.log" 2>&1 ||
            { tail -n 20 "$WORK/base.log" >&2; die "could not make the base image"; }
        touch "$CACHE/containers/base.stamp"
    fi
    # docker/Dockerfile as is; the RUN steps execute under qemu through binfmt. cpuinfo is
    # mounted because the Dockerfile imports onnxruntime to check the install.
    log "buildah bud docker/Dockerfile for linux/arm64 (emulated; a few minutes)"
    t0=$(date +%s)
    timeout 2400 "${BUILDAH[@]}" bud --arch arm64 --os linux --runtime runc --network none \
        --build-arg BASE_IMAGE="$BASE_TAG" --build-arg PIP_FIND_LINKS=/wheels \
        --build-arg PIP_NO_INDEX=1 --build-arg RUNTIME_EXTRAS="$EXTRAS" --env QEMU_CPU="$QEMU_CPU" \
        -v "$WHEELS:/wheels:ro" -v "$CPUINFO:/proc/cpuinfo:ro" \
        -f "$REPO/docker/Dockerfile" -t "$IMAGE_TAG" "$REPO" >"$WORK/install.log" 2>&1 ||
        { tail -n 30 "$WORK/install.log" >&2; die "buildah could not build docker/Dockerfile for arm64"; }
    INSTALL_S=$(( $(date +%s) - t0 ))
    INSTALL_HOW="buildah bud -f docker/Dockerfile --arch arm64 (vfs, runc, no daemon) over $BASE_TAG; pip reads local aarch64 wheels"
    log "image built in ${INSTALL_S}s"
    IMAGE_FACTS=$("${BUILDAH[@]}" inspect --type image --format \
        '{"name": "'"$IMAGE_TAG"'", "id": "{{.FromImageID}}", "architecture": "{{.OCIv1.Architecture}}", "user": "{{.OCIv1.Config.User}}", "base": "'"$BASE_TAG"'"}' \
        "$IMAGE_TAG")
    if [ -n "$SAVE_IMAGE" ]; then
        rm -f "$SAVE_IMAGE"
        "${BUILDAH[@]}" push -q "$IMAGE_TAG" "docker-archive:$SAVE_IMAGE:edgeprune-runtime:arm64" ||
            die "could not save the image to $SAVE_IMAGE"
        log "saved $SAVE_IMAGE (docker load -i)"
    fi
    CTR=$("${BUILDAH[@]}" from --pull-never "$IMAGE_TAG" 2>/dev/null)
    # Run a command in the image as `docker run` would: its user, the bundle and results mounted.
    arm_exec() {
        local limit=$1
        shift
        timeout --kill-after=10 "$limit" "${BUILDAH[@]}" run --runtime runc --network none \
            --env QEMU_CPU="$QEMU_CPU" \
            -v "$BUNDLE:/bundle:ro" -v "$PROBES:/probes:ro" -v "$WORK/results:/results" \
            -v "$CPUINFO:/proc/cpuinfo:ro" \
            -v "$HERE/predict.py:/opt/predict.py:ro" "$CTR" -- "$@"
    }
else
    log "extracting $TARBALL"
    mkdir -p "$ROOT"
    tar --numeric-owner -xzf "$TARBALL" -C "$ROOT"
    install_qemu_into "$ROOT"
    # The same inputs the image build sees (.dockerignore allow-list), at the same paths.
    mkdir -p "$ROOT/src" "$ROOT/wheels" "$ROOT/bundle" "$ROOT/probes" "$ROOT/results" "$ROOT/usr/local/bin"
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
        -cf - pyproject.toml README.md edgeprune | tar -C "$ROOT/src" -xf -
    cp "$WHEELS"/*.whl "$ROOT/wheels/"
    cp "$REPO/docker/entrypoint.sh" "$ROOT/usr/local/bin/edgeprune-entrypoint"
    chmod 0755 "$ROOT/usr/local/bin/edgeprune-entrypoint"
    cp "$HERE/predict.py" "$ROOT/opt/predict.py"
    root_mount_runtime "$ROOT" "$CPUINFO"
    mount --bind -o ro "$BUNDLE" "$ROOT/bundle"
    mount --bind -o ro "$PROBES" "$ROOT/probes"
    mount --bind "$WORK/results" "$ROOT/results"

    log "installing /src${EXTRAS:+[$EXTRAS]} in the arm64 root (emulated; minutes)"
    t0=$(date +%s)
    root_exec "$ROOT" 2400 /bin/sh -c 'python3 -m venv /opt/edgeprune &&
        PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
        /opt/edgeprune/bin/pip install --quiet "/src$1"' sh "${EXTRAS:+[$EXTRAS]}" >"$WORK/install.log" 2>&1 ||
        { tail -n 20 "$WORK/install.log" >&2; die "install failed in the arm64 root"; }
    INSTALL_S=$(( $(date +%s) - t0 ))
    INSTALL_HOW="python3 -m venv /opt/edgeprune && pip install /src${EXTRAS:+[$EXTRAS]} (the Dockerfile's build step) from local aarch64 wheels, in a chroot under qemu"
    log "installed in ${INSTALL_S}s"
    arm_exec() {
        local limit=$1
        shift
        root_exec "$ROOT" "$limit" "$@"
    }
fi

# From here on both modes look the same from inside: /opt/edgeprune, /bundle, /results.
arm_exec 600 /opt/edgeprune/bin/python -c '
import importlib.util, json, platform, numpy, onnxruntime
assert importlib.util.find_spec("torch") is None, "torch leaked into the runtime install"
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
                  "torch_installed": False}))' >"$WORK/arm_versions.json" 2>"$WORK/versions.log" ||
    { cat "$WORK/versions.log" >&2; die "import onnxruntime failed under emulation"; }

log "predictions: host"
# The host runs every runtime of the bundle it has (edgeprune from this checkout for OpenVINO/ncnn).
PYTHONPATH=$REPO "$HOST_PY" "$HERE/predict.py" run "$BUNDLE" "$WORK/host.npz" --timing-runs 3 \
    >"$WORK/host_run.json"
log "predictions: arm64 (emulated), onnxruntime"
t0=$(date +%s)
arm_exec 900 /opt/edgeprune/bin/python /opt/predict.py run /bundle /results/arm64.npz \
    --timing-runs 3 --runtime onnxruntime >"$WORK/arm_run.json" 2>"$WORK/arm_run.log" ||
    { cat "$WORK/arm_run.log" >&2; die "predictions failed under emulation"; }
PREDICT_S=$(( $(date +%s) - t0 ))
COMPARE_RC=0
"$HOST_PY" "$HERE/predict.py" compare "$WORK/host.npz" "$WORK/results/arm64.npz" --only-b \
    >"$WORK/compare.json" || COMPARE_RC=$?

# Every other runtime: imported, then its models run, each in a process of its own so that one
# the emulator cannot run (an illegal instruction, a CPU plugin refusing the CPU) is a recorded
# reason, not the end of the check. Files rt-<name>.* are read by arm64_report.py.
for rt in ${RUNTIMES//,/ }; do
    [ "$rt" != onnxruntime ] || continue
    case ",$INSTALLED," in *",$rt,"*) ;; *) continue ;; esac
    log "runtime $rt: import (emulated)"
    rc=0
    arm_exec 600 /opt/edgeprune/bin/python -c '
import json, sys
from edgeprune.bench.runtimes import get
r = get(sys.argv[1])
print(json.dumps({"missing": r.missing(), "version": r.version()}))' "$rt" \
        >"$WORK/rt-$rt.import.json" 2>"$WORK/rt-$rt.import.log" || rc=$?
    echo "$rc" >"$WORK/rt-$rt.import.rc"
    log "runtime $rt: predictions (emulated)"
    rc=0 t0=$(date +%s)
    arm_exec 1200 /opt/edgeprune/bin/python /opt/predict.py run /bundle "/results/arm64-$rt.npz" \
        --timing-runs 3 --runtime "$rt" >"$WORK/rt-$rt.run.json" 2>"$WORK/rt-$rt.run.log" || rc=$?
    echo "$rc $(( $(date +%s) - t0 ))" >"$WORK/rt-$rt.run.rc"
    if [ "$rc" = 0 ]; then
        "$HOST_PY" "$HERE/predict.py" compare "$WORK/host.npz" "$WORK/results/arm64-$rt.npz" --only-b \
            >"$WORK/rt-$rt.compare.json" || true
    else
        log "runtime $rt did not run under emulation (exit $rc): $(grep -v '^\s*$' "$WORK/rt-$rt.run.log" | tail -n 1)"
    fi
done

# The image's entrypoint, as `docker run ... edgeprune-runtime --target rpi4` calls it.
log "entrypoint: edgeprune bench ${BENCH_FLAGS[*]} (emulated)"
BENCH_RC=0
t0=$(date +%s)
arm_exec 1800 /usr/bin/env PATH=/opt/edgeprune/bin:/usr/local/bin:/usr/bin:/bin \
    EDGEPRUNE_EMULATED=1 EDGEPRUNE_DEVICE=arm64-emulated EDGEPRUNE_JSON=bench.json \
    /usr/local/bin/edgeprune-entrypoint "${BENCH_FLAGS[@]}" >"$WORK/bench.log" 2>&1 || BENCH_RC=$?
BENCH_S=$(( $(date +%s) - t0 ))
[ "$BENCH_RC" = 0 ] || tail -n 20 "$WORK/bench.log" >&2
[ ! -f "$WORK/results/bench.json" ] || cp "$WORK/results/bench.json" "$WORK/bench.json"

# A latency table made on the "device": the entrypoint sees probes.json and measures every probe
# (edgeprune bench --latency-probes) with the rpi4 preset's threads, batch 1.
LATENCY_RC=None LATENCY_S=0
if [ -f "$PROBES/probes.json" ]; then
    log "entrypoint: latency table of $(basename "$PROBES") (emulated)"
    t0=$(date +%s)
    LATENCY_RC=0
    arm_exec 3600 /usr/bin/env PATH=/opt/edgeprune/bin:/usr/local/bin:/usr/bin:/bin \
        EDGEPRUNE_EMULATED=1 EDGEPRUNE_DEVICE=arm64-emulated EDGEPRUNE_BUNDLE=/probes \
        EDGEPRUNE_JSON=latency.json /usr/local/bin/edgeprune-entrypoint \
        "${LATENCY_FLAGS[@]}" >"$WORK/latency.log" 2>&1 || LATENCY_RC=$?
    LATENCY_S=$(( $(date +%s) - t0 ))
    if [ "$LATENCY_RC" = 0 ] && [ -f "$WORK/results/latency.json" ]; then
        mkdir -p "$(dirname "$LATENCY_OUT")"
        cp "$WORK/results/latency.json" "$LATENCY_OUT.tmp" && mv "$LATENCY_OUT.tmp" "$LATENCY_OUT"
        log "latency table -> $LATENCY_OUT (emulated timings)"
    else
        tail -n 20 "$WORK/latency.log" >&2
    fi
fi

"$HOST_PY" - "$WORK/facts.json" <<PY
import json, sys
json.dump({"command": """$CMDLINE""", "mode": "$MODE", "install_how": """$INSTALL_HOW""",
           "install_s": $INSTALL_S, "predict_s": $PREDICT_S, "bench_s": $BENCH_S,
           "bench_rc": $BENCH_RC, "compare_rc": $COMPARE_RC,
           "latency_rc": $LATENCY_RC, "latency_s": $LATENCY_S, "latency_flags": "${LATENCY_FLAGS[*]}",
           "latency_table": """$( [ "$LATENCY_RC" = 0 ] && echo "$LATENCY_OUT" )""" or None,
           "qemu": """$(qemu-aarch64-static --version | head -n1)""", "qemu_cpu": "$QEMU_CPU",
           "rootfs": "$(basename "$TARBALL")", "bench_flags": "${BENCH_FLAGS[*]}",
           "runtimes": "$RUNTIMES", "installed": "$INSTALLED",
           "image": $IMAGE_FACTS}, open(sys.argv[1], "w"))
PY
"$HOST_PY" "$HERE/arm64_report.py" "$WORK" "$OUT" "$WORK/facts.json"
