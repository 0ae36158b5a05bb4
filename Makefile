# `make test` and `make demo` install the pinned stack into .venv when it is
# missing or when requirements/ or setup.py changed; otherwise they start at once.
#
# Install modes (docs/install.md):
#   make install WHEELHOUSE=DIR  only from the wheels in DIR, no index (`make wheelhouse WHEELHOUSE=DIR` makes them)
#   make install OWN_TORCH=1     keep the torch/torchvision/numpy of $(PYTHON)'s environment
#   make test PYTHON=python3.9 TORCH=2.1.2
#                                one combination of the tested matrix, in a venv of its
#                                own (.venv-py3.9-torch2.1.2), mmcv built once for it
#   make install STACK=onedl     the OneDL fork of the OpenMMLab stack, into .venv-onedl
#                                (make test STACK=onedl runs the suite there)
SHELL := /bin/bash
PYTHON ?= python3.11
STACK ?= openmmlab
TORCH ?=
ifneq ($(TORCH),)
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ifeq ($(PYVER),)
$(error PYTHON=$(PYTHON) does not run: name an interpreter, e.g. PYTHON=$$(pyenv root)/versions/3.9.18/bin/python)
endif
endif
ifeq ($(STACK),openmmlab)
VENV := $(if $(TORCH),.venv-py$(PYVER)-torch$(TORCH),.venv)
STACK_REQS := requirements
else ifeq ($(STACK),onedl)
VENV := .venv-onedl
STACK_REQS := requirements/onedl
else
$(error STACK=$(STACK): choose openmmlab (the default) or onedl)
endif
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mmspm-installed
# Parallel compile jobs for mmcv's ops: one per core plus one to cover I/O.
MAX_JOBS ?= $(shell echo $$(( $$(nproc) + 1 )))
WHEELHOUSE ?=
OWN_TORCH ?=
SOURCE := $(if $(WHEELHOUSE),--no-index --find-links $(abspath $(WHEELHOUSE)))
ifeq ($(OWN_TORCH),1)
VENV_FLAGS := --system-site-packages
endif
ifneq ($(OWN_TORCH)$(TORCH),)
PIN := -c $(VENV)/torch-constraints.txt
TORCH_REQS :=
else
PIN := -c requirements/torch.txt
TORCH_REQS := -r requirements/torch.txt
endif
# mmcv 2.1.0 has no wheel for this Python/torch: it is built with its ops (CUDA
# ops only where a GPU and nvcc exist, otherwise RoIAlign fails on the GPU).
# ninja (from requirements/build.txt, on PATH) compiles MAX_JOBS files at a
# time; -g0 drops the debug information Python's own CFLAGS ask for (same code,
# a quicker build and a smaller library).
# torch >= 2.14's headers need C++20, which mmcv 2.1.0's setup.py does not ask
# for: its C++ compiler is then requirements/cxx20.
MMCV_BUILD := if command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "mmcv: GPU and nvcc found, building CPU and CUDA ops"; export FORCE_CUDA=1; fi; \
	if $(PY) -c 'import sys, torch; sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 14))'; then \
	  export CXX="$(CURDIR)/requirements/cxx20"; fi; \
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" MAX_JOBS=$(MAX_JOBS) CFLAGS=-g0 MMCV_WITH_OPS=1

MMCV_WHEELS := .wheels/py$(PYVER)-torch$(TORCH)

PURELIB = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# mmengine resolves a config base `mmseg::...` through the distribution
# `mmsegmentation` or, failing that, a module of that name; the fork's
# distribution is onedl-mmsegmentation. A link named mmsegmentation to the
# installed mmseg lets it find mmseg's configs (docs/install.md).
SCOPE_LINK = ln -sfn mmseg "$(PURELIB)/mmsegmentation"

.PHONY: install wheelhouse lint test demo benchmark

install: $(STAMP)

