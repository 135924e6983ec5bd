# Every target builds its own .venv from pyproject.toml on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck diagrams bench soak clean certify coverage-matrix

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache certification
