# `make test` and `make demo` install the pinned stack into .venv when it is
# missing or when requirements/ or setup.py changed; otherwise they start at once.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mmspm-installed
PIN := -c requirements/torch.txt
# Parallel compile jobs for mmcv's ops: one per core plus one to cover I/O.
MAX_JOBS ?= $(shell echo $$(( $$(nproc) + 1 )))

.PHONY: install test demo benchmark clean-demo

install: $(STAMP)

$(STAMP): $(wildcard requirements/*.txt) setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements/build.txt
	$(PIP) install -q -r requirements/torch.txt
	@# mmcv has no wheel for this Python/torch: build it with its ops (CUDA ops
	@# only where a GPU and nvcc exist, otherwise RoIAlign fails on the GPU).
	@# ninja (from requirements/build.txt, on PATH) compiles MAX_JOBS files at a
	@# time; -g0 drops the debug information Python's own CFLAGS ask for (same
	@# code, a quicker build and a smaller library).
	@if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "mmcv: GPU and nvcc found, building CPU and CUDA ops"; export FORCE_CUDA=1; \
	else echo "mmcv: no GPU/nvcc, building CPU ops (about 8 minutes the first time)"; fi; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" MAX_JOBS=$(MAX_JOBS) CFLAGS=-g0 MMCV_WITH_OPS=1 \
	  $(PIP) install -q --no-build-isolation $(PIN) -r requirements/mmcv.txt
	$(PIP) install -q $(PIN) -r requirements/openmmlab.txt -r requirements/tests.txt
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@# `mim search` (and mim's other package lookups) expect the package at
	@# site-packages/mmspm, which an editable install does not create: link it
	@# to the source tree, as `setup.py develop` used to.
	ln -sfn "$(CURDIR)/mmspm" "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mmspm"
	@touch $@

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) tools/demo.py

benchmark: install
	$(PY) tools/analysis/benchmark.py
