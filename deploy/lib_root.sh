# shellcheck shell=bash
# Helpers shared by the ARM64 emulation scripts: binfmt set-up and mount-safe handling of a
# foreign root. Sourced, not executed. Everything that mounts inside a root must be undone with
# root_unmount_all before the root is deleted, or the host's /dev and /proc go with it.

log() { printf '[arm64] %s\n' "$*" >&2; }
die() { printf '[arm64] error: %s\n' "$*" >&2; exit 1; }

# The kernel only runs aarch64 ELF files through qemu if binfmt_misc is mounted and the
# qemu-aarch64 entry is enabled; without it every child process fails with "Exec format error".
ensure_binfmt() {
    command -v qemu-aarch64-static >/dev/null ||
        die "qemu-aarch64-static not found; install it: apt-get install qemu-user-static binfmt-support"
    if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
            die "cannot mount binfmt_misc (needs root)"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 ||
            die "cannot enable qemu-aarch64 in binfmt_misc; install binfmt-support"
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        die "binfmt entry qemu-aarch64 is disabled; run: update-binfmts --enable qemu-aarch64"
}

# Debian registers the interpreter without the F flag, so the kernel resolves its path inside
# the chroot: the emulator must exist there at the same path.
install_qemu_into() {
    local root=$1 interp
    interp=$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)
    mkdir -p "$root$(dirname "$interp")" "$root/usr/bin"
    cp -f "$(command -v qemu-aarch64-static)" "$root/usr/bin/qemu-aarch64-static"
    if [ "$interp" != /usr/bin/qemu-aarch64-static ]; then
        ln -sf /usr/bin/qemu-aarch64-static "$root$interp"
    fi
}

# Mount points at or below $1, deepest first.
root_mounts() {
    local root
    root=$(realpath -m "$1")
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r
}

root_unmount_all() {
    local root=$1 m tries
    for tries in 1 2 3; do
        [ -z "$(root_mounts "$root")" ] && return 0
        while read -r m; do
            [ -n "$m" ] || continue
            umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done < <(root_mounts "$root")
        sleep "$tries"
    done
    [ -z "$(root_mounts "$root")" ]
}

# Delete a root only once nothing is mounted below it; --one-file-system is a second guard.
root_remove() {
    local root=$1
    if [ -z "$root" ] || [ "$(realpath -m "$root")" = / ]; then
        die "refusing to remove '$root'"
    fi
    [ -e "$root" ] || return 0
    if ! root_unmount_all "$root"; then
        log "NOT removing $root: still mounted: $(root_mounts "$root" | tr '\n' ' ')"
        return 1
    fi
    rm -rf --one-file-system "$root"
}

# Mount /proc (with an arm64 cpuinfo over /proc/cpuinfo: onnxruntime's cpuinfo parser crashes or
# hangs on the host's x86 one), /dev and /sys into the root.
root_mount_runtime() {
    local root=$1 cpuinfo=$2
    mkdir -p "$root/proc" "$root/dev" "$root/sys" "$root/tmp"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    mount -t sysfs sysfs "$root/sys" 2>/dev/null || mount --rbind /sys "$root/sys"
    mount --bind "$cpuinfo" "$root/proc/cpuinfo"
}

# /proc/cpuinfo of a 4-core Cortex-A72 (the Raspberry Pi 4's core), without the board lines.
write_arm64_cpuinfo() {
    local out=$1 i
    : >"$out"
    for i in 0 1 2 3; do
        cat >>"$out" <<EOF
processor	: $i
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

EOF
    done
}

# Run a command inside the root with a clean environment: the host's PIP_*, SSL_* and
# REQUESTS_CA_BUNDLE variables point at host paths and break pip inside the root.
root_exec() {
    local root=$1 limit=$2
    shift 2
    timeout --kill-after=10 "$limit" env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 QEMU_CPU="${QEMU_CPU:-cortex-a72}" \
        chroot "$root" "$@"
}
