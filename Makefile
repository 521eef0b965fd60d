# One place for the fresh-machine commands the README and CI use.
#   make demo   set up .venv and run the whole pipeline on the built-in toy preset
#   make test   set up .venv (and headless Chromium) and run the test suite
#   make lint   ruff check + ruff format --check
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, or pip picks it for the package. Which build depends on the index: on a CPU-only
	# machine with the public PyPI, give TORCH_INDEX=https://download.pytorch.org/whl/cpu (README).
	$(BIN)/pip install -q --no-compile torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# The rest with uv, which downloads, installs and writes bytecode in parallel (~25 s where pip
	# took ~90 s on this project's 2-core machines). uv reads none of pip's settings: where only pip
	# can reach the index (a proxy set in pip.conf), pip does it.
	$(BIN)/pip install -q --no-compile uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e '.[dev]' \
		|| $(BIN)/pip install -q -e '.[dev]'
	# torch's bytecode, which pip left out above, on every core. The exit status is 1 for the few
	# files written for newer Pythons (torch's py312_intrinsics.py), which pip skips as well:
	# bytecode is a cache, so nothing here is fatal.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

setup: $(STAMP)

browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: setup
	$(BIN)/tracerflow demo

# Two workers, one per core of a CI machine; whole modules per worker (tests/conftest.py).
# torch at one thread in every test process: two workers (and the processes they start) on two
# cores are busy already, and a second OpenMP thread each mostly waits (9% less CPU, measured on
# the attribution, scoring and toy-score tests).
test: setup browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
