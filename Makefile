# autoballoon: the two commands are `make demo` (the main job) and `make test` (every test).
# Both set up everything they need, idempotently: host packages, libvirtd, the lab image, a venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup host venv demo test lint unit lab-tests bench clean install uninstall deb check-deb \
	check-fresh pg-image check-mutants

setup: host venv

host:
	bash contrib/lab/setup-host.sh

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: host $(STAMP)

# The PostgreSQL lab guest (cached; also built on first use by the lab): about 90 s from nothing.
pg-image: host
	bash contrib/lab/pg/build.sh

lint: venv
	$(VENV)/bin/ruff check autoballoon tests contrib benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: venv
	$(PY) -m pytest -m "not lab" -q

lab-tests: setup
	$(PY) -m pytest -m lab -q

test: setup lint
	$(PY) -m pytest -q -ra

demo: setup
	$(PY) -m contrib.demo

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) contrib/lab/cache

# Mutation check of autoballoon/core (tests/mutants.py): each rule and clamp of the law removed
# or inverted in turn, in a copy of the tree; the unit and plumbing tests must fail each time.
# Not part of `make test` (one run of those tests per mutant, about 15 minutes). Sets nothing
# up: it needs the venv (`make venv`) and no lab.
check-mutants:
	@test -x $(PY) || { echo "check-mutants: $(PY) not found; run 'make venv' first"; exit 2; }
	$(PY) -m tests.mutants --out benchmarks/results/mutants.md

# Operators: the daemon where the systemd unit expects it (venv in /opt/autoballoon, a link in
# /usr/local/bin, /etc/autoballoon filled only where empty, the unit). See contrib/install.sh.
install:
	bash contrib/install.sh install

uninstall:
	bash contrib/install.sh uninstall

# Operators without a compiler or the package index on their hosts: dist/autoballoon_*.deb, with
# its own venv in /opt/autoballoon/venv (libvirt-python compiled here). Needs what `make host`
# installs (python3-venv, python3-dev, gcc, pkg-config, libvirt-dev). See contrib/deb/build.sh.
deb:
	bash contrib/deb/build.sh

# The newest dist/*.deb (build it first with `make deb`) in a brand-new Debian 12 root without a
# compiler (tests/setup/check-deb.sh), then under real systemd in that root booted with
# systemd-nspawn (tests/setup/check-deb-systemd.sh; needs systemd-container). As root, about
# 3 minutes. Offline installs: see check-deb.sh's header.
DEB_ROOT ?= /var/tmp/fresh-debian-deb
check-deb:
	@test -x $(FRESH_DEBIAN) || { echo "check-deb: $(FRESH_DEBIAN) not found (set FRESH_DEBIAN=)"; exit 2; }
	@deb=$$(ls -t dist/autoballoon_*.deb 2>/dev/null | head -1); test -n "$$deb" || { echo "check-deb: no dist/autoballoon_*.deb: make deb first"; exit 2; }; \
	$(FRESH_DEBIAN) --reset --root $(DEB_ROOT) -- true && cp "$$deb" $(DEB_ROOT)/var/tmp/ && \
	$(FRESH_DEBIAN) --root $(DEB_ROOT) -- bash tests/setup/check-deb.sh "/var/tmp/$${deb##*/}" && \
	bash tests/setup/check-deb-systemd.sh $(DEB_ROOT) "$$deb"

# From nothing: both commands and the install path on brand-new minimal Debian 12 roots, with
# one-line and with deb822 apt sources (about 45 minutes). Needs the fresh-debian tool (it
# builds the roots with debootstrap); not part of `make test`, which checks the apt-source
# derivation on fixtures instead (tests/setup).
FRESH_DEBIAN ?= ../shared/tools/fresh-debian
check-fresh:
	@test -x $(FRESH_DEBIAN) || { echo "check-fresh: $(FRESH_DEBIAN) not found (set FRESH_DEBIAN=)"; exit 2; }
	$(FRESH_DEBIAN) --reset -- make demo
	$(FRESH_DEBIAN) -- make test
	$(FRESH_DEBIAN) -- bash tests/setup/check-install.sh
	$(FRESH_DEBIAN) --deb822 --reset -- make demo
	$(FRESH_DEBIAN) --deb822 -- make test
