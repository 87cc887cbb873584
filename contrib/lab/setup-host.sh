#!/usr/bin/env bash
# Host set-up for the autoballoon lab (Debian 12 "bookworm", run as root).
#
# Needs only bash, python3 and apt (a minimal Debian 12 has them). Idempotent:
# installs only what is missing (apt-get update only then), adds bookworm-backports
# (for QEMU >= 9.2) derived from the apt entry for plain bookworm, in either source
# format (apt_backports.py), installs the build and lab packages (python3-venv and
# python3-dev included), promtool (from bookworm's prometheus package, the binary only),
# configures libvirtd for root-run QEMU without virtlogd, and
# starts libvirtd. When everything is in place it finishes in about a second.
#
#   setup-host.sh                     everything
#   setup-host.sh --backports-only    only the backports step (no root needed with AB_APT_DIR)
#
# Env: AB_LAB_URI (default qemu:///system), AB_LAB_SKIP_IMAGE=1 to skip the
# guest image build at the end, AB_APT_DIR (default /etc/apt) where apt's
# sources.list and sources.list.d/ are read and the backports entry is written.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
URI="${AB_LAB_URI:-qemu:///system}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
APT_LOG="$(mktemp -t ab-lab-apt.XXXXXX)"
trap 'rm -f "$APT_LOG"' EXIT

say() { printf 'lab-setup: %s\n' "$*"; }
die() { printf 'lab-setup: ERROR: %s\n' "$*" >&2; exit 1; }

BACKPORTS_ONLY=0
[ "${1:-}" = "--backports-only" ] && BACKPORTS_ONLY=1
APT_DIR="${AB_APT_DIR:-/etc/apt}"

if [ "$BACKPORTS_ONLY" -eq 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    [ -r /etc/os-release ] && . /etc/os-release
    if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
        die "this script targets Debian 12 (bookworm); see contrib/lab/README.md for other distributions"
    fi
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

# --- 1. bookworm-backports sources entry, derived from the plain bookworm one -----
# apt_backports.py reads both source formats (one-line sources.list / *.list and deb822
# *.sources), copies the entry for plain 'bookworm' with only the suite changed, and says
# what it did. Exit 0: already there, 3: added.
set +e
python3 "$HERE/apt_backports.py" "$APT_DIR" 2>&1 | sed 's/^/lab-setup: /'
bpo_rc=${PIPESTATUS[0]}
set -e
case "$bpo_rc" in
    0) ;;
    3) APT_UPDATED=0; NEED_UPDATE=1 ;;
    *) die "could not add bookworm-backports (see above)" ;;
esac
[ "$BACKPORTS_ONLY" -eq 0 ] || exit 0

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
# python3-venv: `make venv`; python3-dev, gcc, pkg-config, libvirt-dev: libvirt-python
# compiles against Python.h and libvirt's headers; busybox-static, cpio, libc6-dev (static
# libc), xz-utils, gzip: the guest image; groff-base: the test that renders the man page
# `make deb` builds (a minimal Debian has no groff, and the test would skip).
PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
      python3-venv python3-dev busybox-static cpio gcc libc6-dev xz-utils gzip groff-base)
MISSING=()
for p in "${PKGS[@]}"; do is_installed "$p" || MISSING+=("$p"); done
if [ "${#MISSING[@]}" -gt 0 ]; then
    apt_update_once
    say "installing ${MISSING[*]}"
    apt_quiet "${APT_INSTALL[@]}" "${MISSING[@]}"
fi
if [ "$APT_UPDATED" -eq 0 ] && [ -n "${NEED_UPDATE:-}" ]; then apt_update_once; fi
say "packages ok ($(qemu-system-x86_64 --version | head -1 | sed 's/ (.*//'), libvirt $(libvirtd --version | awk '{print $NF}'))"

# --- 3b. promtool: checks the shipped alerting rules (contrib/prometheus/) --------
# Only this one binary, from bookworm's prometheus package, into the lab cache: installing the
# package would also start a Prometheus server (it ships a unit and an init script) and pull
# about 100 MB with its web assets, none of which the tests need.
PROMTOOL="$HERE/cache/bin/promtool"
if ! command -v promtool >/dev/null && [ ! -x "$PROMTOOL" ]; then
    apt-cache show prometheus >/dev/null 2>&1 || apt_update_once
    PROM_TMP="$(mktemp -d -t ab-promtool.XXXXXX)"
    (cd "$PROM_TMP" && apt_quiet apt-get download -q prometheus)
    mkdir -p "${PROMTOOL%/*}"
    dpkg-deb --fsys-tarfile "$PROM_TMP"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$PROMTOOL.new"
    chmod 755 "$PROMTOOL.new" && mv "$PROMTOOL.new" "$PROMTOOL"
    rm -rf "$PROM_TMP"
    say "installed $("$PROMTOOL" --version 2>&1 | head -1 | cut -d' ' -f1-3) in $PROMTOOL"
fi

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
