"""The declared statechart: table-driven, guarded, recorded, and drawn from the same table."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from trio_tradovate.errors import InvalidTransition
from trio_tradovate.statechart import (
    DIAGRAM_FILES,
    TRANSITIONS,
    State,
    Statechart,
)

STATECHARTS = Path(__file__).resolve().parents[2] / "statecharts"


class Budget:
    def __init__(self, exhausted: bool) -> None:
        self.exhausted = exhausted

    def retry_budget_exhausted(self) -> bool:
        return self.exhausted


def make(exhausted: bool = False) -> Statechart:
    ticks = itertools.count()
    return Statechart(clock=lambda: float(next(ticks)), policy=Budget(exhausted))


def test_happy_path_and_records() -> None:
    chart = make()
    for trigger in ["start", "opened", "authorized", "synced"]:
        chart.fire(trigger, reason=f"because {trigger}", generation=1)
    assert chart.state is State.LIVE
    assert [(r.seq, r.source, r.dest) for r in chart.records] == [
        (1, State.DISCONNECTED, State.CONNECTING),
        (2, State.CONNECTING, State.AUTHENTICATING),
        (3, State.AUTHENTICATING, State.SYNCING),
        (4, State.SYNCING, State.LIVE),
    ]
    assert chart.records[-1].reason == "because synced"
    assert chart.records[-1].generation == 1
    assert [r.time for r in chart.records] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("setup", "trigger"),
    [
        ([], "synced"),
        ([], "retry"),
        (["start"], "authorized"),
        (["start", "close"], "start"),
        (["start", "close"], "close"),
        ([], "no_such_trigger"),
    ],
)
def test_invalid_trigger_raises_and_leaves_state_unchanged(setup: list[str], trigger: str) -> None:
    chart = make()
    for name in setup:
        chart.fire(name, reason="")
    before, records = chart.state, list(chart.records)
    with pytest.raises(InvalidTransition):
        chart.fire(trigger, reason="")
    assert chart.state is before
    assert chart.records == records


def test_guard_picks_the_row() -> None:
    retrying = make(exhausted=False)
    retrying.fire("start", reason="")
    assert retrying.fire("connect_failed", reason="dns").dest is State.BACKOFF
    stopping = make(exhausted=True)
    stopping.fire("start", reason="")
    assert stopping.fire("connect_failed", reason="dns").dest is State.STOPPED


def test_every_table_row_is_reachable_by_its_trigger() -> None:
    for row in TRANSITIONS:
        for source in row.source:
            chart = make(exhausted=row.guard is not None)
            chart.state = source  # set up directly; the machine reads this attribute
            assert chart.fire(row.trigger, reason="").dest is row.dest


def test_stopped_is_terminal() -> None:
    chart = make()
    chart.fire("close", reason="")
    assert chart.allowed_triggers() == []


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_tradovate.transitions")
    chart = make()
    chart.fire("start", reason="opened by test", generation=3)
    [record] = [r for r in caplog.records if r.name == "trio_tradovate.transitions"]
    assert "disconnected -> connecting" in record.getMessage()
    assert "opened by test" in record.getMessage()
    assert record.transition["generation"] == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(DIAGRAM_FILES))
def test_committed_diagrams_match_the_table(name: str) -> None:
    committed = (STATECHARTS / name).read_text()
    assert committed == DIAGRAM_FILES[name](), f"run `make diagrams` to regenerate {name}"


def test_diagrams_name_every_row() -> None:
    mermaid = DIAGRAM_FILES["connection.mmd"]()
    for row in TRANSITIONS:
        for source in row.source:
            assert f"{source.name} --> {row.dest.name}: {row.trigger}" in mermaid
