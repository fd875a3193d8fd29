#!/usr/bin/env bash
# Ship a bundle to a device over ssh, benchmark it there, and bring the JSON back into RUN/bench/
# so `edgeprune report RUN` shows the device's numbers beside the host's.
#
#   deploy/ship.sh --host USER@DEVICE --bundle RUN/bundle [options] [-- extra bench flags]
#   deploy/ship.sh --host USER@DEVICE --probes RUN/latency/probes [options] [-- extra bench flags]
#
#   --host H          ssh destination (required), e.g. pi@raspberrypi.local
#   --bundle DIR      bundle directory with model.onnx / meta.json
#   --probes DIR      instead of a bundle: latency probes (edgeprune probes RUN); the device
#                     measures them into a latency table that comes back to --latency-out
#   --latency-out F   where the table goes (default: table-<NAME>.json beside the probes); give it
#                     to `edgeprune train --latency-table F --target T`
#   --run DIR         run directory receiving bench/<file> (default: the bundle's parent)
#   --name NAME       device label: RUN/bench/<NAME>-<variant>.json (default: host part of --host)
#   --mode M          docker | venv | auto (default auto: docker if the device has it, else venv)
#   --image IMG       runtime image on the device (default edgeprune-runtime)
#   --image-tar FILE  `docker save` archive to copy and `docker load` on the device first
#   --remote-dir D    working directory on the device, relative to its home (default edgeprune)
#   --target T        bench preset: rpi4 | rpi5 | x86 (default rpi4)
#   --port N, -i KEY  ssh port / identity file
#   --reinstall       venv mode: reinstall edgeprune even if the device venv already has it
#   --dry-run         print the commands instead of running them
#
# Docker mode runs the image from docker/Dockerfile (whose entrypoint sees probes.json and makes
# the table). Venv mode builds a wheel of this checkout, copies it, and installs the base install
# (no torch) into a virtualenv on the device.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

HOST="" BUNDLE="" PROBES="" LATENCY_OUT="" RUN="" NAME="" MODE=auto IMAGE=edgeprune-runtime IMAGE_TAR=""
REMOTE_DIR=edgeprune TARGET=rpi4 PORT="" IDENTITY="" REINSTALL=0 DRY_RUN=0
BENCH_ARGS=()

die() { printf 'ship: error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value; see --help"; fi; }

while [ $# -gt 0 ]; do
    case $1 in
        --host) need_value "$@"; HOST=$2; shift 2 ;;
        --bundle) need_value "$@"; BUNDLE=$2; shift 2 ;;
        --probes) need_value "$@"; PROBES=$2; shift 2 ;;
        --latency-out) need_value "$@"; LATENCY_OUT=$2; shift 2 ;;
        --run) need_value "$@"; RUN=$2; shift 2 ;;
        --name) need_value "$@"; NAME=$2; shift 2 ;;
        --mode) need_value "$@"; MODE=$2; shift 2 ;;
        --image) need_value "$@"; IMAGE=$2; shift 2 ;;
        --image-tar) need_value "$@"; IMAGE_TAR=$2; shift 2 ;;
        --remote-dir) need_value "$@"; REMOTE_DIR=$2; shift 2 ;;
        --target) need_value "$@"; TARGET=$2; shift 2 ;;
        --port) need_value "$@"; PORT=$2; shift 2 ;;
        -i|--identity) need_value "$@"; IDENTITY=$2; shift 2 ;;
        --reinstall) REINSTALL=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        *) die "unknown option '$1'; see --help (bench flags go after --)" ;;
    esac
done

[ -n "$HOST" ] || die "missing --host USER@DEVICE (the ssh destination of the device)"
[ -z "$BUNDLE" ] || [ -z "$PROBES" ] || die "give --bundle DIR or --probes DIR, not both"
if [ -n "$PROBES" ]; then
    [ -d "$PROBES" ] || die "probe directory '$PROBES' does not exist; make it with 'edgeprune probes RUN --out $PROBES'"
    [ -f "$PROBES/probes.json" ] || die "'$PROBES' holds no probes.json; make it with 'edgeprune probes RUN --out DIR'"
    BUNDLE=$PROBES
else
    [ -n "$BUNDLE" ] || die "missing --bundle DIR (a bundle written by 'edgeprune export') or --probes DIR"
    [ -d "$BUNDLE" ] || die "bundle directory '$BUNDLE' does not exist; run 'edgeprune export' first"
    [ -f "$BUNDLE/model.onnx" ] || [ -f "$BUNDLE/meta.json" ] ||
        die "'$BUNDLE' is not a bundle (no model.onnx or meta.json); pass RUN/bundle"
fi
case $MODE in docker|venv|auto) ;; *) die "--mode must be docker, venv or auto, not '$MODE'" ;; esac
case $TARGET in rpi4|rpi5|x86) ;; *) die "--target must be rpi4, rpi5 or x86, not '$TARGET'" ;; esac
[ -z "$IMAGE_TAR" ] || [ -f "$IMAGE_TAR" ] || die "--image-tar '$IMAGE_TAR' does not exist"
case $REMOTE_DIR in *[!A-Za-z0-9._/~-]*|"") die "--remote-dir may hold only letters, digits and ._/~-" ;; esac

