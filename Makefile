# The two commands the README starts with:
#   make demo   set everything up, then run the example chain (imagine -> V1 -> U1) against the emulator
#   make test   set everything up, then run ruff, mypy and the whole test suite
#               (but the multi-host deployment, which `make test-multihost` runs)
# AIRFLOW_VERSION and VENV select the Airflow release and the environment (CI runs both ends of the
# supported range with separate environments).

AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export UV_COMPILE_BYTECODE := 1
# An Airflow release older than some of its dependencies' newest releases installs with the pins in
# .ci/constraints-airflow-<version>.txt (as Airflow's own constraints files do), where there is one.
CONSTRAINTS := $(wildcard .ci/constraints-airflow-$(AIRFLOW_VERSION).txt)

.PHONY: setup system-packages demo test test-multihost lint

# Debian packages the tests start private servers from: redis-server (the Redis budget's tests, the
# Celery broker) and PostgreSQL (the multi-host test's metadata database). Installed where missing when
# running as root with apt-get (CI, a fresh Debian machine); elsewhere the tests that need them skip.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "Not root, or no apt-get: install$$missing yourself (the tests that need it skip)."; \
		exit 0; \
	fi; \
	echo "Installing$$missing from Debian"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

$(VENV)/.installed-$(AIRFLOW_VERSION): pyproject.toml $(CONSTRAINTS)
	command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	uv venv --quiet --allow-existing $(VENV)
	uv pip install --quiet --python $(PYTHON) -e ".[test]" "apache-airflow==$(AIRFLOW_VERSION)" \
		$(if $(CONSTRAINTS),--constraint $(CONSTRAINTS))
	rm -f $(VENV)/.installed-* && touch $@

setup: system-packages $(VENV)/.installed-$(AIRFLOW_VERSION)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest -q -p no:cacheprovider

# Several minutes on 2 cores and ~4 GB: CI runs it once, on the newest Airflow.
test-multihost: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider -m multihost -s tests/e2e

demo: setup
	$(PYTHON) dags_examples/run_demo.py
