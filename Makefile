# The README's first two commands: `make demo` and `make test`. Each creates .venv and installs on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.locbench-installed
DEMO_OUT ?= demo-out

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/locbench demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(PY) -m ruff check locbench tests benchmarks
	$(PY) -m ruff format --check locbench tests benchmarks
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff format locbench tests benchmarks
	$(PY) -m ruff check --fix locbench tests benchmarks

test: $(STAMP)
	$(PY) -m ruff check locbench tests benchmarks
	$(VENV)/bin/lint-imports
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup --durations=15 -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
