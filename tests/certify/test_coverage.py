"""The statechart observer hook and the transition-coverage matrix (run and test suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from trio_tradovate.certify.coverage import Coverage
from trio_tradovate.statechart import (
    CONNECTION_TABLE,
    FIRE_OBSERVERS,
    Node,
    Statechart,
    Trigger,
)


def chart() -> Statechart[Node, Trigger]:
    return Statechart(CONNECTION_TABLE, clock=lambda: 0.0)


def test_the_observer_sees_every_fired_rule_and_is_removed_after() -> None:
    coverage = Coverage()
    with coverage.installed():
        machine = chart()
        machine.fire(Trigger.START)
        machine.fire(Trigger.START)  # ignore: already started
        machine.fire(Trigger.OPENED)
        machine.fire(Trigger.OPENED)  # malformed: a second 'o'
    assert coverage.observe not in FIRE_OBSERVERS
    assert coverage.cells == {
        ("connection", "disconnected", "start"): 1,
        ("connection", "connecting", "start"): 1,
        ("connection", "connecting", "opened"): 1,
        ("connection", "authenticating", "opened"): 1,
    }
    moves = {(s, CONNECTION_TABLE.rules[i].trigger) for (_, i, s), _ in coverage.moves.items()}
    assert moves == {("disconnected", Trigger.START), ("connecting", Trigger.OPENED)}
    summary = coverage.summary()["connection"]
    assert (summary["cells_exercised"], summary["moves_exercised"]) == (4, 2)
    assert summary["cells_declared"] == len(CONNECTION_TABLE.cells)


def test_an_observer_that_raises_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("observer bug")

    plain, watched = chart(), chart()
    FIRE_OBSERVERS.append(broken)
    try:
        got = [watched.fire(t) for t in (Trigger.START, Trigger.OPENED, Trigger.LOST)]
    finally:
        FIRE_OBSERVERS.remove(broken)
    want = [plain.fire(t) for t in (Trigger.START, Trigger.OPENED, Trigger.LOST)]
    assert [(f.rule, f.record) for f in got] == [(f.rule, f.record) for f in want]
    assert watched.node is plain.node is Node.BACKOFF
    assert "observer failed" in caplog.text


def test_markdown_marks_exercised_and_never_reached_cells() -> None:
    coverage = Coverage()
    with coverage.installed():
        chart().fire(Trigger.START)
    text = "\n".join(coverage.markdown())
    assert "move **x1**" in text
    assert "ignore never" in text
    assert "handle never" in text
    assert "| `start` | `disconnected` | `connecting` |  | x1 |" in text


SUITE = """
import trio
from trio_tradovate import State, open_engine
from trio_tradovate.sim import SimConfig, open_simulator


async def test_live_then_drop(autojump_clock):
    async with open_simulator(SimConfig(seed=2)) as sim:
        async with open_engine(sim.engine_config()) as engine:
            await engine.wait_for(State.LIVE)
            await sim.drop_connections()
            await engine.wait_for(State.BACKOFF)
            await engine.wait_for(State.LIVE)
"""


def test_the_pytest_plugin_writes_the_matrix_of_a_test_suite(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    out = tmp_path / "matrix" / "transitions.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "trio_tradovate.certify.pytest_plugin",
            f"--transition-coverage={out}",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    matrix = out.read_text()
    assert matrix.startswith("# Transition coverage of the test suite")
    found = orjson.loads(out.with_suffix(".json").read_bytes())
    cells = {(c["node"], c["trigger"]) for c in found["cells"]}
    assert {("connecting", "opened"), ("live", "lost"), ("backoff", "retry")} <= cells
    assert ("syncing.paced", "budget_ready") not in cells  # never exercised: shown as never
    assert "| `budget_ready` |" in matrix
    assert all(c["reached_by"] == ["test_tiny.py"] for c in found["cells"])
    assert "Cells only one test module reaches" in matrix
