# Two commands from a fresh clone: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean compiled

run: $(VENV)/.installed compiled
	$(BIN)/faust -A app worker -l info

test: $(VENV)/.installed compiled
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed compiled
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/features.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded,compile]'
	touch $@

# The per-message path compiled with mypyc, in place (exchanges/_native.py): about 40 s when a
# source changed, nothing when the build is current; where it cannot compile, the same modules
# run as pure Python. Measured gain (bench/parse.py, compiled/pure msg/s): 1.09-1.37x on the
# compiled venues, 1.19x geometric mean of all 11; README, "Benchmarks".
compiled: $(VENV)/.installed
	$(BIN)/python exchanges/_native.py build

clean:
	rm -rf $(VENV) data build .mypy_cache exchanges/*.so exchanges/_native.stamp
