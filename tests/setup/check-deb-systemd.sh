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
# needed; its one guest "test" shows in the metrics under the label domain): `systemctl start`
# returns 0 once READY=1, active/running with the daemon's STATUS= line, `autoballoon status`
# says running (rc 0); a reinstall restarts the running daemon and keeps an edited conffile;
# after `systemctl stop`, status says stopped (rc 1) and `release --all` gives the guest back;
# uri "test://" fails the start with exit 4, no restart and one error entry at priority 3
# (journald's PRIORITY from the daemon's <N> prefixes, checked on every entry of two runs);
# uri "bogus:///x" without libvirtd is exit 75, restarted until the start limit; removal stops
# and disables it (and runs `autoballoon release --all` when the version has it), purge leaves
# nothing.
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
show() { inside systemctl show -p "$1" --value autoballoon; }
# Type=notify: `systemctl start` returns only once the daemon said READY=1 (or it failed).
rc=0; inside systemctl start autoballoon || rc=$?
if [ "$rc" != 0 ]; then
    inside journalctl -u autoballoon --no-pager -n 20 -o cat >&2 || true
    die "systemctl start autoballoon exited $rc"
fi
say "systemctl start: rc 0 (READY=1), StatusText: $(show StatusText)"
sleep 8
state="$(show ActiveState)/$(show SubState)"
status_text="$(show StatusText)"
if [ "$state" != active/running ]; then
    inside journalctl -u autoballoon --no-pager -n 20 -o cat >&2 || true
    die "not active/running after start: $state"
fi
[[ "$status_text" =~ guest\(s\)\ managed.*last\ tick.*ok ]] \
    || die "StatusText is not the daemon's tick line: '$status_text'"
say "ready: $state, StatusText: $status_text"
metrics="$(inside /opt/autoballoon/venv/bin/python -c \
    'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9745/metrics").read().decode())')"
grep -qx 'autoballoon_up 1.0' <<<"$metrics" || die "no autoballoon_up 1"
grep -qx 'autoballoon_libvirt_connected 1.0' <<<"$metrics" || die "libvirt_connected is not 1"
grep -q '^autoballoon_guest_info{domain="test",uuid="' <<<"$metrics" || die "no guest_info for test"
say "started: active; metrics: up 1, libvirt_connected 1, guest_info{domain=\"test\"}"
rc=0; out="$(inside autoballoon status 2>&1)" || rc=$?
[ "$rc" = 0 ] && grep -q '^autoballoon is running (pid ' <<<"$out" \
    || { echo "$out" >&2; die "autoballoon status under the running unit: rc $rc"; }
say "autoballoon status: rc 0, $(head -1 <<<"$out")"
RUN_PID="$(show MainPID)"

before="$(inside systemctl show -p MainPID --value autoballoon)"
inside apt-get install -y -q --reinstall /var/tmp/check.deb >/dev/null 2>&1 || die "reinstall"
sleep 2
after="$(inside systemctl show -p MainPID --value autoballoon)"
[ "$after" != "$before" ] && [ "$after" != 0 ] || die "reinstall did not restart the daemon ($before -> $after)"
inside grep -q '^uri = "test:///default"' /etc/autoballoon/autoballoon.toml || die "edited conffile lost"
say "reinstalled: restarted (pid $before -> $after), edited autoballoon.toml kept"

# Stopped: `autoballoon status` reads the status file the unit keeps (RuntimeDirectoryPreserve).
inside systemctl stop autoballoon
rc=0; out="$(inside autoballoon status 2>&1)" || rc=$?
[ "$rc" = 1 ] && grep -q '^autoballoon is not running: pid [0-9]* stopped ' <<<"$out" \
    || { echo "$out" >&2; die "autoballoon status after systemctl stop: rc $rc"; }
say "stopped: autoballoon status rc 1, $(head -1 <<<"$out")"

# release --all with the unit stopped. libvirt's test driver keeps its state per process: every
# connection opened by a new process sees the stock guest "test" (2048 of 8192 MiB), whatever
# another process (the daemon, virsh setmem) did to it, so nothing a daemon shrank survives for
# release to see. What can be observed is release's own line for the guest, and that a second
# process still reads the stock size afterwards (which is why nothing more is asserted).
rc=0; out="$(inside autoballoon release --all 2>&1)" || rc=$?
line="$(grep -m1 '^guest test ' <<<"$out" || true)"
[ "$rc" = 0 ] && [[ "$line" =~ ^guest\ test\ back\ to\ [0-9]+\ MiB\ from\ [0-9]+\ MiB ]] \
    || { echo "$out" >&2; die "autoballoon release --all: rc $rc"; }
after_kib="$(inside /opt/autoballoon/venv/bin/python -c \
    'import libvirt; print(libvirt.open("test:///default").lookupByName("test").info()[2])')"
say "release --all: rc 0, '$line'; a new process then reads $((after_kib / 1024)) MiB (test driver state is per process)"

