#!/bin/sh
# Entrypoint of the edgeprune runtime image: benchmark the bundle mounted at /bundle and write
# the JSON into /results. Extra arguments go to `edgeprune bench` (e.g. --target rpi4 --runs 200).
# A directory of latency probes (probes.json, from `edgeprune probes`) mounted there instead is
# measured into the latency table /results/latency-<device>.json (edgeprune bench --latency-probes).
#
# Environment (all optional):
#   EDGEPRUNE_BUNDLE   bundle directory            (default /bundle)
#   EDGEPRUNE_RESULTS  results directory           (default /results)
#   EDGEPRUNE_DEVICE   name of this machine, used in the file name (default: hostname)
#   EDGEPRUNE_JSON     result file name inside the results directory (default bench-<device>.json,
#                      latency-<device>.json for probes)
#   EDGEPRUNE_TARGET, EDGEPRUNE_THREADS, EDGEPRUNE_BATCH, EDGEPRUNE_WARMUP, EDGEPRUNE_RUNS,
#   EDGEPRUNE_ROUNDS   the same as --target, --threads, --batch, --warmup, --runs, --rounds
#
# A first argument that is not an option runs that command instead (e.g. `sh`, `edgeprune --help`).
set -eu

if [ $# -gt 0 ]; then
    case $1 in
        -*) ;;
        *) exec "$@" ;;
    esac
fi

bundle=${EDGEPRUNE_BUNDLE:-/bundle}
results=${EDGEPRUNE_RESULTS:-/results}

fail() {
    echo "edgeprune-runtime: error: $*" >&2
    exit 2
}

if [ ! -f "$bundle/meta.json" ] && [ ! -f "$bundle/model.onnx" ] && [ ! -f "$bundle/probes.json" ]; then
    fail "no bundle at $bundle (no meta.json or model.onnx); mount one: docker run -v \$PWD/bundle:/bundle:ro ..."
fi
if ! mkdir -p "$results" 2>/dev/null || ! [ -w "$results" ]; then
    fail "cannot write to $results; mount a writable directory (-v \$PWD/results:/results) and run with --user \$(id -u):\$(id -g) if it belongs to another user"
fi

device=${EDGEPRUNE_DEVICE:-$(hostname 2>/dev/null || uname -n)}
device=$(printf '%s' "$device" | tr -c 'A-Za-z0-9._-' '_')
if [ -f "$bundle/probes.json" ]; then
    out="$results/${EDGEPRUNE_JSON:-latency-$device.json}"
    set -- --latency-probes "$bundle" --json "$out" "$@"
else
    out="$results/${EDGEPRUNE_JSON:-bench-$device.json}"
    # A directory with only model.onnx (no meta.json) is benchmarked as a plain model file.
    target=$bundle
    [ -f "$bundle/meta.json" ] || target=$bundle/model.onnx
    set -- "$target" --json "$out" "$@"
fi
[ -n "${EDGEPRUNE_TARGET:-}" ] && set -- "$@" --target "$EDGEPRUNE_TARGET"
[ -n "${EDGEPRUNE_THREADS:-}" ] && set -- "$@" --threads "$EDGEPRUNE_THREADS"
[ -n "${EDGEPRUNE_BATCH:-}" ] && set -- "$@" --batch "$EDGEPRUNE_BATCH"
[ -n "${EDGEPRUNE_WARMUP:-}" ] && set -- "$@" --warmup "$EDGEPRUNE_WARMUP"
[ -n "${EDGEPRUNE_RUNS:-}" ] && set -- "$@" --runs "$EDGEPRUNE_RUNS"
[ -n "${EDGEPRUNE_ROUNDS:-}" ] && set -- "$@" --rounds "$EDGEPRUNE_ROUNDS"

echo "edgeprune-runtime: $(uname -m), bench $bundle -> $out" >&2
exec edgeprune bench "$@"
