#!/usr/bin/env bash
# The README's "Quick start on a real host", run verbatim on a throwaway Debian 12 root (as root,
# from the checkout): meant for `make check-fresh`, never for a host you care about, since it
# installs into /opt, /usr/local/bin, /etc and then uninstalls again.
#
# 1. `make setup` (the lab: libvirtd and the guest image) and one idle lab guest to read;
# 2. every command of the README's quick-start block, in order, except `systemctl` (no systemd
#    as PID 1 in a chroot), then `systemd-analyze verify` on the installed unit;
# 3. checks that the dry-run tick saw the guest, then `make uninstall` and that it is all gone.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'check-install: %s\n' "$*"; }
die() { printf 'check-install: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root, on a throwaway root"

make setup
if ! command -v systemd-analyze >/dev/null; then
    say "installing systemd for systemd-analyze (the check's own need, not the product's)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null
fi
.venv/bin/python -m contrib.lab up --guest install-check:256:idle

# The README's block: the first ```sh block after the "## Quick start on a real host" heading.
mapfile -t cmds < <(awk '
    /^## Quick start on a real host/ { sect = 1; next }
    sect && /^## / { exit }
    sect && /^```sh/ { inblock = 1; next }
    inblock && /^```/ { exit }
    inblock { sub(/[ \t]+#.*$/, ""); if ($0 !~ /^[ \t]*(#|$)/) print }
' README.md)
[ "${#cmds[@]}" -gt 0 ] || die "no install block found in README.md"
out="$(mktemp)"
for c in "${cmds[@]}"; do
    case "$c" in systemctl*) say "skipped (no systemd here): $c"; continue ;; esac
    say "\$ $c"
    set +e
    bash -c "$c" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    # `autoballoon status` says 1 when the daemon is not running: expected before the unit runs.
    case "$c" in "autoballoon status"*) [ "$rc" -le 1 ] || die "exit status $rc: $c" ;;
                 *) [ "$rc" -eq 0 ] || die "exit status $rc: $c" ;; esac
done
grep -q "ab-lab-install-check" "$out" || die "the last command did not show the lab guest"
systemd-analyze verify /etc/systemd/system/autoballoon.service || die "systemd-analyze verify"
[ -x /usr/local/bin/autoballoon ] || die "/usr/local/bin/autoballoon missing"

.venv/bin/python -m contrib.lab down
make uninstall
for p in /opt/autoballoon /usr/local/bin/autoballoon /etc/systemd/system/autoballoon.service; do
    [ ! -e "$p" ] || die "make uninstall left $p"
done
say "ok"
