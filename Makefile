# `make test` and `make demo` install the pinned stack into .venv when it is
# missing or when requirements/ or setup.py changed; otherwise they start at once.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mmspm-installed
PIN := -c requirements/torch.txt

.PHONY: install test demo benchmark clean-demo

install: $(STAMP)

$(STAMP): $(wildcard requirements/*.txt) setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/build.txt
	$(PIP) install -q -r requirements/torch.txt
	@# mmcv has no wheel for this Python/torch: build it with its ops (CUDA ops
	@# only where a GPU and nvcc exist, otherwise RoIAlign fails on the GPU).
	@if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "mmcv: GPU and nvcc found, building CPU and CUDA ops"; export FORCE_CUDA=1; \
	else echo "mmcv: no GPU/nvcc, building CPU ops (about 10 minutes the first time)"; fi; \
	MMCV_WITH_OPS=1 $(PIP) install -q --no-build-isolation $(PIN) -r requirements/mmcv.txt
	$(PIP) install -q $(PIN) -r requirements/openmmlab.txt -r requirements/tests.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) tools/demo.py

benchmark: install
	$(PY) tools/analysis/benchmark.py
