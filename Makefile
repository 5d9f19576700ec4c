PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test test-fast lint clean bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/keel migrate
	$(BIN)/keel serve

# The whole suite, every tier. PYTEST_ARGS="-n 2" runs it on two pytest workers (a database and a worker process each).
test: install lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The fast tier: in-process tests only (no worker, no model server, no browser), under a minute.
test-fast: install
	$(BIN)/pytest -m unit -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app steps workflows tests bench migrations

clean:
	-$(BIN)/keel stop-database
	rm -rf $(VENV) .keel

# The benchmark suite (issues 8 and 14, about an hour): writes docs/benchmarks.md. `make bench QUICK=1` for a fast smoke run.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	PYTHONPATH=. $(BIN)/python -m bench.suite $(if $(QUICK),--quick,) $(BENCH_ARGS)
