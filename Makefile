# thanthien — every target installs what it needs first, so each works on a fresh clone.
# `make help` lists the targets.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP_APT := $(VENV)/.apt-ok
STAMP_DEPS := $(VENV)/.deps-ok
ROLES ?= speaker,station,kiosk,fleet,dev
PYTEST_ARGS ?=

.PHONY: help demo test deps system-packages certs bench lint clean distclean install

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

demo: deps ## install what is missing, then run the whole system locally (Ctrl-C stops it)
	$(VENV)/bin/thanthien demo

test: deps ## install what is missing, then run the test suite (nothing is skipped)
	THANTHIEN_REQUIRE_ALL=1 $(PY) -m pytest $(PYTEST_ARGS)

deps: $(STAMP_DEPS) ## create .venv and install the Python dependencies of every role

system-packages: ## install the missing Debian packages (apt, with sudo when not root)
	./scripts/ensure-system-packages.sh

$(STAMP_APT): scripts/ensure-system-packages.sh
	./scripts/ensure-system-packages.sh
	@mkdir -p $(VENV) && touch $@

$(STAMP_DEPS): pyproject.toml $(STAMP_APT)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e '.[$(ROLES)]'
	@touch $@

certs: deps ## create a ward CA and the broker's TLS certificate in var/certs (for the demo; never committed)
	$(PY) -c "from devices.fleet.certs import create_ca_and_server as c; p = c('var/certs', ['localhost', '127.0.0.1']); print('CA:', p.ca_cert); print('broker:', p.server_cert, p.server_key)"

install: ## install one role on this machine (as root): make install ROLE=station|kiosk|speaker [INSTALL_ARGS=--dry-run]
	@test -n "$(ROLE)" || { echo "usage: make install ROLE=station|kiosk|speaker [INSTALL_ARGS='--dry-run']" >&2; exit 2; }
	./scripts/install.sh --role $(ROLE) $(INSTALL_ARGS)

bench: deps ## run the benchmarks in benchmarks/ and print their figures
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: deps ## byte-compile everything (catches syntax errors on every Python)
	$(PY) -m compileall -q thanthien devices broadcast kiosk tests benchmarks

clean: ## remove caches and test output (keeps .venv)
	rm -rf .pytest_cache build *.egg-info var/demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also remove the virtual environment
	rm -rf $(VENV)