# A URI libvirt refuses for good: "test://" (the test driver, no path), which the client
# library rejects by itself. The daemon exits 4 (exits.LIBVIRT_REFUSED) before READY=1, the
# start job fails, and RestartPreventExitStatus keeps the unit from restarting.
inside cp -p /etc/autoballoon/autoballoon.toml /var/tmp/autoballoon.toml.good
bad_uri() {
    inside sed -i "s|^uri = .*|uri = \"$1\"|" /etc/autoballoon/autoballoon.toml
    since="$(inside date +%s)"
    rc=0; inside systemctl restart autoballoon 2>/dev/null || rc=$?
    [ "$rc" != 0 ] || die "systemctl restart with uri $1 returned 0"
}
bad_uri "test://"
sleep 15  # three times RestartSec=5s: a restart would have happened by now
result="$(show Result) $(show ExecMainStatus) $(show NRestarts) $(show ActiveState)"
say "uri test://: systemctl restart rc $rc; after 15 s Result ExecMainStatus NRestarts ActiveState = $result"
[ "$result" = "exit-code 4 0 failed" ] || die "expected 'exit-code 4 0 failed', got '$result'"
BAD_PID="$(show ExecMainPID)"
# The daemon's own entries of that run (under -u, systemd's "Failed to start" is -p err too).
errs="$(inside journalctl _SYSTEMD_UNIT=autoballoon.service _PID="$BAD_PID" -p err -o cat --no-pager)"
[ "$(grep -c . <<<"$errs")" = 1 ] && grep -q '^ERROR refusing to start: cannot connect to test://' <<<"$errs" \
    || { echo "$errs" >&2; die "expected one error line naming test://"; }
say "journal, the daemon's own -p err entries: $errs"
say "journalctl -u autoballoon -o cat -p err, since the restart:"
inside journalctl -u autoballoon -o cat -p err --no-pager --since "@$since" | sed 's/^/    /'

# Priorities: journald took each line's <N> prefix as PRIORITY and stripped it from MESSAGE.
# Every entry of the two runs (the daemon that ran, the one refused) is checked.
prio_check='
import json, sys
want = {"DEBUG": "7", "INFO": "6", "WARNING": "4", "ERROR": "3", "CRITICAL": "2"}
n, last = {}, None
for raw in sys.stdin:
    e = json.loads(raw)
    msg, prio = e["MESSAGE"], e.get("PRIORITY")
    level = msg.split(" ", 1)[0]
    if level not in want and prio == last:
        level = "continued"  # a multi-line message: each of its lines carries the prefix
    elif msg.startswith("<") or want.get(level) != prio:
        sys.exit(f"PRIORITY {prio} for {msg!r}")
    last = prio
    n[f"{level}={prio}"] = n.get(f"{level}={prio}", 0) + 1
missing = [k for k in sys.argv[1:] if k not in n]
if missing:
    sys.exit(f"no {missing} entries: {n}")
print(", ".join(f"{v} {k}" for k, v in sorted(n.items())))
'
prios_run="$(inside journalctl _SYSTEMD_UNIT=autoballoon.service _PID="$RUN_PID" -o json --no-pager \
    | python3 -c "$prio_check" INFO=6)" || die "priorities of the running daemon's entries"
prios_bad="$(inside journalctl _SYSTEMD_UNIT=autoballoon.service _PID="$BAD_PID" -o json --no-pager \
    | python3 -c "$prio_check" INFO=6 ERROR=3)" || die "priorities of the refused daemon's entries"
say "journal PRIORITY, running daemon (pid $RUN_PID): $prios_run"
say "journal PRIORITY, refused daemon (pid $BAD_PID): $prios_bad"

# "bogus:///x" names no driver of the client library, which hands such URIs to the libvirtd
# socket, and the root has no libvirtd: libvirt cannot tell "no such driver" from "libvirtd not
# running" there, so the daemon exits 75 (exits.LIBVIRT_UNREACHABLE, restarted) and the unit's
# start limit (5 starts in 300 s) ends the restarts.
inside systemctl reset-failed autoballoon
bad_uri "bogus:///x"
for _ in $(seq 1 60); do
    [ "$(show ActiveState)" = failed ] && break
    sleep 1
done
result="$(show Result) $(show ExecMainStatus) $(show NRestarts) $(show ActiveState)"
say "uri bogus:///x (no libvirtd in the root): systemctl restart rc $rc; after $(( $(inside date +%s) - since )) s Result ExecMainStatus NRestarts ActiveState = $result"
[[ "$result" =~ ^(exit-code|start-limit-hit)\ 75\ [1-9][0-9]*\ failed$ ]] \
    || die "expected '(exit-code|start-limit-hit) 75 N>0 failed', got '$result'"
limit="$(inside journalctl -u autoballoon -o cat --no-pager --since "@$since" | grep -m1 'Start request repeated too quickly' || true)"
[ -n "$limit" ] || die "no 'Start request repeated too quickly' in the journal"
say "  systemd: $limit"
say "  its error line, once per start ($(inside journalctl _SYSTEMD_UNIT=autoballoon.service -p err -o cat --no-pager --since "@$since" | grep -c 'bogus:///x') in all): $(inside journalctl _SYSTEMD_UNIT=autoballoon.service -p err -o cat --no-pager --since "@$since" | tail -1)"

inside cp -p /var/tmp/autoballoon.toml.good /etc/autoballoon/autoballoon.toml
inside systemctl reset-failed autoballoon
inside systemctl start autoballoon || die "start after restoring the good config"
say "good config restored: $(show ActiveState)/$(show SubState)"

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
