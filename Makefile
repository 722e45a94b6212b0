# Set-up and everyday commands. Each target creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# What `make demo` and `make test` install is pinned, every package at one version, by this lock
# (`make lock` rewrites it); setup.cfg keeps ranges for those who install feratt as a library.
LOCK ?= constraints.txt
EXTRAS ?= test,onnx,landmarks
# The CPU build of torch lies on this machine's disk; asking for it first keeps pip from pulling a
# multi-gigabyte CUDA build when `torch>=2.1` is resolved without the lock (`make lock`).
TORCH ?= torch==2.13.0
# `make test-latest` resolves everything but torch anew; LATEST_TORCH=torch tries the newest torch too
# (a CUDA build of several GB from PyPI).
LATEST_TORCH ?= $(TORCH)
LATEST_VENV ?= .venv-latest
LOCK_VENV ?= .venv-lock
DEMO_DIR ?= demo
DEMO_EPOCHS ?= 12

.PHONY: help venv demo test lint lock test-latest clean

help:
	@echo "make demo         demo face bank, a render of it, sheets, and a 3-method experiment on one fold, in $(DEMO_DIR)/"
	@echo "make test         the library versions, lint, and the test suite"
	@echo "make lock         resolve the newest releases anew and pin them in $(LOCK)"
	@echo "make test-latest  the test suite in $(LATEST_VENV)/, resolved without the lock (not part of CI)"

$(BIN)/.installed: setup.cfg pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) pip setuptools wheel
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) --no-build-isolation -e ".[$(EXTRAS)]"
	$(BIN)/python -m feratt.environment --lock $(LOCK) --strict
	touch $@

venv: $(BIN)/.installed

demo: venv
	mkdir -p $(DEMO_DIR)
	$(BIN)/feratt faces builtin:demo --out $(DEMO_DIR)/bank.h5 --preview $(DEMO_DIR)/faces.png
	$(BIN)/feratt render $(DEMO_DIR)/bank.h5 --out $(DEMO_DIR)/render --per-face 10 --shard-size 500 \
		--fit-mask 0.05 --rotation 15 --translation 0.1 --no-colour --overwrite
	$(BIN)/feratt inspect $(DEMO_DIR)/render --verify --sheet $(DEMO_DIR)/samples.png
	$(BIN)/feratt experiment $(DEMO_DIR)/render --out $(DEMO_DIR)/experiment --folds 0 \
		--methods baseline,feratt-cls,feratt-rep-cls --preset cpu-small --epochs $(DEMO_EPOCHS) \
		--real-test $(DEMO_DIR)/bank.h5

lint: venv
	$(BIN)/ruff check feratt tests bench
	$(BIN)/ruff format --check feratt tests bench

test: venv
	@$(BIN)/python -m feratt.environment --lock $(LOCK)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -n 2

lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH)" -e ".[$(EXTRAS)]"
	{ echo "# Every package that make demo and make test install, at one version: pip install -c $(LOCK)."; \
	  echo "# Written by make lock on $$(date -u +%F) from setup.cfg's ranges and extras [$(EXTRAS)]; do not edit."; \
	  echo "# torch is the CPU build ($(TORCH)+cpu), taken from this machine's disk."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade "$(LATEST_TORCH)" -e ".[$(EXTRAS)]"
	$(LATEST_VENV)/bin/python -m feratt.environment --lock $(LOCK)
	$(LATEST_VENV)/bin/ruff check feratt tests bench
	$(LATEST_VENV)/bin/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
