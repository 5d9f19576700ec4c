PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install run test lint clean bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/keel migrate
	$(BIN)/keel serve

test: install lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check app steps workflows tests bench migrations

clean:
	-$(BIN)/keel stop-database
	rm -rf $(VENV) .keel

# The benchmark suite (issue 8): writes docs/benchmarks.md. `make bench QUICK=1` for a fast smoke run.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	PYTHONPATH=. $(BIN)/python -m bench.suite $(if $(QUICK),--quick,) $(BENCH_ARGS)
