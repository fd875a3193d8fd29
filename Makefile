# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs edgeprune[train], gets Fashion-MNIST, runs the experiment
#   make test   creates .venv, installs edgeprune[train,dev], runs the test suite
#   make docs   builds the docs site into build/site with --strict (mkdocs.yml)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ARGS ?= --epochs 6 --out runs/demo

.PHONY: demo test lint docs data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@

# Debian ships real Fashion-MNIST; elsewhere edgeprune downloads it from the Hugging Face hub.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "could not install dataset-fashion-mnist; edgeprune will try the Hugging Face hub"; \
	fi

demo: $(VENV)/.installed data
	$(VENV)/bin/edgeprune experiment --dataset fashion-mnist $(DEMO_ARGS)

test: $(VENV)/.installed data
	$(PY) -m pytest -q

# --strict: a broken link, a page left out of the nav or a documented object without a docstring fails
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check edgeprune tests benchmarks deploy

clean:
	rm -rf $(VENV) build *.egg-info
