# Two commands set everything up and run the default experiment:  make setup && make repro
VENV ?= .venv
PY := $(VENV)/bin/python
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup repro test bench clean-outputs

setup: $(VENV)/.installed .dvc/plots.html

# `dvc plots show` offline: vega, vega-lite and vega-embed (pinned, from the npm registry) inlined into
# the page template (.dvc/plots.html, git-ignored) that .dvc/config.local points DVC at. Without npm,
# a notice, and DVC's default page (scripts from a CDN) stays.
PLOTS_JS := vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
.dvc/plots.html: $(VENV)/.installed src/elimnet/report/offline_plots.py
	@if command -v npm >/dev/null 2>&1 && \
	   npm install -s --prefix .plots-js --no-save --no-audit --no-fund --no-package-lock $(PLOTS_JS); then \
	  $(PY) -m elimnet.report.offline_plots .plots-js/node_modules $@ && \
	  $(VENV)/bin/dvc config --local plots.html_template plots.html; \
	else echo "notice: npm missing or failed: dvc plots show loads vega from a CDN (needs internet)"; fi

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
