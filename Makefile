# adabatch — `make demo` (the main job) and `make test` work from a fresh clone.
# Every pip call uses constraints.txt: it pins torch to the CPU build that installs quickly.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIPFLAGS := --disable-pip-version-check -q -c constraints.txt
# Faster conv steps on glibc (fewer mmap/munmap round trips for large activations).
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296

.PHONY: help demo test test-slow bench lint format clean

help:
	@echo "make demo       install into .venv and run the main job (adabatch compare quick)"
	@echo "make test       install into .venv and run the test suite (CI runs this)"
	@echo "make test-slow  also run tests marked slow"
	@echo "make bench      full statistics-overhead benchmark (Opacus, BackPACK included)"
	@echo "make lint       ruff check + format check"
	@echo "make format     ruff format and autofix"

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIPFLAGS) --upgrade pip
	@touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) -e ".[test,dev]"
	@touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(PIP) install $(PIPFLAGS) -e ".[bench]"
	# BackPACK's metadata requires torchvision, which has no CPU build here: install it
	# without dependencies, then the two it really imports.
	$(PIP) install $(PIPFLAGS) --no-deps backpack-for-pytorch
	$(PIP) install $(PIPFLAGS) einops unfoldNd
	@touch $@

$(VENV)/.installed-experiments: $(VENV)/.created pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) -e ".[experiments]"
	@touch $@

# The main job: five methods on generated data, compared (table on stdout, plots in runs/demo).
demo: $(VENV)/.installed-experiments
	$(VENV)/bin/adabatch compare quick --out runs/demo --overwrite

test: $(VENV)/.installed-test
	$(PY) -m pytest -m "not slow" -q

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/stats_overhead.py

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache benchmarks/results
