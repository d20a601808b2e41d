# dprope developer commands. `make install` then `make test` is the whole set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.DEFAULT_GOAL := help
.PHONY: help install install-gpu test test-slow test-all test-gpu demo analyze reproduce bench bench-train lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: ## create $(VENV) and install pinned requirements and dprope (editable)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first: DeepSpeed's source build imports the installed torch (no build isolation)
	$(PIP) install -q $$(grep -E '^torch==' requirements.txt)
	$(PIP) install -q --no-build-isolation -r requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .

install-gpu: install ## `install` plus the CUDA extras (.[gpu]): liger-kernel, and flash-attn compiled from source
	# flash-attn's build imports the installed torch (no build isolation); MAX_JOBS bounds the compiler's memory
	MAX_JOBS=$${MAX_JOBS:-4} $(PIP) install --no-build-isolation -e ".[gpu]"

# pytest exits 5 when a marker selection holds no test: not a failure here. --durations lists
# the slowest tests after each run, so a test that grows slow shows.
PYTEST = $(PY) -m pytest -q -p no:cacheprovider --durations=20
# the fast tier runs on TEST_WORKERS processes (pytest-xdist), each test file on one of them
TEST_WORKERS ?= 2

test: ## fast test suite (no `slow`, no `gpu`), on TEST_WORKERS processes
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile -m "not slow and not gpu" || [ $$? -eq 5 ]

test-slow: ## the slow end-to-end tests
	$(PYTEST) -m "slow and not gpu" || [ $$? -eq 5 ]

test-gpu: ## the GPU tests (`gpu` marker; skipped without CUDA)
	$(PYTEST) -m gpu || [ $$? -eq 5 ]

test-all: ## every test this machine can run
	$(PYTEST) -m "not gpu" || [ $$? -eq 5 ]

demo: ## the main job on the embedded default: fine-tune the tiny model with DPRoPE on CPU, export it
	DS_ACCELERATOR=$${DS_ACCELERATOR:-cpu} $(PY) launch/train.py trainer.output_dir=outputs/demo

analyze: ## rotary-angle disturbance table for LLaMA-2-7B at s=4
	$(PY) launch/analyze.py model=llama2_7b rope=dprope rope.factor=4

reproduce: ## the paper's comparison at small scale, end to end (CPU preset; ARGS="reproduce=gpu" on a GPU)
	DS_ACCELERATOR=$${DS_ACCELERATOR:-cpu} $(PY) launch/reproduce.py $(ARGS)

bench: ## benchmark scripts (each prints a table)
	$(PY) scripts/bench_analysis.py
	$(PY) scripts/bench_data.py --quick

bench-train: ## training speed and memory, HF Trainer vs dprope (GPU; ARGS="--smoke" on CPU)
	$(PY) scripts/bench_train.py $(ARGS)

lint: ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: ## ruff fix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: ## remove caches and run outputs (keeps $(VENV))
	rm -rf outputs multirun .pytest_cache .ruff_cache
