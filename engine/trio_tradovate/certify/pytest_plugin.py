"""Transition coverage of a test suite: which declared moves and cells the tests reached.

Load it with ``-p trio_tradovate.certify.pytest_plugin`` and name the output with
``--transition-coverage=PATH`` (or the ``TRIO_TRADOVATE_TRANSITION_COVERAGE`` environment
variable); ``make coverage-matrix`` does both. Every ``Statechart`` any test creates reports
through the :data:`~trio_tradovate.statechart.FIRE_OBSERVERS` hook, and at the end of the
session the matrix is written as Markdown to ``PATH`` and as JSON beside it (``PATH`` with
``.json``), so an auditor sees what no test ever exercised. Without the option the plugin
does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from .coverage import Coverage

ENV_VAR = "TRIO_TRADOVATE_TRANSITION_COVERAGE"
_KEY = pytest.StashKey[tuple[Coverage, Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transition-coverage",
        metavar="PATH",
        default=None,
        help=f"write the statechart transition-coverage matrix to PATH (or set {ENV_VAR})",
    )


def pytest_configure(config: pytest.Config) -> None:
    target = config.getoption("--transition-coverage") or os.environ.get(ENV_VAR)
    if not target:
        return
    from ..statechart import FIRE_OBSERVERS

    coverage = Coverage()
    FIRE_OBSERVERS.append(coverage.observe)
    config.stash[_KEY] = (coverage, Path(target))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Label what the test fires with its module (``tests/engine/test_x.py``)."""
    found = item.config.stash.get(_KEY, None)
    if found is None:
        return (yield)
    coverage = found[0]
    coverage.label = item.nodeid.split("::", 1)[0]
    try:
        return (yield)
    finally:
        coverage.label = None


def pytest_unconfigure(config: pytest.Config) -> None:
    found = config.stash.get(_KEY, None)
    if found is None:
        return
    coverage, path = found
    from ..statechart import FIRE_OBSERVERS

    if coverage.observe in FIRE_OBSERVERS:
        FIRE_OBSERVERS.remove(coverage.observe)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Transition coverage of the test suite",
        "",
        "Every (node, trigger) cell and every declared move of the statecharts, and how often "
        "the tests fired it. `never` marks what no test exercised.",
        "",
        *coverage.markdown(),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_suffix(".json").write_bytes(
        orjson.dumps(coverage.as_dict(), option=orjson.OPT_INDENT_2)
    )
