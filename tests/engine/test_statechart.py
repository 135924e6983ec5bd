"""The declared statecharts: total, typed, guarded, recorded, and drawn from the same tables."""

from __future__ import annotations

import enum
import itertools
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from trio_tradovate.statechart import (
    CONNECTION_TABLE,
    DIAGRAM_FILES,
    PENALTY_TABLE,
    Guard,
    Node,
    Outcome,
    PenaltyNode,
    PenaltyTrigger,
    Rule,
    State,
    Statechart,
    Table,
    TransitionRecord,
    Trigger,
    matrix,
)

STATECHARTS = Path(__file__).resolve().parents[2] / "statecharts"
TABLES = [CONNECTION_TABLE, PENALTY_TABLE]


class Guards:
    """A policy that answers each guard from a fixed set of those that hold."""

    def __init__(self, holding: frozenset[Guard] = frozenset()) -> None:
        self.holding = holding
        self.asked: list[tuple[Guard, object]] = []

    def check(self, guard: Guard, event: object) -> bool:
        self.asked.append((guard, event))
        return guard in self.holding


RECORDS: list[TransitionRecord] = []


def make(
    holding: frozenset[Guard] | Guards = frozenset(), table: Table[Any, Any] = CONNECTION_TABLE
) -> tuple[Statechart[Any, Any], Counter[str]]:
    """A chart with a fixed policy; its records go to ``RECORDS`` (cleared here)."""
    ticks = itertools.count()
    counts: Counter[str] = Counter()
    RECORDS.clear()
    chart: Statechart[Any, Any] = Statechart(
        table,
        clock=lambda: float(next(ticks)),
        policy=holding if isinstance(holding, Guards) else Guards(holding),
        on_count=lambda name: counts.update([name]),
        on_record=RECORDS.append,
        state_of=lambda node: State.LIVE,
    )
    return chart, counts


def test_happy_path_and_records() -> None:
    chart, _ = make(frozenset({Guard.SYNC_BUDGET_FREE}))
    for trigger in [Trigger.START, Trigger.OPENED, Trigger.AUTHORIZED, Trigger.SNAPSHOT]:
        chart.fire(trigger, reason=f"because {trigger}", generation=1)
    assert chart.node is Node.LIVE
    records = list(RECORDS)
    assert [(r.seq, r.source_node, r.dest_node) for r in records] == [
        (1, "disconnected", "connecting"),
        (2, "connecting", "authenticating"),
        (3, "authenticating", "syncing.sent"),
        (4, "syncing.sent", "live"),
    ]
    assert records[-1].reason == "because snapshot"
    assert records[-1].generation == 1
    assert [r.time for r in records] == [0.0, 1.0, 2.0, 3.0]
    assert records[-1].trigger == "snapshot"


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_the_table_is_total_and_every_pair_does_what_it_declares(table: Table[Any, Any]) -> None:
    """Generated: every (node, trigger) pair, under every combination of guards."""
    guards = sorted({rule.guard for rule in table.rules if rule.guard is not None})
    combos = [
        frozenset(c) for n in range(len(guards) + 1) for c in itertools.combinations(guards, n)
    ]
    pairs = 0
    nodes: list[enum.Enum] = list(table.nodes)
    triggers: list[enum.StrEnum] = list(table.triggers)
    for node, trigger in itertools.product(nodes, triggers):
        rules = table.rules_for(node, trigger)
        assert rules, f"({node}, {trigger}) undeclared"
        pairs += 1
        for holding in combos:
            chart, counts = make(holding, table)
            chart.node = node
            fired = chart.fire(trigger, reason="walk")
            if rules[0].outcome is Outcome.MOVE:
                expected = next(r for r in rules if r.guard is None or r.guard in holding)
                assert fired.rule is expected
                assert chart.node is expected.dest
                assert fired.record is not None
                assert (fired.record.source_node, fired.record.dest_node) == (
                    node.value,
                    expected.dest.value,
                )
                assert not counts
            else:
                assert fired.record is None
                assert chart.node is node  # the state never changes
                if rules[0].outcome is Outcome.IGNORE:
                    assert counts == Counter({f"ignored.{trigger}": 1})
                elif rules[0].outcome is Outcome.MALFORMED:
                    assert counts == Counter({"malformed": 1})
                else:
                    assert not counts
    assert pairs == len(nodes) * len(triggers)


def test_triggers_are_typed_and_equal_their_names() -> None:
    assert all(isinstance(rule.trigger, Trigger) for rule in CONNECTION_TABLE.rules)
    assert str(Trigger.LOST) == "lost"
    assert {node.state for node in Node} == set(State)
    assert Node.SYNC_PACED.state is Node.SYNC_SENT.state is Node.SYNC_COLLECTING.state


