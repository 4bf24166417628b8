PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## demo: set up and run a worker on a realistic workload (embedded SQLite)
demo: $(VENV)/.installed
	$(BIN)/stagecrew demo

## test: set up and run the whole test suite (in TEST_PROCESSES processes: most tests wait on
## servers and worker processes, not on a core), then the linters
TEST_PROCESSES ?= auto
test: $(VENV)/.installed
	$(BIN)/pytest -q -n $(TEST_PROCESSES) --dist worksteal
	$(MAKE) lint

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

## bench: drains of real work on every engine (PostgreSQL and Redis must be up: it stops
## before measuring anything if one is not), then SQLite against its raw limit, then fair
## queues (a small tenant's wait behind another's flood) and workflows (a chord against plain
## jobs) on every engine, then the cost of one durable step (ctx.step) per engine, then
## concurrency caps (a generous cap against none, other keys beside a saturated one), then
## rate limits (a generous rate against none, how closely a saturated rate is kept), then worker
## metrics (a drain with --metrics-port against one without)
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_workloads.py --write-results
	$(BIN)/python benchmarks/bench_sqlite.py --write-results
	$(BIN)/python benchmarks/bench_fairness.py --write-results
	$(BIN)/python benchmarks/bench_steps.py
	$(BIN)/python benchmarks/bench_workflows.py --write-results
	$(BIN)/python benchmarks/bench_caps.py --write-results
	$(BIN)/python benchmarks/bench_rates.py --write-results
	$(BIN)/python benchmarks/bench_metrics.py --write-results

## bench-peers: the same workload on stagecrew and its peers, each peer in a venv of its own
## (PEERS_ARGS=--quick for a short run)
PEERS_ARGS ?= --write-results
bench-peers: $(VENV)/.installed
	$(BIN)/python benchmarks/peers/run.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info stagecrew-demo.db*
