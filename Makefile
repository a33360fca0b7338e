PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test run venv proto lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The whole server in the foreground: one writer and HYDRA_WORKERS gateways under
# supervisord (supervisord.conf), data in ./data, logs in ./data/logs. Override any
# setting from the environment or the command line, e.g.
# `make run HYDRA_WORKERS=4 HYDRA_SYNC=async HYDRA_HOST=0.0.0.0` (README "Server").
HYDRA_DATA ?= $(CURDIR)/data
HYDRA_WORKERS ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
HYDRA_LOG_DIR ?= $(HYDRA_DATA)/logs

run: $(STAMP)
	mkdir -p "$(HYDRA_LOG_DIR)"
	HYDRA_DATA="$(HYDRA_DATA)" HYDRA_WORKERS="$(HYDRA_WORKERS)" HYDRA_LOG_DIR="$(HYDRA_LOG_DIR)" \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec $(VENV)/bin/supervisord -c supervisord.conf

proto: $(STAMP)
	$(PY) -m hydra._proto.generate

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check hydra tests benchmarks examples
	$(VENV)/bin/mypy hydra

clean:
	rm -rf $(VENV) build *.egg-info
