"""Verdicts come from figures: limits, the binding one, lower bounds, no evidence."""

from __future__ import annotations

import math

from trio_tradovate.certify.model import (
    CriterionSpec,
    Figure,
    Section,
    Verdict,
    judge,
)

SPEC = CriterionSpec("x.y", Section.LOGIN, "text", "when")


def test_the_tighter_limit_decides() -> None:
    assert Figure("t", 2.6, stage2=30.0, engine=2.5).binding == 2.5
    assert not Figure("t", 2.6, stage2=30.0, engine=2.5).ok
    assert Figure("t", 2.5, stage2=30.0, engine=2.5).ok
    assert not Figure("auth", 2.01, stage2=2.0, engine=10.0).ok


def test_lower_bounds_and_missing_values() -> None:
    assert Figure("n", 3, unit="", engine=3, lower=True).ok
    assert not Figure("n", 2, unit="", engine=3, lower=True).ok
    assert not Figure("t", math.inf, stage2=5.0).ok  # nothing measured is never within
    assert Figure("info", 1.0).ok
    assert not Figure("info", math.inf).ok


def test_judge_passes_only_on_evidence_that_holds() -> None:
    assert judge(SPEC, "s", [Figure("t", 1.0, stage2=5.0)]).verdict is Verdict.PASS
    assert judge(SPEC, "s", [Figure("t", 6.0, stage2=5.0)]).verdict is Verdict.FAIL
    assert judge(SPEC, "s", checks=[("a", True), ("b", False)]).verdict is Verdict.FAIL
    empty = judge(SPEC, "s")
    assert empty.verdict is Verdict.FAIL
    assert "no evidence" in empty.detail


def test_figure_text_and_dict_show_both_limits() -> None:
    figure = Figure("connection time", 0.25, stage2=5.0, engine=4.0)
    assert "Stage 2 <= 5.000 s" in figure.text()
    assert "engine <= 4.000 s" in figure.text()
    assert figure.as_dict()["within"] is True
    assert Figure("t", math.inf, stage2=1.0).as_dict()["value"] is None
