# The two commands the README starts with:
#   make demo   set everything up, then run the example chain (imagine -> V1 -> U1) against the emulator
#   make test   set everything up, then run ruff, mypy and the whole test suite
#               (but the multi-host deployment, which `make test-multihost` runs)
# AIRFLOW_VERSION, PYTHON_VERSION and VENV select the Airflow release, the Python and the environment (CI
# runs the lowest Airflow on the lowest Python and the newest on the newest, in separate environments).

AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# PYTHON_VERSION (3.10 ... 3.13) picks the environment's interpreter: pyenv's CPython of that version (this
# machine image has 3.10 to 3.13 under ~/.pyenv/versions; `uv python install` cannot download here), else
# python<version> on PATH; PYTHON_INTERPRETER (a path) overrides both. Empty: the interpreter uv picks.
# An environment of another Python than PYTHON_VERSION is made anew.
PYTHON_VERSION ?=
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON_INTERPRETER ?= $(if $(PYTHON_VERSION),$(or $(lastword $(wildcard \
	$(PYENV_ROOT)/versions/$(PYTHON_VERSION).*/bin/python$(PYTHON_VERSION))),python$(PYTHON_VERSION)))
INSTALLED := $(VENV)/.installed-$(AIRFLOW_VERSION)$(if $(PYTHON_VERSION),-py$(PYTHON_VERSION))
export UV_COMPILE_BYTECODE := 1
# An Airflow release older than some of its dependencies' newest releases installs with the pins in
# .ci/constraints-airflow-<version>.txt (as Airflow's own constraints files do), where there is one.
CONSTRAINTS := $(wildcard .ci/constraints-airflow-$(AIRFLOW_VERSION).txt)

.PHONY: setup system-packages demo test test-multihost test-wheel test-browser lint

# Debian packages the tests start private servers from: redis-server (the Redis budget's tests, the
# Celery broker) and PostgreSQL (the multi-host test's metadata database); chromium, the browser of the
# browser test (Playwright drives /usr/bin/chromium: never `playwright install`). Installed where missing when
# running as root with apt-get (CI, a fresh Debian machine); elsewhere the tests that need them skip.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "Not root, or no apt-get: install$$missing yourself (the tests that need it skip)."; \
		exit 0; \
	fi; \
	echo "Installing$$missing from Debian"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@if [ -n "$(PYTHON_VERSION)" ] && [ -x $(PYTHON) ] && \
		[ "$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PYTHON_VERSION)" ]; \
		then echo "$(VENV) is not Python $(PYTHON_VERSION): making it anew"; rm -rf $(VENV); fi
	uv venv --quiet --allow-existing $(if $(PYTHON_INTERPRETER),--python $(PYTHON_INTERPRETER)) $(VENV)
	uv pip install --quiet --python $(PYTHON) -e ".[emulator,redis]" --group dev "apache-airflow==$(AIRFLOW_VERSION)" \
		$(if $(CONSTRAINTS),--constraint $(CONSTRAINTS))
	rm -f $(VENV)/.installed-* && touch $@

setup: system-packages $(INSTALLED)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest -q -p no:cacheprovider

# Several minutes on 2 cores and ~4 GB: CI runs it once, on the newest Airflow.
test-multihost: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider -m multihost -s tests/e2e

# The wheel `uv build` makes, installed in a fresh environment and used from a user's own project (its
# DAG test runs dag.test() against the emulator fixture); about a minute: CI runs it once.
test-wheel: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider -m wheel -s tests/distribution

# The Airflow UI in headless Chromium on real services (the connection form, a chain's extra link); it
# prints the folder of its screenshots. CI runs it once, on the newest Airflow.
test-browser: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider -m browser -s tests/e2e/test_browser.py

demo: setup
	$(PYTHON) dags_examples/run_demo.py
