#!/usr/bin/env bash
# Install autoballoon on a hypervisor from this checkout, where the systemd unit expects it:
#
#   make install      (this script: install)       make uninstall   (this script: uninstall)
#
#   /opt/autoballoon/                  a venv holding autoballoon and its Python dependencies
#                                      (Debian 12 refuses `pip install` into the system Python,
#                                      PEP 668; a venv of its own also keeps it off the system's)
#   /usr/local/bin/autoballoon         a link into the venv (the unit's ExecStart)
#   /etc/autoballoon/autoballoon.toml  daemon config, and policies/ (default.toml, presets/,
#                                      examples/): each file only where none exists yet, so a
#                                      re-install never overwrites what the operator edited
#   /etc/systemd/system/autoballoon.service, /usr/share/doc/autoballoon/README.md
#
# Idempotent: run again after `git pull` to upgrade. Installs missing packages with apt
# (libvirt-python compiles against libvirt's headers; the unit's ExecReload needs /bin/kill).
# Does not enable or start the service.
# uninstall stops the service, gives every guest it may resize its memory back (`autoballoon
# release --all`, when libvirt is reachable; RELEASE=0 skips it), then removes all of the above
# but /etc/autoballoon (PURGE=1 removes that too).
#
# Env: AB_VENV (/opt/autoballoon), AB_BIN (/usr/local/bin), AB_CONF (/etc/autoballoon),
# AB_UNIT_DIR (/etc/systemd/system), AB_DOC (/usr/share/doc/autoballoon), EXTRAS (for example
# "plot" for `replay --plot`).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AB_VENV:-/opt/autoballoon}"
BIN="${AB_BIN:-/usr/local/bin}"
CONF="${AB_CONF:-/etc/autoballoon}"
UNIT_DIR="${AB_UNIT_DIR:-/etc/systemd/system}"
DOC="${AB_DOC:-/usr/share/doc/autoballoon}"
UNIT="$UNIT_DIR/autoballoon.service"
LINK="$BIN/autoballoon"

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }

systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# Copy SRC_FILE to DEST only where DEST does not exist yet.
install_if_absent() { # mode src dest
    if [ -e "$3" ]; then
        say "kept $3 (exists)"
    else
        install -D -m "$1" "$2" "$3"
        say "installed $3"
    fi
}

packages() {
    # Build: libvirt-python compiles against Python.h and libvirt's headers. Run: procps has
    # /bin/kill, the unit's ExecReload (a minimal Debian lacks it).
    local pkgs=(python3-venv python3-dev gcc pkg-config libvirt-dev procps) missing=()
    if ! command -v dpkg-query >/dev/null; then
        say "not a Debian system: make sure python3 (>= 3.11) with venv, gcc, pkg-config and"
        say "libvirt's development headers are installed (Fedora: python3-devel gcc pkgconf"
        say "libvirt-devel), and /bin/kill (the unit's ExecReload)"
        return
    fi
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "apt-get install ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

do_install() {
    [ "$(id -u)" -eq 0 ] || die "run as root"
    packages
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
        say "created venv $VENV"
    fi
    local spec="$SRC"
    [ -z "${EXTRAS:-}" ] || spec="$SRC[$EXTRAS]"
    say "pip install $spec into $VENV (libvirt-python compiles: about a minute the first time)"
    # --force-reinstall --no-deps: the same version number from a newer checkout still replaces
    # the installed code; the first pip call installs and upgrades the dependencies.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$spec"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$SRC"
    rm -rf "$SRC/build"

    if [ -e "$LINK" ] && [ "$(readlink -f "$LINK")" != "$(readlink -f "$VENV/bin/autoballoon")" ]; then
        die "$LINK exists and is not a link into $VENV: move it away first"
    fi
    mkdir -p "$BIN"
    ln -sfn "$VENV/bin/autoballoon" "$LINK"
    say "linked $LINK -> $VENV/bin/autoballoon"

    install -d -m 0755 "$CONF" "$CONF/policies"
    install_if_absent 0644 "$SRC/contrib/autoballoon.toml" "$CONF/autoballoon.toml"
    local f
    while IFS= read -r f; do
        install_if_absent 0644 "$SRC/policies/$f" "$CONF/policies/$f"
    done < <(cd "$SRC/policies" && find . -name '*.toml' -type f | sed 's|^\./||' | sort)

    install -D -m 0644 "$SRC/README.md" "$DOC/README.md"
    install -D -m 0644 "$SRC/contrib/systemd/autoballoon.service" "$UNIT"
    say "installed $UNIT"
    if systemd_running; then
        systemctl daemon-reload
        say "systemctl daemon-reload done; the service is not enabled: see README, 'Quick start on a real host'"
    fi
    say "done: $("$LINK" --version 2>/dev/null || echo autoballoon) in $VENV"
}

# Give the guests their memory back while the code to do it is still installed: the daemon
# leaves balloons as they are when it stops (on_stop = "leave", the default).
release_guests() {
    local ab="$VENV/bin/autoballoon" out rc=0 args=(release --all)
    if [ "${RELEASE:-1}" != 1 ]; then
        say "RELEASE=0: guests' balloons left as they are"
        return
    fi
    [ -x "$ab" ] || return 0
    [ -f "$CONF/autoballoon.toml" ] && args+=(--config "$CONF/autoballoon.toml")
    out="$("$ab" "${args[@]}" 2>&1)" || rc=$?
    while IFS= read -r line; do [ -z "$line" ] || say "release: $line"; done <<<"$out"
    case "$rc" in
        0) say "guests given their memory back (autoballoon release --all)" ;;
        4|75) say "libvirt not reachable: guests' balloons left as they are (resize them with" \
                  "virsh setmem, up to each domain's maximum)" ;;
        *) say "autoballoon release --all exited $rc: some guests may still be ballooned" ;;
    esac
}

do_uninstall() {
    [ "$(id -u)" -eq 0 ] || die "run as root"
    if systemd_running && [ -e "$UNIT" ]; then
        systemctl disable --now autoballoon.service 2>/dev/null || true
    fi
    release_guests
    rm -f "$UNIT"
    systemd_running && systemctl daemon-reload || true
    if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$VENV/bin/autoballoon" ]; then
        rm -f "$LINK"
    fi
    rm -rf "$VENV" "$DOC"
    if [ "${PURGE:-0}" = 1 ]; then
        rm -rf "$CONF"
        say "removed $VENV, $LINK, $UNIT, $DOC and $CONF"
    else
        say "removed $VENV, $LINK, $UNIT and $DOC; kept $CONF (PURGE=1 removes it)"
    fi
}

case "${1:-}" in
    install) do_install ;;
    uninstall) do_uninstall ;;
    *) die "usage: $0 install|uninstall" ;;
esac
