#!/usr/bin/env bash
# Build (or reuse) the lab guest image under contrib/lab/cache/:
#   vmlinuz      Debian's 6.12 cloud kernel (downloaded, unpacked, not installed)
#   initrd.img   busybox-static, /init (init.sh), /bin/memload (memload.c, static),
#                virtio_balloon.ko, loop.ko and zram.ko with its dependencies
#                (zsmalloc, lz4_compress, lz4hc_compress), decompressed
# Rebuilt only when an input changes (init.sh, memload.c, this script, modules.sh,
# kernel package version). Needs: apt (for the kernel), busybox-static, cpio, gcc,
# libc6-dev, xz-utils (setup-host.sh installs them). Prints the image dir.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${AB_LAB_CACHE:-$HERE/cache}"
KDIR="$CACHE/kernel"
say() { printf 'lab-image: %s\n' "$*" >&2; }
die() { printf 'lab-image: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=contrib/lab/modules.sh
. "$HERE/modules.sh"
mkdir -p "$KDIR"

# Other distributions: AB_LAB_KERNEL_ROOT=/ (or an unpacked kernel package) with
# lib/modules/<release>/ and boot/vmlinuz-<release> or lib/modules/<release>/vmlinuz;
# AB_LAB_KERNEL_RELEASE picks the release (default: the newest there). Needs >= 6.12.
KROOT_OVERRIDE="${AB_LAB_KERNEL_ROOT:-}"

# --- kernel package: linux-image-6.12-cloud-amd64 depends on the concrete one ---
META=linux-image-6.12-cloud-amd64
kpkg_name() {
    apt-cache depends "$META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.12\.[^ ]*-cloud-amd64\)$/\1/p' | grep -v unsigned | head -1
}
if [ -n "$KROOT_OVERRIDE" ]; then
    KREL="${AB_LAB_KERNEL_RELEASE:-$(ls "$KROOT_OVERRIDE/lib/modules" | sort -V | tail -1)}"
    KPKG="local-$KREL"
    KVER_PKG="$(stat -c %Y "$KROOT_OVERRIDE/lib/modules/$KREL")"
else
KPKG="$(kpkg_name || true)"
fi
if [ -z "$KPKG" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        say "apt-get update (kernel package $META unknown)"
        apt-get update -q >/dev/null 2>&1 || true
        KPKG="$(kpkg_name || true)"
    fi
fi
if [ -z "$KPKG" ]; then
    # Offline: reuse whatever kernel is already cached.
    KPKG="$(cat "$KDIR/package" 2>/dev/null || true)"
    [ -n "$KPKG" ] || die "cannot find the $META package (apt lists missing? run setup-host.sh)"
    say "apt does not know $META; using cached $KPKG"
fi
[ -n "$KROOT_OVERRIDE" ] || KVER_PKG="$(apt-cache policy "$KPKG" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
[ -n "${KVER_PKG:-}" ] && [ "$KVER_PKG" != "(none)" ] || KVER_PKG="$(cat "$KDIR/version" 2>/dev/null || echo unknown)"

KEY="$( { sha256sum "$HERE/init.sh" "$HERE/memload.c" "$HERE/build-image.sh" "$HERE/modules.sh" | awk '{print $1}'; echo "$KPKG $KVER_PKG"; } | sha256sum | cut -c1-16)"
if [ -f "$CACHE/image.key" ] && [ "$(cat "$CACHE/image.key")" = "$KEY" ] \
   && [ -s "$CACHE/vmlinuz" ] && [ -s "$CACHE/initrd.img" ]; then
    say "image up to date ($KPKG, key $KEY)"
    echo "$CACHE"
    exit 0
fi

# --- fetch and unpack the kernel (only when its package changed) ---
if [ -n "$KROOT_OVERRIDE" ]; then
    KSRC="$KROOT_OVERRIDE"
elif [ "$(cat "$KDIR/package" 2>/dev/null || true) $(cat "$KDIR/version" 2>/dev/null || true)" != "$KPKG $KVER_PKG" ] \
   || [ ! -d "$KDIR/root/boot" ]; then
    say "downloading $KPKG $KVER_PKG"
    rm -rf "$KDIR" && mkdir -p "$KDIR/root"
    (cd "$KDIR" && apt-get download -q "$KPKG" >/dev/null 2>"$KDIR/download.err") \
        || { cat "$KDIR/download.err" >&2; die "apt-get download $KPKG failed"; }
    dpkg-deb -x "$KDIR"/*.deb "$KDIR/root"
    rm -f "$KDIR"/*.deb
    echo "$KPKG" >"$KDIR/package"
    echo "$KVER_PKG" >"$KDIR/version"
fi
if [ -z "$KROOT_OVERRIDE" ]; then
    KSRC="$KDIR/root"
    KREL="$(ls "$KDIR/root/lib/modules" | head -1)"
fi
[ -n "$KREL" ] || die "no modules in $KPKG"

say "building initramfs for $KREL"
WORK="$(mktemp -d -t ab-lab-initrd.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
R="$WORK/root"
mkdir -p "$R/bin" "$R/lib/modules" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$R/bin/busybox" || die "/bin/busybox is not static: install busybox-static"
install -m 0755 "$HERE/init.sh" "$R/init"
gcc -static -O2 -Wall -Wextra -o "$R/bin/memload" "$HERE/memload.c"
strip "$R/bin/memload" 2>/dev/null || true
unpack_modules "$KSRC" "$KREL" "$R" virtio_balloon loop zsmalloc lz4_compress lz4hc_compress zram
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initrd.img.tmp"
mv "$CACHE/initrd.img.tmp" "$CACHE/initrd.img"
if [ -f "$KSRC/boot/vmlinuz-$KREL" ]; then
    cp "$KSRC/boot/vmlinuz-$KREL" "$CACHE/vmlinuz.tmp"
else
    cp "$KSRC/lib/modules/$KREL/vmlinuz" "$CACHE/vmlinuz.tmp"
fi
mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
echo "$KREL" >"$CACHE/kernel-release"
echo "$KEY" >"$CACHE/image.key"
say "image ready: $KREL, initrd $(du -k "$CACHE/initrd.img" | cut -f1) KiB (key $KEY)"
echo "$CACHE"
