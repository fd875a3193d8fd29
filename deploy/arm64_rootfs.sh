#!/usr/bin/env bash
# Build (once) an arm64 Debian bookworm root with python3 and cache it as a tarball.
#
#   deploy/arm64_rootfs.sh [--cache DIR] [--mirror URL] [--force]
#
# Prints the tarball path. Debootstrap's second stage runs under qemu-user and takes ~8 minutes
# on 2 cores; later runs reuse the tarball. Needs root, debootstrap, qemu-user-static,
# binfmt-support.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib_root.sh
. "$HERE/lib_root.sh"

CACHE=${EDGEPRUNE_CACHE:-/work/cache}
MIRROR=""
FORCE=0
SUITE=bookworm
# python3-venv and ca-certificates let the same root serve as the base of the runtime image.
PACKAGES=python3,python3-venv,ca-certificates

while [ $# -gt 0 ]; do
    case $1 in
        --cache) CACHE=$2; shift 2 ;;
        --mirror) MIRROR=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1'; see --help" ;;
    esac
done

TARBALL=$CACHE/debian-$SUITE-arm64-python3.tar.gz
if [ -s "$TARBALL" ] && [ "$FORCE" = 0 ]; then
    echo "$TARBALL"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "building the root needs root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null || die "debootstrap not found; apt-get install debootstrap"

# The host's own Debian mirror: the only one reachable from a machine behind a package proxy.
if [ -z "$MIRROR" ]; then
    MIRROR=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $2}' || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

ensure_binfmt
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/rootfs-build.XXXXXX")
cleanup() { root_remove "$WORK" || log "left $WORK in place (mounts remain)"; }
trap cleanup EXIT
ROOT=$WORK/root
mkdir -p "$ROOT"

log "debootstrap first stage ($SUITE arm64 from $MIRROR)"
timeout 1200 debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" \
    "$SUITE" "$ROOT" "$MIRROR" >"$WORK/stage1.log" 2>&1 ||
    { tail -n 20 "$WORK/stage1.log" >&2; die "debootstrap first stage failed"; }

install_qemu_into "$ROOT"
log "debootstrap second stage under qemu (about 8 minutes)"
QEMU_CPU=cortex-a72 timeout 2400 env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    QEMU_CPU=cortex-a72 chroot "$ROOT" /debootstrap/debootstrap --second-stage \
    >"$WORK/stage2.log" 2>&1 ||
    { tail -n 20 "$WORK/stage2.log" >&2; die "debootstrap second stage failed"; }
root_unmount_all "$ROOT" || die "could not unmount everything under $ROOT"

root_exec "$ROOT" 120 /usr/bin/python3 -c 'import platform, sys; print(platform.machine(), sys.version)' \
    >&2 || die "python3 does not run inside the new root"
rm -rf "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"* || true

log "packing $TARBALL"
tar --numeric-owner --one-file-system -C "$ROOT" -czf "$TARBALL.part" .
mv -f "$TARBALL.part" "$TARBALL"
echo "$TARBALL"
