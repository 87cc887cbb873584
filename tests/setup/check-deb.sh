#!/usr/bin/env bash
# The Debian package on a throwaway Debian 12 root without a compiler (as root): meant for
# fresh-debian, never for a host you care about, since it installs and purges the package.
#
#   fresh-debian --root R -- bash tests/setup/check-deb.sh /var/tmp/autoballoon_X_amd64.deb
#
# (build the .deb first with `make deb` on a build host and copy it into R). Checks: no gcc,
# no libvirt-dev, no pip in the root; `apt install ./DEB` (apt resolves python3, libvirt0 and
# procps from the root's own sources); `autoballoon --version`, `check-policy`, `--help`, the
# man page; then `apt purge` leaves nothing in /opt/autoballoon, /usr/bin or /etc/autoballoon.
#
# Offline: fetch the dependencies into apt's cache first (`apt-get install --download-only
# ./DEB`, then `apt-get purge` anything installed), and run this with no network at all
# (`unshare -n fresh-debian ...`): apt installs from the .deb and its cache. (`apt-get update`
# still runs, and fails to reach the mirrors: without it apt 2.6 refused the local .deb with
# "Pathname to install is not absolute"; so did --no-download.)
set -euo pipefail
DEB="$(readlink -f "${1:?usage: check-deb.sh PATH/TO/autoballoon_*.deb}")"
say() { printf 'check-deb: %s\n' "$*"; }
die() { printf 'check-deb: FAILED: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root, on a throwaway root"
export DEBIAN_FRONTEND=noninteractive

for tool in gcc cc pip3; do
    ! command -v "$tool" >/dev/null || die "$tool is installed: not a root without a compiler"
done
! dpkg-query -W -f='${Status}' libvirt-dev 2>/dev/null | grep -q "ok installed" \
    || die "libvirt-dev is installed"

apt-get update -q >/tmp/check-deb-apt.log 2>&1 || true
if grep -q 'Failed to fetch\|Temporary failure resolving\|Could not' /tmp/check-deb-apt.log; then
    say "apt-get update reached no mirror: installing offline, from the .deb and apt's cache"
fi
start=$SECONDS
apt-get install -y -q --no-install-recommends "$DEB" >/tmp/check-deb-apt.log 2>&1 \
    || { cat /tmp/check-deb-apt.log >&2; die "apt install $DEB"; }
say "installed $(dpkg-query -W -f='${Package} ${Version}' autoballoon) in $((SECONDS - start)) s"
say "still no compiler: $(command -v gcc cc || echo none)"

version="$(autoballoon --version)"
say "autoballoon --version: $version"
[[ "$version" =~ ^autoballoon\ [0-9]+\.[0-9]+\.[0-9]+ ]] || die "no version in '$version'"
autoballoon check-policy
autoballoon --help | head -3
autoballoon --help | grep -q 'check-policy' || die "--help lists no sub-commands"
zcat /usr/share/man/man8/autoballoon.8.gz | grep -q '^\.SS run' || die "man page has no 'run'"
/opt/autoballoon/venv/bin/python -c 'import libvirt; print("check-deb: libvirt-python", libvirt.getVersion())'
dpkg-query -W -f='${Conffiles}\n' autoballoon | grep -q /etc/autoballoon/autoballoon.toml \
    || die "autoballoon.toml is not a conffile"

apt-get purge -y -q autoballoon >/tmp/check-deb-apt.log 2>&1 \
    || { cat /tmp/check-deb-apt.log >&2; die "apt purge"; }
for gone in /opt/autoballoon /usr/bin/autoballoon /etc/autoballoon /lib/systemd/system/autoballoon.service; do
    [ ! -e "$gone" ] || die "$gone is still there after purge"
done
say "purged: nothing left"
say "ok"
