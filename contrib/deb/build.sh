#!/usr/bin/env bash
# Build dist/autoballoon_VERSION_ARCH.deb: autoballoon with its own virtual environment, so the
# host needs neither a compiler, libvirt's headers nor the Python package index.
#
#   make deb        (this script; run from anywhere, as any user; nothing is installed)
#
# The package holds
#   /opt/autoballoon/venv/               Python 3.11 venv: autoballoon and every dependency as
#                                        wheels built here (libvirt-python compiled against
#                                        this host's libvirt-dev), byte-compiled
#   /usr/bin/autoballoon                 a link into the venv
#   /lib/systemd/system/autoballoon.service   contrib/systemd's unit, ExecStart on /usr/bin
#   /etc/autoballoon/                    autoballoon.toml and policies/ (conffiles)
#   /usr/share/man/man8/autoballoon.8.gz from the command line's --help (manpage.py)
#   /usr/share/doc/autoballoon/          README, CHANGELOG, docs/, copyright
#   /usr/share/autoballoon/              the Grafana dashboard and the Prometheus rules
# Depends: python3 3.11 (the venv's interpreter and its compiled extensions), libvirt0, procps
# (/bin/kill for the unit's ExecReload).
#
# Build needs (Debian 12): python3-venv, python3-dev, gcc, pkg-config, libvirt-dev (what
# contrib/lab/setup-host.sh installs), dpkg-deb, and the package index for the dependencies.
# The venv is built in a staging root under a temporary directory, then its paths are
# rewritten to /opt/autoballoon/venv: nothing is written outside the staging root and dist/.
#
# Env: OUT (default dist/), DEB_MAINTAINER (default: the last commit's author).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$SRC/dist}"
PREFIX=/opt/autoballoon/venv
say() { printf 'deb: %s\n' "$*"; }
die() { printf 'deb: ERROR: %s\n' "$*" >&2; exit 1; }

# Debian's own interpreter, whatever else is first on PATH: the venv's python3 is a link to it,
# and libvirt-python is compiled against its headers (python3-dev).
PYTHON=/usr/bin/python3
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null \
    || die "needs Debian 12's $PYTHON (3.11): the venv runs on the target's python3"
"$PYTHON" -c 'import ensurepip' 2>/dev/null || die "python3-venv is not installed"
command -v gcc >/dev/null && pkg-config --exists libvirt 2>/dev/null \
    || die "gcc, pkg-config and libvirt-dev are needed to compile libvirt-python"

WORK="$(mktemp -d -t autoballoon-deb.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/root"
VENV="$STAGE$PREFIX"
started=$SECONDS

# 1. The venv, at its final path inside the staging root.
"$PYTHON" -m venv "$VENV"
say "pip install $SRC and its dependencies (libvirt-python compiles: about a minute)"
# --no-cache-dir: no wheel built earlier by another interpreter; libvirt-python compiles here.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile \
    --no-cache-dir "$SRC"
"$VENV/bin/python" -m pip uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
rm -f "$VENV"/lib/python3*/site-packages/autoballoon-*.dist-info/direct_url.json
rm -rf "$SRC/build"
VERSION="$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("autoballoon"))')"

[ "$(readlink "$VENV/bin/python3")" = "$PYTHON" ] || die "the venv's python3 is not $PYTHON"
# 2. Paths that name the staging root: scripts' #! lines, activate scripts, pyvenv.cfg.
grep -rlF "$STAGE" "$VENV" | while IFS= read -r f; do
    sed -i "s|$STAGE$PREFIX|$PREFIX|g" "$f"
done
if grep -rqF "$STAGE" "$VENV"; then
    die "the staging path is still named in: $(grep -rlF "$STAGE" "$VENV" | head -3 | tr '\n' ' ')"
fi
# Byte-compile as installed (the .pyc files name /opt/..., and dpkg keeps the sources' times).
"$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / "$VENV/lib" >/dev/null

# 3. Everything around the venv.
install -d "$STAGE/usr/bin"
ln -s "$PREFIX/bin/autoballoon" "$STAGE/usr/bin/autoballoon"
install -D -m 0644 "$SRC/contrib/systemd/autoballoon.service" "$STAGE/lib/systemd/system/autoballoon.service"
sed -i 's|/usr/local/bin/autoballoon|/usr/bin/autoballoon|g' "$STAGE/lib/systemd/system/autoballoon.service"
install -D -m 0644 "$SRC/contrib/autoballoon.toml" "$STAGE/etc/autoballoon/autoballoon.toml"
(cd "$SRC/policies" && find . -name '*.toml' -type f) | sort | while IFS= read -r f; do
    install -D -m 0644 "$SRC/policies/$f" "$STAGE/etc/autoballoon/policies/${f#./}"
done
DOC="$STAGE/usr/share/doc/autoballoon"
install -D -m 0644 -t "$DOC" "$SRC/README.md" "$SRC/CHANGELOG.md"
install -D -m 0644 -t "$DOC/docs" "$SRC"/docs/*.md
cat >"$DOC/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: autoballoon

Files: *
Copyright: the autoballoon authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0 (and in the source's LICENSE file).
 The dependencies in /opt/autoballoon/venv carry their own licenses in their
 *.dist-info directories.
COPYRIGHT
install -D -m 0644 "$SRC/contrib/grafana/autoballoon.json" "$STAGE/usr/share/autoballoon/grafana/autoballoon.json"
install -D -m 0644 -t "$STAGE/usr/share/autoballoon/prometheus" "$SRC"/contrib/prometheus/*.yml
install -d "$STAGE/usr/share/man/man8"
(cd "$SRC" && SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)" \
    "$VENV/bin/python" -m contrib.deb.manpage) | gzip -9n >"$STAGE/usr/share/man/man8/autoballoon.8.gz"

# 4. Control files. PEP 440 -> Debian: 0.2.1.dev3+gabc -> 0.2.1~dev3+gabc (~ sorts before 0.2.1).
DEB_VERSION="$(printf '%s' "$VERSION" | sed -E 's/\.?(dev|a|b|rc)([0-9]+)/~\1\2/')"
ARCH="$(dpkg --print-architecture)"
MAINTAINER="${DEB_MAINTAINER:-$(git -C "$SRC" log -1 --format='%an <%ae>' 2>/dev/null || echo 'autoballoon maintainers <root@localhost>')}"
install -d "$STAGE/DEBIAN"
install -m 0755 -t "$STAGE/DEBIAN" "$SRC"/contrib/deb/{preinst,postinst,prerm,postrm}
(cd "$STAGE" && find etc -type f | sort | sed 's|^|/|') >"$STAGE/DEBIAN/conffiles"
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: autoballoon
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: python3 (>= 3.11~), python3 (<< 3.12), libvirt0 (>= 9.0.0), procps
Section: admin
Priority: optional
Description: pressure-aware virtio-balloon controller for libvirt/KVM hosts
 autoballoon sizes each libvirt guest's virtio balloon from the guest's own
 memory-pressure counters: it takes memory back from guests that can spare it
 and gives it back at once when a guest starts to suffer.
 .
 Self-contained: its Python dependencies (libvirt-python compiled, pydantic,
 APScheduler, tenacity, prometheus-client) are in /opt/autoballoon/venv. The
 service is installed but not enabled.
CONTROL

mkdir -p "$OUT"
DEB="$OUT/autoballoon_${DEB_VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
say "built $DEB ($(du -h "$DEB" | cut -f1), installed size $(du -sh --exclude=DEBIAN "$STAGE" | cut -f1), version $VERSION) in $((SECONDS - started)) s"
