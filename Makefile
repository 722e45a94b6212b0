# Set-up and everyday commands. Each target creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; asking for it first keeps pip from
# pulling a multi-gigabyte CUDA build when the package's own `torch>=2.1` is resolved.
TORCH ?= torch==2.13.0
DEMO_DIR ?= demo
DEMO_EPOCHS ?= 12

.PHONY: help venv demo test lint clean

help:
	@echo "make demo   demo face bank, a render of it, sheets, and a 3-method experiment on one fold, in $(DEMO_DIR)/"
	@echo "make test   lint and run the test suite"

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,onnx]"
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

test: lint
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
