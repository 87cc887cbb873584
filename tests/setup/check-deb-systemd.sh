#!/usr/bin/env bash
# The Debian package's maintainer scripts under real systemd: a fresh-debian root booted with
# systemd-nspawn (PID 1 of the build host need not be systemd). As
# root on the build host, never on a root you care about:
#
#   tests/setup/check-deb-systemd.sh ROOT dist/autoballoon_X_amd64.deb
#
# ROOT is a root made by fresh-debian (it installs systemd-sysv and dbus in it, and unmounts
# what fresh-debian left mounted). Needs systemd-nspawn (systemd-container) and nsenter.
# Checks: install leaves the service disabled and stopped, the unit passes systemd-analyze
# verify, it starts and runs on libvirt's built-in test driver (test:///default: no libvirtd
# needed; its one guest "test" shows in the metrics under the label domain), a reinstall
# restarts the running daemon and keeps an edited conffile, removal stops and disables it (and
# runs `autoballoon release --all` when the version has it), purge leaves nothing.
set -euo pipefail
ROOT="$(readlink -f "${1:?usage: check-deb-systemd.sh ROOT DEB}")"
DEB="$(readlink -f "${2:?usage: check-deb-systemd.sh ROOT DEB}")"
say() { printf 'check-deb-systemd: %s\n' "$*"; }
die() { printf 'check-deb-systemd: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn not found (apt-get install systemd-container)"
[ -x "$ROOT/usr/bin/python3" ] || die "$ROOT is not a fresh-debian root"

for m in dev/shm run dev/pts dev sys proc; do
    mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"
done
mountpoint -q "$ROOT" && umount -l "$ROOT"
export DEBIAN_FRONTEND=noninteractive
if ! chroot "$ROOT" dpkg-query -W systemd-sysv dbus >/dev/null 2>&1; then
    say "installing systemd-sysv and dbus in $ROOT"
    chroot "$ROOT" apt-get install -y -q --no-install-recommends systemd-sysv dbus \
        >"$ROOT/var/tmp/check-deb-systemd.log" 2>&1 \
        || { cat "$ROOT/var/tmp/check-deb-systemd.log" >&2; die "installing systemd-sysv dbus"; }
fi
if chroot "$ROOT" dpkg-query -W autoballoon >/dev/null 2>&1; then
    chroot "$ROOT" dpkg --purge autoballoon >/dev/null  # left by a run that failed half-way
fi
cp "$DEB" "$ROOT/var/tmp/check.deb"

systemd-nspawn -D "$ROOT" -M ab-check-deb --register=no --keep-unit --boot --console=pipe \
    >/dev/null 2>&1 &
NSPAWN=$!
stop() {
    kill -TERM "$NSPAWN" 2>/dev/null || return 0
    for _ in $(seq 1 20); do kill -0 "$NSPAWN" 2>/dev/null || return 0; sleep 0.5; done
    kill -TERM "$NSPAWN" 2>/dev/null || true  # the first asks the container to halt; this ends it
    wait "$NSPAWN" 2>/dev/null || true
}
trap stop EXIT
INIT=
for _ in $(seq 1 60); do
    INIT="$(ps -o pid= --ppid "$NSPAWN" | tr -d ' ' | head -1 || true)"
    [ -n "$INIT" ] && [ "$(nsenter -t "$INIT" -a systemctl is-system-running 2>/dev/null)" = running ] && break
    sleep 1
done
inside() { nsenter -t "$INIT" -a env DEBIAN_FRONTEND=noninteractive "$@"; }
say "container up: systemd $(inside systemctl --version | awk 'NR==1 {print $2}'), $(inside systemctl is-system-running)"

inside apt-get install -y -q --no-install-recommends /var/tmp/check.deb >/dev/null 2>&1 || die "apt install"
[ "$(inside systemctl is-enabled autoballoon || true)" = disabled ] || die "installed enabled"
[ "$(inside systemctl is-active autoballoon || true)" = inactive ] || die "installed started"
inside systemd-analyze verify /lib/systemd/system/autoballoon.service || die "systemd-analyze verify"
say "installed: disabled, inactive, unit verified"

inside sed -i -e 's|^uri = .*|uri = "test:///default"|' -e 's/^metrics_port = 0 /metrics_port = 9745/' \
    /etc/autoballoon/autoballoon.toml
inside systemctl start autoballoon || true
sleep 8
if [ "$(inside systemctl is-active autoballoon || true)" != active ]; then
    inside journalctl -u autoballoon --no-pager -n 20 -o cat >&2 || true
    die "not active after start"
fi
metrics="$(inside /opt/autoballoon/venv/bin/python -c \
    'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9745/metrics").read().decode())')"
grep -qx 'autoballoon_up 1.0' <<<"$metrics" || die "no autoballoon_up 1"
grep -qx 'autoballoon_libvirt_connected 1.0' <<<"$metrics" || die "libvirt_connected is not 1"
grep -q '^autoballoon_guest_info{domain="test",uuid="' <<<"$metrics" || die "no guest_info for test"
inside autoballoon status | head -2
say "started: active; metrics: up 1, libvirt_connected 1, guest_info{domain=\"test\"}"

before="$(inside systemctl show -p MainPID --value autoballoon)"
inside apt-get install -y -q --reinstall /var/tmp/check.deb >/dev/null 2>&1 || die "reinstall"
sleep 2
after="$(inside systemctl show -p MainPID --value autoballoon)"
[ "$after" != "$before" ] && [ "$after" != 0 ] || die "reinstall did not restart the daemon ($before -> $after)"
inside grep -q '^uri = "test:///default"' /etc/autoballoon/autoballoon.toml || die "edited conffile lost"
say "reinstalled: restarted (pid $before -> $after), edited autoballoon.toml kept"

inside systemctl enable autoballoon >/dev/null 2>&1
has_release=0
inside autoballoon release --help >/dev/null 2>&1 && has_release=1
removal="$(inside apt-get remove -y -q autoballoon 2>&1)" || { echo "$removal" >&2; die "apt remove"; }
if [ "$has_release" = 1 ]; then
    grep -q 'guests given their memory back' <<<"$removal" \
        || { echo "$removal" >&2; die "removal did not release the guests"; }
    say "removal ran autoballoon release --all: $(grep -m1 '^autoballoon release:' <<<"$removal" || echo 'no output')"
else
    say "this version has no release command: removal skips it"
fi
[ "$(inside systemctl is-active autoballoon || true)" = inactive ] || die "still running after remove"
! inside test -e /etc/systemd/system/multi-user.target.wants/autoballoon.service || die "still enabled"
inside apt-get purge -y -q autoballoon >/dev/null 2>&1 || die "apt purge"
! inside test -e /etc/autoballoon || die "/etc/autoballoon left after purge"
! inside test -e /opt/autoballoon || die "/opt/autoballoon left after purge"
say "removed: stopped and disabled; purged: nothing left"
say "ok"
