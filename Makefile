# voxid: `make demo` runs the whole pipeline on a built-in corpus; `make test` runs the suite.
# Both set everything up first (Debian packages, .venv, torch CPU, voxid).
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?=
SHARED ?= ../shared/data

.PHONY: setup demo test test-fast bench lint format clean

setup:
	@bash scripts/setup.sh

demo: setup
	@DATA="$(DATA)" bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -x -m "not slow and not browser"

bench: setup
	@# The peer encoder (Resemblyzer) for the comparison rows; --no-deps keeps pip from
	@# swapping the CPU torch for a CUDA build. webrtcvad-wheels provides its webrtcvad.
	@$(PY) -c "import resemblyzer" 2>/dev/null || \
		($(VENV)/bin/pip install -q webrtcvad-wheels && $(VENV)/bin/pip install -q --no-deps resemblyzer)
	$(PY) bench/run_all.py --data $(SHARED)

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts

format: setup
	$(VENV)/bin/ruff format src tests bench scripts
	$(VENV)/bin/ruff check --fix src tests bench scripts

clean:
	rm -rf demo runs reports .pytest_cache
