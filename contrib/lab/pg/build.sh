#!/usr/bin/env bash
# Build (or reuse) the PostgreSQL lab guest under contrib/lab/cache/pg/:
#   rootfs.raw   ext4 image (4 GiB, sparse) of a Debian 12 minbase root with PostgreSQL 15,
#                the main cluster configured for the lab and initialised with
#                `pgbench -i -s 20` (about 300 MB of tables, larger than shared_buffers)
#   initrd.img   busybox-static, /init (stage1.sh), virtio_blk.ko and virtio_balloon.ko
# The kernel is the busybox guests' (build-image.sh builds it first: cache/vmlinuz).
# Two cached steps, each keyed by its inputs:
#   base/        debootstrap --variant=minbase --include=$PACKAGES bookworm, trimmed
#                (about 60 s; redone only when this script's package list changes)
#   rootfs.raw   a copy of base/ configured, with the database initialised in a chroot
#                on the host (wal_level=minimal there: the tables are written without WAL),
#                written with `mkfs.ext4 -d` (no loop mount)
# Needs root, debootstrap and e2fsprogs (installed here with apt-get if missing), and the
# host's apt sources (the mirror is read from them). Prints the image dir.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAB="$(dirname "$HERE")"
CACHE="${AB_LAB_CACHE:-$LAB/cache}"
OUT="$CACHE/pg"
SUITE=bookworm
PACKAGES=postgresql,postgresql-contrib,util-linux
IMAGE_SIZE=4G
SCALE=20
say() { printf 'lab-pg-image: %s\n' "$*" >&2; }
die() { printf 'lab-pg-image: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=contrib/lab/modules.sh
. "$LAB/modules.sh"
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
mkdir -p "$OUT"

# The kernel (and the busybox guests' image) first.
bash "$LAB/build-image.sh" >/dev/null
KREL="$(cat "$CACHE/kernel-release")"
KSRC="${AB_LAB_KERNEL_ROOT:-$CACHE/kernel/root}"

BASE_KEY="$( { echo "$SUITE $PACKAGES"; sed -n '/^# --- base: begin/,/^# --- base: end/p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)"
KEY="$( { echo "$BASE_KEY $KREL $SCALE $IMAGE_SIZE"; cat "${BASH_SOURCE[0]}" "$HERE/stage1.sh" "$HERE/init.sh" "$HERE/pgreport.awk" "$LAB/modules.sh"; } | sha256sum | cut -c1-16)"
if [ -f "$OUT/image.key" ] && [ "$(cat "$OUT/image.key")" = "$KEY" ] \
   && [ -s "$OUT/rootfs.raw" ] && [ -s "$OUT/initrd.img" ]; then
    say "image up to date (key $KEY)"
    echo "$OUT"
    exit 0
fi

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
MISSING=()
for p in debootstrap e2fsprogs busybox-static cpio; do is_installed "$p" || MISSING+=("$p"); done
if [ "${#MISSING[@]}" -gt 0 ]; then
    say "installing ${MISSING[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${MISSING[@]}" >/dev/null
fi

# The mirror: the host's own apt source for the plain suite (deb822 or one-line format).
mirror_uri() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" '
            BEGIN { RS=""; FS="\n" }
            {
                uri = ""; hit = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
                    if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == suite) hit = 1 }
                }
                if (hit && uri != "") { print uri; exit }
            }' "$f"
    done
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v suite="$SUITE" '$1 == "deb" { u = ($2 ~ /^\[/) ? $3 : $2; s = ($2 ~ /^\[/) ? $4 : $3; if (s == suite) print u }'
}
MIRROR="$(mirror_uri | head -1 || true)"
[ -n "$MIRROR" ] || die "no apt source for $SUITE in /etc/apt/sources.list{,.d}"

