# Stable Diffusion from the inside: `make lab` to study, `make test` to verify.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
KERNEL := sd-course
MY := my_notebooks
NB := $(sort $(wildcard notebooks/*.ipynb))
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg
# both cores: two workers, the units planned longest first in conftest.py (COST)
XDIST := -n 2
export PYTHONHASHSEED := 0

.PHONY: help setup lab my-notebooks test unit notebooks lint format execute slides slides-check slides-pdf train-mini bench bench-mini clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv, install course_utils with its pinned deps, register the kernel

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "SD course (course_utils)"
	touch $(STAMP)

lab: setup my-notebooks ## copy the notebooks you don't have yet into my_notebooks/, start JupyterLab there
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=$(MY) $(LAB_ARGS)

my-notebooks: ## copy course notebooks you don't have yet into my_notebooks/ (never overwrites)
	@mkdir -p $(MY)
	@for nb in $(NB); do [ -e "$(MY)/$$(basename $$nb)" ] || cp "$$nb" "$(MY)/"; done
	@echo "Your working copies are in $(MY)/ (never overwritten: delete one to get the course's version back)."

test: setup lint ## unit tests + every notebook twice (nbval, mini-sd fp32; an SD 1.5-shaped model in fp16, cuda-sim)
	$(PY) -m pytest tests notebooks $(NBVAL) $(XDIST) -q

unit: setup ## unit tests only (run 2 of the notebooks included)
	$(PY) -m pytest tests $(XDIST) -q

notebooks: setup ## notebooks only, under nbval
	$(PY) -m pytest notebooks $(NBVAL) $(XDIST) -q

lint: setup ## ruff check + format check over course_utils, tests, scripts and the notebooks
	@start=$$(date +%s); \
	$(VENV)/bin/ruff check conftest.py course_utils tests scripts notebooks && \
	$(VENV)/bin/ruff format --check conftest.py course_utils tests scripts notebooks && \
	echo "lint: $$(( $$(date +%s) - start )) s"

format: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix conftest.py course_utils tests scripts notebooks
	$(VENV)/bin/ruff format conftest.py course_utils tests scripts notebooks

execute: setup ## re-execute the course notebooks in place (committed outputs are real)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.kernel_name=$(KERNEL) --ExecutePreprocessor.timeout=600 \
	  --ExecutePreprocessor.store_widget_state=False $(NB)

slides: setup ## render every notebook to a reveal.js deck in build/slides/
	$(PY) scripts/make_slides.py $(NB) --out build/slides

slides-check: slides ## open every deck in headless Chromium: does every slide fit 1280x720?
	$(PY) scripts/slides_browser.py check build/slides

slides-pdf: slides ## print every deck to PDF handouts in build/slides/pdf/ (headless Chromium)
	$(PY) scripts/slides_browser.py pdf build/slides

train-mini: setup ## train the embedded mini-sd (fixed seed, resumable per stage)
	PYTHONPATH=scripts $(PY) -m mini_sd.train --out course_utils/mini_sd --work runs/mini

bench-mini: setup ## quality and speed table of mini-sd
	PYTHONPATH=scripts $(PY) -m mini_sd.bench --json course_utils/mini_sd/bench.json --card course_utils/mini_sd

bench: setup ## hand-written loop vs pipeline, rewards, and the mini-sd rows
	PYTHONPATH=scripts $(PY) scripts/bench.py

clean: ## remove build outputs and caches (never my_notebooks/ nor .venv)
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
