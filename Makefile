# The README's two commands. Each sets up .venv on a fresh machine first.
#   make test    the test suite (CPU; what CI runs)
#   make bench   the benchmark (CPU: quick timing of the torch backend and the baselines)
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints-cpu.txt
STAMP := $(VENV)/.installed
BENCH_ARGS ?=

.PHONY: test bench

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev,triton,numba,cuda]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q -n auto

bench: $(STAMP)
	$(PY) -m mglu bench $(BENCH_ARGS)