$(STAMP): $(wildcard requirements/* $(STACK_REQS)/*) setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PIP) install -q $(SOURCE) -r requirements/build.txt
	$(if $(TORCH),$(PIP) install -q $(SOURCE) $$($(PY) requirements/check_torch.py --pins $(TORCH)))
	$(if $(OWN_TORCH)$(TORCH),$(PY) requirements/check_torch.py > $(VENV)/torch-constraints.txt)
	@# build.txt again: without torch in this resolver call (OWN_TORCH, TORCH)
	@# openmim's openxlab would take setuptools below what torch and mmcv's build need.
	$(PIP) install -q $(SOURCE) $(PIN) $(TORCH_REQS) -r requirements/build.txt -r $(STACK_REQS)/runtime.txt
	@# From WHEELHOUSE: its mmcv wheel. Otherwise built from source (about 8
	@# minutes on 2 cores the first time, 35 for the fork's; pip caches the wheel).
	@# pip's cache does not tell torch versions apart, so with TORCH the wheel
	@# is built into $(MMCV_WHEELS), once per combination, and taken from there.
	$(if $(TORCH),test -n "$$(ls $(MMCV_WHEELS)/*.whl 2>/dev/null)" || { $(MMCV_BUILD) $(PIP) wheel -q --no-deps --no-build-isolation --no-cache-dir -w $(MMCV_WHEELS) $(PIN) -r $(STACK_REQS)/mmcv.txt; })
	$(MMCV_BUILD) $(PIP) install -q $(SOURCE) $(if $(TORCH),--find-links $(MMCV_WHEELS)) --no-build-isolation $(PIN) -r $(STACK_REQS)/mmcv.txt
	@$(PY) -c 'import mmcv.ops' 2>/dev/null || { echo "mmcv's ops do not load with this torch: the mmcv wheel was built for another torch/CUDA. Make the wheelhouse with the same torch (make wheelhouse), or install without WHEELHOUSE to build mmcv here."; exit 1; }
	$(PIP) install -q $(SOURCE) $(PIN) -r $(STACK_REQS)/openmmlab.txt -r requirements/deploy.txt -r requirements/tests.txt
	$(PIP) install -q $(SOURCE) --no-build-isolation --no-deps -e .
	@# `mim search` (and mim's other package lookups) expect the package at
	@# site-packages/mmspm, which an editable install does not create: link it
	@# to the source tree, as `setup.py develop` used to.
	ln -sfn "$(CURDIR)/mmspm" "$(PURELIB)/mmspm"
	$(if $(filter onedl,$(STACK)),$(SCOPE_LINK))
	@touch $@

# Every wheel the stack needs for this Python, torch and CUDA, mmcv as the
# wheel built by the install (from pip's cache; rebuilt if it is not there).
wheelhouse: install
	@test -n "$(WHEELHOUSE)" || { echo "say where: make wheelhouse WHEELHOUSE=DIR"; exit 1; }
	$(PIP) wheel -q -w $(WHEELHOUSE) $(PIN) -r requirements/build.txt $(TORCH_REQS) \
	  -r $(STACK_REQS)/runtime.txt -r $(STACK_REQS)/openmmlab.txt -r requirements/deploy.txt -r requirements/tests.txt
	$(MMCV_BUILD) $(PIP) wheel -q --no-deps --no-build-isolation -w $(WHEELHOUSE) $(PIN) -r $(STACK_REQS)/mmcv.txt
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE) | wc -l) wheels for $$($(PY) -c 'import sys, torch; print(f"Python {sys.version_info[0]}.{sys.version_info[1]}, torch {torch.__version__}, CUDA {torch.version.cuda}")'); install with: make install WHEELHOUSE=$(WHEELHOUSE)"

# ruff (ruff.toml): errors, warnings, unused names, import order, 100 columns.
lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -q --durations=15 tests

demo: install
	$(PY) tools/demo.py

benchmark: install
	$(PY) tools/analysis/benchmark.py
