#!/usr/bin/env bash
# Stop the lab's libvirtd cleanly (started by setup-host.sh with `libvirtd -d`).
# First destroys and undefines the lab's own ab-lab-* domains (never any other
# domain) unless --keep-guests is given. Idempotent.
set -euo pipefail
URI="${AB_LAB_URI:-qemu:///system}"
say() { printf 'lab-stop: %s\n' "$*"; }

keep_guests=0
[ "${1:-}" = "--keep-guests" ] && keep_guests=1

pid="$(cat /run/libvirtd.pid 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || ! grep -q libvirtd "/proc/$pid/comm" 2>/dev/null; then
    say "libvirtd not running"
    exit 0
fi

if [ "$keep_guests" -eq 0 ] && command -v virsh >/dev/null; then
    for d in $(timeout 30 virsh -q -c "$URI" list --all --name 2>/dev/null | grep '^ab-lab-' || true); do
        timeout 30 virsh -q -c "$URI" destroy "$d" >/dev/null 2>&1 || true
        timeout 30 virsh -q -c "$URI" undefine "$d" >/dev/null 2>&1 || true
        say "removed $d"
    done
fi

kill -TERM "$pid"
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { say "libvirtd stopped"; exit 0; }
    sleep 0.1
done
say "libvirtd (pid $pid) did not exit after 10 s; sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null || true
