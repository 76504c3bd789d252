# make demo | make test | make bench -- each creates .venv and installs the project first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.farslip-installed

.PHONY: setup demo test test-slow bench clean

$(STAMP): requirements.txt requirements-test.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m farslip demo

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) scripts/bench.py all

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache demo_out
