# dprope developer commands. `make install` then `make test` is the whole set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.DEFAULT_GOAL := help
.PHONY: help install install-gpu test test-slow test-all test-gpu demo analyze reproduce bench bench-train gpu-check gpu-wheels lint format clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: ## create $(VENV) and install pinned requirements and dprope (editable)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first: DeepSpeed's source build imports the installed torch (no build isolation)
	$(PIP) install -q $$(grep -E '^torch==' requirements.txt)
	$(PIP) install -q --no-build-isolation -r requirements.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .

install-gpu: install ## `install` plus the CUDA extras (.[gpu]): liger-kernel, and flash-attn compiled for this machine's GPUs
	# flash-attn's build imports the installed torch (no build isolation); it compiles for the GPUs
	# present only (FLASH_ATTN_CUDA_ARCHS) with as many jobs as free memory allows (MAX_JOBS)
	build_env=$$($(PY) scripts/flash_attn_build_env.py) && \
	env $$build_env $(PIP) install --no-build-isolation -e ".[gpu]"

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

demo: ## = python launch/train.py: fine-tune the tiny model with DPRoPE (GPU when present), export it (outputs/train/demo_tiny_dprope_s4.0)
	$(PY) launch/train.py

analyze: ## rotary-angle disturbance table for LLaMA-2-7B at s=4
	$(PY) launch/analyze.py model=llama2_7b rope=dprope rope.factor=4

reproduce: ## the paper's comparison at small scale, end to end (CPU preset; ARGS="reproduce=gpu" on a GPU)
	$(PY) launch/reproduce.py $(ARGS)

bench: ## benchmark scripts (each prints a table)
	$(PY) scripts/bench_analysis.py
	$(PY) scripts/bench_data.py --quick

bench-train: ## training speed and memory, HF Trainer vs dprope (GPU; ARGS="--smoke" on CPU)
	$(PY) scripts/bench_train.py $(ARGS)

# gpu-check runs on a machine where torch comes preinstalled: .venv's python when there is one
GPU_CHECK_PYTHON ?= $(shell test -x $(PY) && echo $(PY) || echo python3)
GPU_CHECK_OUT ?= outputs/gpu_check

gpu-check: ## the whole GPU surface in <= 8 minutes on one H100/H200, summary in $(GPU_CHECK_OUT) (ARGS="--dry-run" on CPU)
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --output $(GPU_CHECK_OUT) $(ARGS)

gpu-wheels: ## on a machine with network: the wheels gpu-check may lack, into wheels/ (ARGS="--python-version 3.12")
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --download-wheels wheels $(ARGS)

lint: ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: ## ruff fix and format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: ## remove caches and run outputs (keeps $(VENV))
	rm -rf outputs multirun .pytest_cache .ruff_cache
