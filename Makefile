# Every target builds its own .venv from pyproject.toml on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck diagrams bench soak clean certify coverage-matrix test-matrix

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trio-tradovate demo --duration 20

test: $(STAMP)
	$(BIN)/python -m pytest -q

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

diagrams: $(STAMP)
	$(BIN)/trio-tradovate diagram --write statecharts

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak --run-soak -o faulthandler_timeout=0

# `certify`: Tradovate's Stage 2 tests against the embedded simulator; the evidence pack goes
# to certification/ (docs/certification.md). The extra installs matplotlib for the chart image.
CERTIFY_STAMP := $(VENV)/.certify-installed

$(CERTIFY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,certify]'
	touch $(CERTIFY_STAMP)

certify: $(CERTIFY_STAMP)
	$(BIN)/trio-tradovate certify --target sim --out certification

# The transition-coverage matrix of the whole test suite (what no test ever exercised).
coverage-matrix: $(STAMP)
	$(BIN)/python -m pytest -q -p trio_tradovate.certify.pytest_plugin \
		--transition-coverage=certification/test-suite-coverage.md

# The dependency matrix (CI runs it after `make test`): the whole suite against the lowest versions
# pyproject.toml allows and against the newest, on Python 3.11 and 3.13, each cell in its own
# venv under .venvs/ made from scratch (.ci/matrix-cell). PY311/PY313 name the interpreters;
# by default .ci/find-python looks for them (3.13 first at the pyenv path CI's image has).
PY311 ?= $(shell bash .ci/find-python 3.11)
PY313 ?= $(shell bash .ci/find-python 3.13)
MATRIX := py311-lowest py311-newest py313-lowest py313-newest

test-matrix: $(addprefix test-matrix-,$(MATRIX))

test-matrix-py311-%:
	@test -n "$(PY311)" || { echo "test-matrix: no Python 3.11 (set PY311=/path/to/python3.11)"; exit 1; }
	bash .ci/matrix-cell "$(PY311)" $* py311-$*

test-matrix-py313-%:
	@test -n "$(PY313)" || { echo "test-matrix: no Python 3.13 (set PY313=/path/to/python3.13)"; exit 1; }
	bash .ci/matrix-cell "$(PY313)" $* py313-$*

clean:
	rm -rf $(VENV) .venvs .pytest_cache .mypy_cache .ruff_cache certification
