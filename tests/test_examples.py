"""Every script in ``examples/`` runs, in virtual time, and does what its docstring promises.

The examples are not a package, so each is loaded from its path. A new example without a test
here fails :func:`test_every_example_is_tested`, so documentation cannot rot silently.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from trio_tradovate import State

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TESTED = {"follow_account.py", "place_order.py", "ride_out_faults.py"}


def load(name: str) -> ModuleType:
    """Import ``examples/<name>`` as module ``examples_<stem>`` (registered, for dataclasses)."""
    path = EXAMPLES / name
    module_name = f"examples_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


async def run_main(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    module = load(name)
    result = await module.main()
    return result, capsys.readouterr().out


def test_every_example_is_tested() -> None:
    assert {path.name for path in EXAMPLES.glob("*.py")} == TESTED


def test_every_example_runs_as_a_script() -> None:
    for name in TESTED:
        source = (EXAMPLES / name).read_text()
        assert 'if __name__ == "__main__":\n    trio.run(main)' in source, name


async def test_follow_account(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    result, out = await run_main("follow_account.py", capsys)
    assert result.store_matches_truth
    assert result.final_state is State.STOPPED
    dests = [record.dest for record in result.transitions]
    assert dests[:4] == [State.CONNECTING, State.AUTHENTICATING, State.SYNCING, State.LIVE]
    assert dests.count(State.LIVE) == 2  # once at start, once after the drop
    assert dests.count(State.BACKOFF) == 1
    assert result.changes > result.recovered_changes > 0
    assert "store equals the simulator's truth: True" in out
    assert "[gen 2 sync]" in out
    assert "[gen 1 live]" in out


async def test_place_order(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    result, out = await run_main("place_order.py", capsys)
    assert result.order_id is not None
    assert result.order is not None
    assert result.order["id"] == result.order_id
    assert result.order["orderType"] == "Market"
    assert result.order["ordStatus"] == "Filled"
    assert result.bad_argument is not None
    assert "qty must be" in result.bad_argument
    assert result.refusal_reason == "UnknownReason"
    # The drop happens before the simulator reads the request, so the re-sync shows no order.
    assert result.in_flight_outcome == "not placed"
    assert "status after the drop: Unknown" in out
    assert "OutcomeUnknown" not in out  # the example handles it; nothing escapes


async def test_ride_out_faults(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    result, out = await run_main("ride_out_faults.py", capsys)
    assert result.store_matches_truth
    reasons = [r.reason.split(":")[0] for r in result.watched if r.dest is State.BACKOFF]
    assert reasons[:4] == ["stalled", "closed_by_server", "shutdown", "dropped"]
    assert set(reasons[4:]) == {"refused"}
    assert [r.seq for r in result.watched] == list(range(1, len(result.watched) + 1))
    # One syncrequest per socket, never a second one on the same socket.
    assert result.syncs_per_socket == (1,) * result.sockets_opened
    assert result.counters["fault.stalled"] == 1
    assert result.counters["reconnects"] == len(reasons)
    assert "store equals the simulator's truth: True" in out
