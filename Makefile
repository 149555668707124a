# Set-up and entry points. Every target creates .venv on a fresh machine first.
PY := .venv/bin/python
PIP := .venv/bin/pip
DATA ?= ../shared/data

.PHONY: venv demo test test-all lint check bench clean

venv: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,transfer,cluster]'
	touch $@

demo: venv  # the installed command, as a user types it
	PXPRUNE_DATA=$(DATA) .venv/bin/pxprune demo

test: venv
	$(PY) -m pytest

test-all: venv
	$(PY) -m pytest -m ''

lint: venv
	.venv/bin/ruff check src tests benchmarks

check: venv  # the one-minute check: ruff and the fast unit tests (no end-to-end runs; one torch
             # thread: these tiny models run fastest on one, above all on a busy machine)
	.venv/bin/ruff check src tests benchmarks
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/core tests/methods -m 'not slow and not integration'

clean:
	rm -rf .venv build *.egg-info src/*.egg-info
