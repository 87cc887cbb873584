# autoballoon: the two commands are `make demo` (the main job) and `make test` (every test).
# Both set up everything they need, idempotently: host packages, libvirtd, the lab image, a venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup host venv demo test lint unit lab-tests bench clean pg-image

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