def test_a_table_that_is_not_total_is_refused_at_construction() -> None:
    rules = [r for r in PENALTY_TABLE.rules if r.trigger != "lockout_ended"]
    with pytest.raises(ValueError, match="not total"):
        Table("broken", PenaltyNode, PenaltyTrigger, PenaltyNode.CLEAR, [], rules)


def test_a_pair_ending_on_a_guarded_row_is_refused() -> None:
    began = PenaltyTrigger.LOCKOUT_BEGAN
    clear = PenaltyNode.CLEAR
    guarded = Rule(began, (clear,), Outcome.MOVE, PenaltyNode.LOCKED_OUT, Guard.TOKEN_HOPELESS)
    others = [r for r in PENALTY_TABLE.rules if not (r.trigger == began and clear in r.source)]
    with pytest.raises(ValueError, match="guarded"):
        Table("broken", PenaltyNode, PenaltyTrigger, clear, [], [guarded, *others])


def test_hidden_sub_states_are_declared_nodes() -> None:
    paced, _ = make()
    paced.node = Node.AUTHENTICATING
    assert paced.fire(Trigger.AUTHORIZED).rule.dest is Node.SYNC_PACED  # budget not free
    assert paced.fire(Trigger.TIMED_OUT).record is None  # no phase timeout while paced
    assert paced.fire(Trigger.BUDGET_READY).rule.dest is Node.SYNC_SENT
    assert paced.fire(Trigger.SNAPSHOT_PART).rule.dest is Node.SYNC_COLLECTING
    assert paced.fire(Trigger.SNAPSHOT_PART).outcome is Outcome.HANDLE
    assert paced.fire(Trigger.PARTS_COMPLETE).rule.dest is Node.LIVE


def test_guards_choose_between_retrying_and_stopping() -> None:
    retrying, _ = make()
    retrying.node = Node.AUTHENTICATING
    assert retrying.fire(Trigger.AUTH_REJECTED).rule.dest is Node.BACKOFF
    hopeless, _ = make(frozenset({Guard.TOKEN_HOPELESS}))
    hopeless.node = Node.AUTHENTICATING
    assert hopeless.fire(Trigger.AUTH_REJECTED).rule.dest is Node.STOPPED
    spent, _ = make(frozenset({Guard.RETRY_BUDGET_EXHAUSTED}))
    spent.node = Node.LIVE
    assert spent.fire(Trigger.LOST).rule.dest is Node.STOPPED


def test_the_guard_sees_the_event() -> None:
    policy = Guards()
    chart, _ = make(policy)
    chart.node = Node.AUTHENTICATING
    marker = object()
    chart.fire(Trigger.AUTH_REJECTED, event=marker)
    assert (Guard.TOKEN_HOPELESS, marker) in policy.asked


def test_stopped_is_terminal_and_answers_everything() -> None:
    chart, counts = make()
    chart.fire(Trigger.CLOSE, reason="")
    assert chart.allowed_triggers() == []
    for trigger in Trigger:
        assert chart.fire(trigger).record is None
    assert chart.node is Node.STOPPED
    assert sum(counts.values()) == len(Trigger)


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_tradovate.transitions")
    chart, _ = make()
    chart.fire(Trigger.START, reason="opened by test", generation=3)
    [record] = [r for r in caplog.records if r.name == "trio_tradovate.transitions"]
    assert "disconnected -> connecting" in record.getMessage()
    assert "opened by test" in record.getMessage()
    assert record.transition["generation"] == 3  # type: ignore[attr-defined]


def test_malformed_outcomes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    chart, counts = make()
    chart.node = Node.LIVE
    chart.fire(Trigger.OPENED, reason="second o")
    assert counts["malformed"] == 1
    assert any("opened in live" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", sorted(DIAGRAM_FILES))
def test_committed_diagrams_match_the_table(name: str) -> None:
    committed = (STATECHARTS / name).read_text()
    assert committed == DIAGRAM_FILES[name](), f"run `make diagrams` to regenerate {name}"


def test_diagrams_name_every_move_and_the_matrix_every_pair() -> None:
    mermaid = DIAGRAM_FILES["connection.mmd"]()
    for rule in CONNECTION_TABLE.moves():
        for source in rule.source:
            assert f"{source.name} --> {rule.dest.name}: {rule.trigger}" in mermaid  # type: ignore[union-attr]
    rows = matrix(CONNECTION_TABLE)
    assert len(rows) == 2 + len(Trigger)
    assert all(row.count("|") == len(Node) + 2 for row in rows)
