# Two entry points for a fresh machine: `make quickstart` (install + end-to-end run ending in PDF reports)
# and `make test` (install + the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned, so that `pip install .` finds it satisfied and does not pull a
# multi-GB CUDA build on CPU machines; override e.g. TORCH_SPEC="torch" on a GPU machine.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install quickstart test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(PY) examples/quickstart/quickstart.py

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
