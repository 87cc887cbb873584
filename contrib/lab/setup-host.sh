#!/usr/bin/env bash
# Host set-up for the autoballoon lab (Debian 12 "bookworm", run as root).
#
# Idempotent: installs only what is missing (apt-get update only then), adds
# bookworm-backports derived from the existing debian.sources (QEMU >= 9.2),
# configures libvirtd for root-run QEMU without virtlogd, and starts libvirtd.
# When everything is in place it finishes in about a second.
#
# Env: AB_LAB_URI (default qemu:///system), AB_LAB_SKIP_IMAGE=1 to skip the
# guest image build at the end.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
URI="${AB_LAB_URI:-qemu:///system}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APT_LOG="$(mktemp -t ab-lab-apt.XXXXXX)"
trap 'rm -f "$APT_LOG"' EXIT

say() { printf 'lab-setup: %s\n' "$*"; }
die() { printf 'lab-setup: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -r /etc/os-release ] && . /etc/os-release
if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
    die "this script targets Debian 12 (bookworm); see contrib/lab/README.md for other distributions"
fi

# Run an apt command quietly; on failure show its output.
apt_quiet() {
    if ! "$@" >"$APT_LOG" 2>&1; then
        cat "$APT_LOG" >&2
        die "failed: $*"
    fi
}

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        apt_quiet apt-get update -q
        APT_UPDATED=1
    fi
}

APT_INSTALL=(apt-get install -y -q --no-install-recommends
             -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef)

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# --- 1. bookworm-backports sources entry, derived from debian.sources ---------
SRC=/etc/apt/sources.list.d/debian.sources
BPO=/etc/apt/sources.list.d/ab-lab-bookworm-backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    [ -r "$SRC" ] || die "$SRC not found; add bookworm-backports to apt by hand"
    # Take the stanza that carries the plain 'bookworm' suite and keep its
    # URIs/Components/Signed-By; only the suite changes.
    awk '
        BEGIN { RS=""; FS="\n" }
        {
            hit = 0
            for (i = 1; i <= NF; i++) if ($i ~ /^Suites:/) {
                n = split($i, w, /[ \t]+/)
                for (j = 2; j <= n; j++) if (w[j] == "bookworm") hit = 1
            }
            if (!hit) next
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^#/) continue
                if ($i ~ /^Suites:/) print "Suites: bookworm-backports"
                else print $i
            }
            exit
        }' "$SRC" >"$BPO.tmp"
    grep -q '^URIs:' "$BPO.tmp" || { rm -f "$BPO.tmp"; die "could not derive a backports entry from $SRC"; }
    mv "$BPO.tmp" "$BPO"
    say "added bookworm-backports (derived from $SRC)"
    APT_UPDATED=0
    NEED_UPDATE=1
fi

# --- 2. QEMU >= 9.2 from bookworm-backports ------------------------------------
qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
    local v
    v="$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
    [ -n "$v" ] || return 1
    set -- $v
    [ "$1" -gt 9 ] || { [ "$1" -eq 9 ] && [ "$2" -ge 2 ]; }
}
if ! qemu_ok; then
    apt_update_once
    say "installing qemu-system-x86 from bookworm-backports"
    apt_quiet "${APT_INSTALL[@]}" -t bookworm-backports qemu-system-x86
    qemu_ok || die "QEMU >= 9.2 still not available after install"
fi

# --- 3. bookworm packages --------------------------------------------------------
PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
      busybox-static cpio gcc libc6-dev xz-utils gzip)
MISSING=()
for p in "${PKGS[@]}"; do is_installed "$p" || MISSING+=("$p"); done
if [ "${#MISSING[@]}" -gt 0 ]; then
    apt_update_once
    say "installing ${MISSING[*]}"
    apt_quiet "${APT_INSTALL[@]}" "${MISSING[@]}"
fi
if [ "$APT_UPDATED" -eq 0 ] && [ -n "${NEED_UPDATE:-}" ]; then apt_update_once; fi
say "packages ok ($(qemu-system-x86_64 --version | head -1 | sed 's/ (.*//'), libvirt $(libvirtd --version | awk '{print $NF}'))"

# --- 4. libvirt daemon configuration ---------------------------------------------
if ! getent passwd libvirt-qemu >/dev/null; then
    useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
        --user-group libvirt-qemu
    say "created system user libvirt-qemu"
fi
mkdir -p /var/log/libvirt /var/log/libvirt/qemu /etc/libvirt

CONF=/etc/libvirt/qemu.conf
CONF_CHANGED=0
want_line() { # key value
    local key="$1" line="$1 = $2"
    if ! grep -qxF "$line" "$CONF" 2>/dev/null; then
        touch "$CONF"
        sed -i "/^[[:space:]]*${key}[[:space:]]*=/d" "$CONF"
        printf '%s\n' "$line" >>"$CONF"
        CONF_CHANGED=1
    fi
}
want_line user '"root"'
want_line group '"root"'
want_line stdio_handler '"file"'
[ "$CONF_CHANGED" -eq 1 ] && say "configured $CONF (user/group root, stdio_handler file)"

# --- 5. libvirtd -------------------------------------------------------------------
libvirtd_pid() {
    local pid
    pid="$(cat /run/libvirtd.pid 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q libvirtd "/proc/$pid/comm" 2>/dev/null; then
        echo "$pid"
    fi
}
if [ -n "$(libvirtd_pid)" ] && [ "$CONF_CHANGED" -eq 1 ]; then
    say "qemu.conf changed: restarting libvirtd"
    bash "$HERE/stop-host.sh" --keep-guests
fi
if [ -z "$(libvirtd_pid)" ]; then
    say "starting libvirtd"
    rm -f /run/libvirt/libvirt-sock
    libvirtd -d
    for _ in $(seq 1 150); do
        [ -S /run/libvirt/libvirt-sock ] && break
        sleep 0.2
    done
    [ -S /run/libvirt/libvirt-sock ] || die "libvirtd did not create /run/libvirt/libvirt-sock (see /var/log/libvirt/)"
fi
# The first connection probes QEMU's capabilities (about 8 s under TCG).
if ! out="$(timeout 60 virsh -q -c "$URI" version 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "cannot connect to $URI"
fi
say "libvirtd ok ($URI, pid $(libvirtd_pid))"

# --- 6. guest image (cached; rebuilt only when its inputs change) ------------------
if [ "${AB_LAB_SKIP_IMAGE:-0}" != "1" ] && [ -f "$HERE/build-image.sh" ]; then
    bash "$HERE/build-image.sh" >/dev/null
fi
