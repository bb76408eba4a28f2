# The two commands the README starts with:
#   make demo   set everything up, then run the example chain (imagine -> V1 -> U1) against the emulator
#   make test   set everything up, then run ruff, mypy and the whole test suite
# AIRFLOW_VERSION and VENV select the Airflow release and the environment (CI runs both ends of the
# supported range with separate environments).

AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv
PYTHON := $(VENV)/bin/python
export UV_COMPILE_BYTECODE := 1
# An Airflow release older than some of its dependencies' newest releases installs with the pins in
# .ci/constraints-airflow-<version>.txt (as Airflow's own constraints files do), where there is one.
CONSTRAINTS := $(wildcard .ci/constraints-airflow-$(AIRFLOW_VERSION).txt)

.PHONY: setup demo test lint

$(VENV)/.installed-$(AIRFLOW_VERSION): pyproject.toml $(CONSTRAINTS)
	command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	uv venv --quiet --allow-existing $(VENV)
	uv pip install --quiet --python $(PYTHON) -e ".[test]" "apache-airflow==$(AIRFLOW_VERSION)" \
		$(if $(CONSTRAINTS),--constraint $(CONSTRAINTS))
	rm -f $(VENV)/.installed-* && touch $@

setup: $(VENV)/.installed-$(AIRFLOW_VERSION)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest -q -p no:cacheprovider

demo: setup
	$(PYTHON) dags_examples/run_demo.py
