# autoballoon: the two lab commands are `make demo` and `make test` (every test). Both set up
# everything they need, idempotently: host packages, QEMU from backports, libvirtd configured to
# run QEMU as root, the lab image, a venv. They reconfigure libvirt: run them on a throwaway VM,
# never on a hypervisor in service. `make unit` and `make lint` need no root and touch nothing
# outside the checkout (they never run contrib/lab/setup-host.sh).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The venv without libvirt-python, for machines without libvirt's headers (`make unit`, `make
# lint`): the other dependencies are read from pyproject.toml, not listed twice.
STAMP_NOLIBVIRT := $(VENV)/.installed-nolibvirt

.PHONY: setup host venv venv-any demo test lint unit lab-tests bench clean install uninstall deb \
	check-deb check-fresh pg-image check-mutants

setup: host
	$(MAKE) --no-print-directory venv

host:
	bash contrib/lab/setup-host.sh

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(STAMP_NOLIBVIRT)
	touch $(STAMP)

$(STAMP_NOLIBVIRT): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip install --quiet $$($(PY) contrib/deps.py --without libvirt-python --extra dev)
	touch $(STAMP_NOLIBVIRT)

# The full venv (libvirt-python built against the installed libvirt). Needs libvirt's headers:
# `make host` (root) installs them on Debian 12.
venv: $(STAMP)

# The full venv where libvirt's pkg-config file is found, else the venv without libvirt-python.
venv-any:
	@if pkg-config --exists libvirt 2>/dev/null; then \
		$(MAKE) --no-print-directory $(STAMP); \
	elif test -f $(STAMP); then :; else \
		echo "libvirt's pkg-config file not found: venv without libvirt-python"; \
		$(MAKE) --no-print-directory $(STAMP_NOLIBVIRT); \
	fi

# The PostgreSQL lab guest (cached; also built on first use by the lab): about 90 s from nothing.
pg-image: host
	bash contrib/lab/pg/build.sh

lint: venv-any
	$(VENV)/bin/ruff check autoballoon tests contrib benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Without libvirt-python in the venv, the tests marked `libvirt` (tests/plumbing, tests/operator,
# any test module that imports libvirt: tests/conftest.py) are deselected, and it says so.
# matplotlib's font cache goes in the venv, not in $HOME.
unit: venv-any
	@if $(PY) -c 'import libvirt' 2>/dev/null; then marks="not lab"; else \
		marks="not lab and not libvirt"; \
		echo "libvirt-python is not installed: tests marked libvirt are deselected"; fi; \
	echo "pytest -m \"$$marks\""; MPLCONFIGDIR=$(VENV)/.matplotlib $(PY) -m pytest -m "$$marks" -q

lab-tests: setup
	$(PY) -m pytest -m lab -q

test: setup
	$(MAKE) --no-print-directory lint
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
# one-line and with deb822 apt sources; writes each step's time, with the commit and date, to
# benchmarks/results/fresh.md (tests/setup/check-fresh.sh). Needs the fresh-debian tool (it
# builds the roots with debootstrap); not part of `make test`, which checks the apt-source
# derivation on fixtures instead (tests/setup).
FRESH_DEBIAN ?= ../shared/tools/fresh-debian
check-fresh:
	@test -x $(FRESH_DEBIAN) || { echo "check-fresh: $(FRESH_DEBIAN) not found (set FRESH_DEBIAN=)"; exit 2; }
	bash tests/setup/check-fresh.sh $(FRESH_DEBIAN)
