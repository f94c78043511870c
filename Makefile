# The entry points people type. Everything runs from the project's own virtual environment.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
N ?= 1000

.PHONY: run test demo bench soak venv prepare lint unit integration e2e faults deadletters clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

prepare: $(STAMP)
	$(PY) -m deploy.prepare

run: prepare
	$(VENV)/bin/honcho --procfile deploy/Procfile --app-root . start

demo: $(STAMP)
	$(PY) -m tools.demo

test: $(STAMP)
	$(PY) -m tools.services_up
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

faults: $(STAMP)
	$(PY) -m tools.services_up
	$(PY) -m pytest tests/e2e/test_faults.py tests/e2e/test_broker_restart.py

bench: $(STAMP)
	$(PY) -m tools.services_up
	$(PY) -m tools.bench

soak: $(STAMP)
	$(PY) -m tools.services_up
	$(PY) -m tests.e2e.faults --migrations $(N)

deadletters: $(STAMP)
	$(PY) -m tools.deadletters list

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