WORK="$(mktemp -d "$OUT/work.XXXXXX")"
PGUID=""
PGGID=""
cleanup() {
    # A chroot'ed postgres left running by a failed step would keep files open.
    if [ -n "$PGUID" ] && [ -f "$WORK/root/var/lib/postgresql/15/main/postmaster.pid" ]; then
        chroot --userspec="$PGUID:$PGGID" "$WORK/root" /usr/lib/postgresql/15/bin/pg_ctl \
            -D /var/lib/postgresql/15/main -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- base: begin (the part of this script that BASE_KEY covers)
if [ "$(cat "$OUT/base.key" 2>/dev/null || true)" != "$BASE_KEY" ] || [ ! -x "$OUT/base/usr/lib/postgresql/15/bin/postgres" ]; then
    say "debootstrap $SUITE minbase + $PACKAGES"
    rm -rf "$OUT/base" "$OUT/base.key"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/base" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    B="$WORK/base"
    # Trim: cached packages, apt lists, documentation, locales, and LLVM (only PostgreSQL's
    # JIT loads it; the cluster runs with jit=off).
    rm -rf "$B"/var/cache/apt/archives/*.deb "$B"/var/lib/apt/lists/* \
        "$B"/usr/share/doc/* "$B"/usr/share/man/* "$B"/usr/share/info/* \
        "$B"/usr/lib/postgresql/15/lib/bitcode "$B"/usr/lib/postgresql/15/lib/llvmjit*.so
    find "$B/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
    rm -f "$B"/usr/lib/x86_64-linux-gnu/libLLVM*
    mv "$B" "$OUT/base"
    echo "$BASE_KEY" >"$OUT/base.key"
fi
# --- base: end

say "configuring the root file system"
R="$WORK/root"
cp -a "$OUT/base" "$R"
PGUID="$(awk -F: '$1 == "postgres" { print $3 }' "$R/etc/passwd")"
PGGID="$(awk -F: '$1 == "postgres" { print $4 }' "$R/etc/passwd")"
[ -n "$PGUID" ] || die "no postgres user in the root file system"
CONF="$R/etc/postgresql/15/main/postgresql.conf"
[ -f "$CONF" ] || die "no main cluster in the root file system ($CONF)"
cat >>"$CONF" <<'CONFEOF'

# autoballoon lab guest: no network device (Unix socket only), no JIT (LLVM removed),
# POSIX shared memory (/dev/shm is a tmpfs in the guest), no SSL certificates.
listen_addresses = ''
jit = off
dynamic_shared_memory_type = posix
ssl = off
CONFEOF
install -m 0755 "$HERE/init.sh" "$R/sbin/ab-pg-init"
install -m 0644 "$HERE/pgreport.awk" "$R/sbin/ab-pgreport.awk"
echo pg-guest >"$R/etc/hostname"

say "initialising the database (pgbench -i -s $SCALE) in a chroot"
mkdir -p "$R/run/postgresql" "$R/dev/shm"
chown "$PGUID:$PGGID" "$R/run/postgresql"
chmod 1777 "$R/dev/shm"
in_root() { chroot --userspec="$PGUID:$PGGID" "$R" env LC_ALL=C.UTF-8 "$@"; }
in_root /usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/15/main -w -t 60 -l /tmp/pg-build.log \
    -o "-c config_file=/etc/postgresql/15/main/postgresql.conf -c wal_level=minimal -c max_wal_senders=0" start >/dev/null \
    || { cat "$R/tmp/pg-build.log" >&2; die "PostgreSQL did not start in the chroot"; }
in_root /usr/lib/postgresql/15/bin/pgbench -h /run/postgresql -i -q -s "$SCALE" postgres \
    >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
in_root /usr/lib/postgresql/15/bin/psql -h /run/postgresql -q -c CHECKPOINT postgres >/dev/null
in_root /usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/15/main -w -m fast stop >/dev/null
rm -rf "$R"/run/postgresql/* "$R"/dev/shm/* "$R"/tmp/*
DB_MB="$(du -sm "$R/var/lib/postgresql/15/main/base" | cut -f1)"
WAL_MB="$(du -sm "$R/var/lib/postgresql/15/main/pg_wal" | cut -f1)"

say "writing rootfs.raw ($IMAGE_SIZE, ext4 -d)"
mkfs.ext4 -q -F -L abpg -d "$R" "$WORK/rootfs.raw" "$IMAGE_SIZE" >&2

say "building the initramfs"
I="$WORK/initrd"
mkdir -p "$I/bin" "$I/lib/modules"
cp /bin/busybox "$I/bin/busybox"
install -m 0755 "$HERE/stage1.sh" "$I/init"
unpack_modules "$KSRC" "$KREL" "$I" virtio_blk virtio_balloon
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.img"

mv "$WORK/rootfs.raw" "$OUT/rootfs.raw"
mv "$WORK/initrd.img" "$OUT/initrd.img"
echo "$KEY" >"$OUT/image.key"
say "image ready: database $DB_MB MB, WAL $WAL_MB MB, rootfs.raw $(du -m "$OUT/rootfs.raw" | cut -f1) MB used (key $KEY)"
echo "$OUT"
