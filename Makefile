# Thin entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench docs lint typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)  ## run the test suite against a real redis-server
	$(BIN)/python -m pytest

demo: $(STAMP)  ## run the original repocket tutorial end to end
	$(BIN)/python examples/tutorial.py

bench: $(STAMP)  ## repocket vs hand-written redis-py on one real server
	$(BIN)/python -m benchmarks

docs: $(STAMP)  ## build the Sphinx docs, warnings are errors
	$(BIN)/python -m sphinx -W -n --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check repocket tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy repocket

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis .mypy_cache .ruff_cache
