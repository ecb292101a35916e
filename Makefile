# The two commands of the README: `make bench` (the main job) and `make test`.
# Both run `make setup` first: a virtual environment with the Python dependencies, then the
# host packages from Debian (installed when root; otherwise the exact command is printed).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test lint unit bench bench-build bench-kernels bench-boot bench-run bench-verdicts bench-rates bench-causes \
	bench-jobs bench-coverage bench-cost bench-statistics

setup: $(VENV)/.installed
	@git rev-parse --git-dir >/dev/null 2>&1 && git config core.hooksPath .githooks || true
	$(BIN)/harness doctor --install

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "error: python3 -m venv failed: run 'sudo apt-get install -y python3-venv', then make again"; exit 1; fi; }
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

test: setup lint
	$(BIN)/harness doctor --install --tests >/dev/null
	$(BIN)/pytest -v -rfEsP --durations=25

lint: $(VENV)/.installed
	$(BIN)/ruff check harness tests benchmarks

# The fast tests (no kernel build, no download), with line coverage per module and the wall time.
unit: $(VENV)/.installed
	$(BIN)/pytest -q -m "not real and not simulation and not faults" --cov=harness --cov-report=term --durations=5

bench: setup
	$(BIN)/harness bench --control --reps auto

bench-build: setup
	$(BIN)/python benchmarks/build_times.py

bench-kernels: setup
	$(BIN)/python benchmarks/kernel_builds.py

bench-boot: setup
	$(BIN)/python benchmarks/boot_times.py

bench-run: setup
	$(BIN)/python benchmarks/run_figures.py

bench-verdicts: setup
	$(BIN)/python benchmarks/verdict_errors.py

# Every figure of docs/statistics.md's "Simulated here", printed by the simulations that assert them.
bench-statistics: setup
	$(BIN)/pytest -q -s -m simulation tests/analysis -p no:warnings

bench-causes: setup
	$(BIN)/python benchmarks/cause_overhead.py

bench-coverage: setup
	$(BIN)/python benchmarks/coverage_cost.py

bench-rates: setup
	$(BIN)/python benchmarks/rate_spread.py

bench-jobs: setup
	$(BIN)/python benchmarks/parallel_cells.py

# What make bench and .ci/run take, stage by stage, against their targets (warm cache; add
# --empty-cache to the script's arguments for a new machine's figures).
bench-cost: setup
	$(BIN)/python benchmarks/cost.py bench ci