BUNDLE=$(cd "$BUNDLE" && pwd)
RUN=${RUN:-$(dirname "$BUNDLE")}
NAME=${NAME:-${HOST#*@}}
NAME=$(printf '%s' "$NAME" | tr -c 'A-Za-z0-9._-' '_')
RESULT=bench-$NAME.json
LOCAL_OUT=$RUN/bench/.device-$NAME.json
if [ -n "$PROBES" ]; then
    RESULT=latency-$NAME.json
    LATENCY_OUT=${LATENCY_OUT:-$BUNDLE/../table-$NAME.json}
    [ -d "$(dirname "$LATENCY_OUT")" ] || die "the directory of --latency-out '$LATENCY_OUT' does not exist"
    LATENCY_OUT=$(cd "$(dirname "$LATENCY_OUT")" && pwd)/$(basename "$LATENCY_OUT")
    LOCAL_OUT=$LATENCY_OUT.part
fi

SSH=(ssh -o BatchMode=yes)
SCP=(scp -o BatchMode=yes -q)
[ -z "$PORT" ] || { SSH+=(-p "$PORT"); SCP+=(-P "$PORT"); }
[ -z "$IDENTITY" ] || { SSH+=(-i "$IDENTITY"); SCP+=(-i "$IDENTITY"); }

# Shell-quote one word for display, readable: plain words stay bare, others get single quotes.
q() {
    case $1 in
        *[!A-Za-z0-9@%+=:,./_-]*|"") printf "'%s'" "${1//\'/\'\\\'\'}" ;;
        *) printf '%s' "$1" ;;
    esac
}

# Print the command (always) and run it (unless --dry-run).
run() {
    local a
    printf '+'; for a in "$@"; do printf ' '; q "$a"; done; printf '\n'
    [ "$DRY_RUN" = 1 ] || "$@"
}
remote() { run "${SSH[@]}" "$HOST" "$1"; }

# Bench flags quoted for the remote shell.
EXTRA=""
for a in --target "$TARGET" "${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"}"; do EXTRA+=" $(printf '%q' "$a")"; done

if [ "$MODE" = auto ]; then
    if [ "$DRY_RUN" = 1 ]; then
        echo "# --mode auto: docker if the device has it, else venv; showing docker"
        MODE=docker
    elif "${SSH[@]}" "$HOST" 'command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1'; then
        MODE=docker
    else
        echo "ship: no usable docker on $HOST; using a virtualenv" >&2
        MODE=venv
    fi
fi

R=$REMOTE_DIR
remote "mkdir -p $R && rm -rf $R/bundle $R/results && mkdir -p $R/bundle $R/results"
run "${SCP[@]}" -r "$BUNDLE/." "$HOST:$R/bundle/"
if [ -f "$BUNDLE/MANIFEST.sha256" ]; then
    remote "cd $R/bundle && sha256sum --quiet -c MANIFEST.sha256"
fi

if [ "$MODE" = docker ]; then
    if [ -n "$IMAGE_TAR" ]; then
        run "${SCP[@]}" "$IMAGE_TAR" "$HOST:$R/image.tar"
        remote "docker load -i $R/image.tar && rm -f $R/image.tar"
    fi
    # --user: the results directory belongs to the ssh user, not to the image's own user.
    remote "cd $R && docker run --rm --user \"\$(id -u):\$(id -g)\" -e EDGEPRUNE_DEVICE=$NAME -e EDGEPRUNE_JSON=$RESULT -v \"\$PWD/bundle\":/bundle:ro -v \"\$PWD/results\":/results $(printf '%q' "$IMAGE")$EXTRA"
else
    if [ "$REINSTALL" = 1 ] || [ "$DRY_RUN" = 1 ] ||
        ! "${SSH[@]}" "$HOST" "test -x $R/venv/bin/edgeprune"; then
        WHEELS=/tmp/edgeprune-wheels
        if [ "$DRY_RUN" = 0 ]; then
            WHEELS=$(mktemp -d)
            trap 'rm -rf "$WHEELS"' EXIT
        fi
        run "${PYTHON:-python3}" -m pip wheel --no-deps --quiet -w "$WHEELS" "$REPO"
        WHEEL=$WHEELS/edgeprune-wheel.whl
        [ "$DRY_RUN" = 1 ] || WHEEL=$(ls "$WHEELS"/edgeprune-*.whl)
        remote "mkdir -p $R/wheels && rm -f $R/wheels/edgeprune-*.whl"
        run "${SCP[@]}" "$WHEEL" "$HOST:$R/wheels/"
        # The base install only: onnxruntime, numpy, psutil, typer, rich; never torch.
        remote "python3 -m venv $R/venv && $R/venv/bin/pip install --quiet --upgrade $R/wheels/edgeprune-*.whl"
    fi
    WHAT="$R/bundle"
    [ -z "$PROBES" ] || WHAT="--latency-probes $R/bundle"
    remote "EDGEPRUNE_DEVICE=$NAME $R/venv/bin/edgeprune bench $WHAT --json $R/results/$RESULT$EXTRA"
fi

if [ -n "$PROBES" ]; then
    # The table, whole or not at all, where train reads it.
    run "${SCP[@]}" "$HOST:$R/results/$RESULT" "$LOCAL_OUT"
    run mv "$LOCAL_OUT" "$LATENCY_OUT"
    echo "latency table: $LATENCY_OUT (edgeprune train ... --latency-table $LATENCY_OUT --target $TARGET --target-latency-ms MS)"
    exit 0
fi

# One file per variant in RUN/bench/, the layout `edgeprune bench` writes on the host.
run mkdir -p "$RUN/bench"
run "${SCP[@]}" "$HOST:$R/results/$RESULT" "$LOCAL_OUT"
run "${PYTHON:-python3}" "$HERE/collect.py" "$LOCAL_OUT" "$RUN"
[ "$DRY_RUN" = 1 ] || rm -f "$LOCAL_OUT"
echo "device results: $RUN/bench/$NAME-*.json (edgeprune report $RUN)"
