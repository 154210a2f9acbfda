# voxid: `make demo` runs the whole pipeline on a built-in corpus; `make test` runs the suite.
# Both set everything up first (Debian packages, .venv, torch CPU, voxid).
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?=
SHARED ?= ../shared/data

.PHONY: setup demo test test-fast bench base-model lint format clean

setup:
	@bash scripts/setup.sh

demo: setup
	@DATA="$(DATA)" bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -x -m "not slow and not browser"

bench: setup
	$(PY) bench/run_all.py --data $(SHARED)

# Rebuild the shipped base encoder (src/voxid/pretrained/) from $(SHARED): hours on 2 cores;
# run it again after an interruption and it resumes. See src/voxid/pretrained/MODEL_CARD.md.
base-model: setup
	@SHARED="$(SHARED)" bash scripts/base_model.sh

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts

format: setup
	$(VENV)/bin/ruff format src tests bench scripts
	$(VENV)/bin/ruff check --fix src tests bench scripts

clean:
	rm -rf demo runs reports .pytest_cache
