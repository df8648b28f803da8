# Two commands set everything up and run the default experiment:  make setup && make repro
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup repro test bench clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

repro: setup
	. $(VENV)/bin/activate && dvc repro

# The one test command (README, .ci/run). pytest's exit 5 ("no tests ran") is a failure here.
test: setup
	. $(VENV)/bin/activate && python -m pytest -q tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: setup
	. $(VENV)/bin/activate && python benchmarks/train_throughput.py
