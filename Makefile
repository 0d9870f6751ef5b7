# Two commands do everything on a fresh machine:
#   make demo   set up, then fine-tune + cook soups + evaluate on ../shared/datasets/ich-mekong,
#               publish the predictions as a knowledge graph and serve the explorer on it
#   make test   set up, then run the test suite
# make docs builds the documentation site (mkdocs.yml, docs/) into site/.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build to install; override for your platform, e.g. make test TORCH="torch torchvision"
TORCH  ?= torch==2.14.1 torchvision==0.29.1
DATA   ?= ../shared/datasets/ich-mekong
OUT    ?= runs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint docs bench tables peer-venv clean

$(BIN)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,lite12]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/heritage demo $(DATA) --out $(OUT) $(DEMO_ARGS)

test: setup
	HERITAGE_NO_PROGRESS=1 $(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	HERITAGE_NO_PROGRESS=1 $(BIN)/pytest -q -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks tools

# Strict: any warning (a broken link or anchor, a page missing from the nav) fails the build.
# NO_MKDOCS_2_WARNING silences Material's end-of-life banner, which is not a build warning.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: setup
	$(BIN)/python benchmarks/soups.py
	$(BIN)/python benchmarks/tables.py

# AutoGluon, the multimodal benchmark's AutoML peer, in its own environment (it pins pandas < 2.4)
peer-venv:
	test -d .venv-peer || $(PYTHON) -m venv .venv-peer
	.venv-peer/bin/pip install -q "autogluon.tabular[lightgbm]==1.6.3"

tables: setup
	$(BIN)/python benchmarks/tables.py

clean:
	rm -rf $(VENV) .venv-peer runs site .pytest_cache .ruff_cache
