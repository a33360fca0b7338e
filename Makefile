PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test run status venv proto lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The suite runs in two parts: most tests on TEST_WORKERS workers (each test file on
# one worker, so a file's shared server starts once), then the tests marked `alone`
# by themselves (kill loops under load, thousands of subscribers, memory bounds,
# fairness under contention). Both parts always run; either failing fails the target.
TEST_WORKERS ?= 2

test: $(STAMP)
	status=0; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not alone" || status=$$?; \
	$(PY) -m pytest -q -m alone || status=$$?; \
	exit $$status

# The whole server in the foreground: one writer and HYDRA_WORKERS gateways under
# supervisord (supervisord.conf), data in ./data, logs in ./data/logs. Override any
# setting from the environment or the command line, e.g.
# `make run HYDRA_WORKERS=4 HYDRA_SYNC=async HYDRA_HOST=0.0.0.0` (README "Server").
HYDRA_DATA ?= $(CURDIR)/data
HYDRA_WORKERS ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
HYDRA_LOG_DIR ?= $(HYDRA_DATA)/logs

# A program that cannot start is reported on this console and ends the run: the
# watchdog (hydra/_watchdog.py) records it in HYDRA_LOG_DIR/fatal and stops
# supervisord, and `make run` exits 1.
run: $(STAMP)
	umask 077 && mkdir -p "$(HYDRA_LOG_DIR)" && rm -f "$(HYDRA_LOG_DIR)/fatal"
	umask 077; HYDRA_DATA="$(HYDRA_DATA)" HYDRA_WORKERS="$(HYDRA_WORKERS)" HYDRA_LOG_DIR="$(HYDRA_LOG_DIR)" \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/supervisord -c supervisord.conf; \
	status=$$?; test ! -e "$(HYDRA_LOG_DIR)/fatal" || exit 1; exit $$status

# The processes of `make run` and the writer's committed position (same defaults).
status: $(STAMP)
	@HYDRA_DATA="$(HYDRA_DATA)" HYDRA_LOG_DIR="$(HYDRA_LOG_DIR)" $(VENV)/bin/hydra status

proto: $(STAMP)
	$(PY) -m hydra._proto.generate

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check hydra tests benchmarks examples
	$(VENV)/bin/mypy hydra

clean:
	rm -rf $(VENV) build *.egg-info
