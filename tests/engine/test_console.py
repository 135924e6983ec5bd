"""The console: the live view rendered from a fixed snapshot, the status line, and which
output a command picks (a live view in a terminal, JSON lines when piped)."""

from __future__ import annotations

import io

import orjson
import pytest
import trio

from trio_tradovate import State
from trio_tradovate.cli import _live_view_wanted, run_stream
from trio_tradovate.console import Rates, render_text
from trio_tradovate.errors import ConfigError
from trio_tradovate.health import EngineSnapshot, SocketSnapshot
from trio_tradovate.sim import Simulator
from trio_tradovate.statechart import TransitionRecord

from ..conftest import config_for


def _record(seq: int, source: State, dest: State, reason: str, shard: int = 0) -> TransitionRecord:
    return TransitionRecord(
        seq=seq,
        time=90.0 + seq,
        trigger="t",
        source=source,
        dest=dest,
        reason=reason,
        generation=2,
        shard=shard,
        source_node=source.value,
        dest_node=dest.value,
        wall_time=f"2026-12-07T12:00:0{seq}.250000+00:00",
    )


SNAPSHOT = EngineSnapshot(
    taken_at=100.0,
    wall_time="2026-12-07T12:00:10+00:00",
    state=State.BACKOFF,
    sockets=(
        SocketSnapshot(0, State.LIVE, "live", 2, 12.5, 0, 0.4),
        SocketSnapshot(1, State.BACKOFF, "backoff", 3, 1.5, 1, None),
    ),
    counters={"frames_received": 1200, "props_events": 900, "reconnects": 1, "fault.dropped": 1},
    delivery={"waiting": 3, "high_water": 40, "coalesced": 7},
    queued_requests=2,
    locked_out=True,
    lockout_seconds_left=1799.6,
    token_renewals=0,
    token_logins=1,
    token_seconds_left=4200.0,
    staleness={"socket:0": 0.4},
    recent=(
        _record(1, State.SYNCING, State.LIVE, "snapshot applied: 21 entities"),
        _record(2, State.LIVE, State.BACKOFF, "dropped: no close frame", shard=1),
    ),
)


def test_view_renders_sockets_transitions_account_and_counters() -> None:
    before = EngineSnapshot(
        taken_at=98.0,
        wall_time=SNAPSHOT.wall_time,
        state=SNAPSHOT.state,
        sockets=SNAPSHOT.sockets,
        counters={"frames_received": 1000, "props_events": 800},
        delivery=SNAPSHOT.delivery,
        queued_requests=0,
        locked_out=False,
        lockout_seconds_left=0.0,
        token_renewals=0,
        token_logins=1,
        token_seconds_left=4202.0,
        staleness={},
    )
    rates = Rates.between(before, SNAPSHOT)
    assert (rates.frames, rates.events) == (100.0, 50.0)
    text = render_text(SNAPSHOT, "  DEMO123: ESZ6 +2; 1 working, 3 fills; cash 50,000.00\n", rates)
    lines = text.splitlines()
    socket_rows = [line for line in lines if "live" in line and "12.5 s" in line]
    assert len(socket_rows) == 1
    assert "0.4 s ago" in socket_rows[0]
    assert any("backoff" in line and "1.5 s" in line for line in lines)
    assert any("12:00:01.250" in line and "syncing -> live" in line for line in lines)
    assert any("dropped: no close frame" in line for line in lines)
    assert "DEMO123: ESZ6 +2; 1 working, 3 fills; cash 50,000.00" in text
    assert "frames 1200 (100.0/s), events 900 (50.0/s), reconnects 1, faults: dropped 1" in text
    assert "waiting for the consumer 3, coalesced 7, queued requests 2" in text
    assert "lockout 1800 s left, token left 4200 s" in text
    assert "ready: no (socket 1 is backoff (for 1.5 s))" in text
    assert "\x1b[" not in text  # plain text, no colour codes
    quoted = render_text(SNAPSHOT, "", rates, width=140, panels={"quotes": "ESZ6 5012.25"})
    assert any("quotes" in line for line in quoted.splitlines())
    assert "ESZ6 5012.25" in quoted


def test_status_line_says_it_all_in_one_line() -> None:
    line = SNAPSHOT.status_line()
    assert "\n" not in line
    assert line == (
        "backoff [0:live 1:backoff] frames 1200 events 900 reconnects 1 faults 1 waiting 3 "
        "queued 2 token 1.2 h LOCKED OUT 1800 s"
    )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_view_only_in_a_terminal_unless_asked() -> None:
    assert _live_view_wanted("auto", _Tty()) is True
    assert _live_view_wanted("auto", io.StringIO()) is False  # piped: JSON lines
    assert _live_view_wanted("plain", _Tty()) is False
    assert _live_view_wanted("live", io.StringIO()) is True


def test_live_view_without_rich_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ConfigError, match=r"trio-tradovate\[console\]"):
        _live_view_wanted("live", _Tty())
    assert _live_view_wanted("auto", _Tty()) is False  # falls back to lines


async def test_long_runs_print_a_status_line(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    out, err = io.StringIO(), io.StringIO()

    def long_enough(engine: object) -> bool:
        return err.getvalue().count("status ") >= 3

    with trio.move_on_after(600):
        await run_stream(
            config_for(sim), out, stop_signals=(), until=long_enough, err=err, status_every=30
        )
    statuses = err.getvalue().splitlines()
    assert len(statuses) >= 3
    assert all(" live [0:live] frames " in line for line in statuses)
    assert all(
        orjson.loads(line)["type"] in ("transition", "change")
        for line in out.getvalue().splitlines()
    )


async def test_demo_draws_the_live_view(autojump_clock: trio.testing.MockClock) -> None:
    from rich.console import Console

    from trio_tradovate.cli import run_demo

    screen = Console(record=True, file=io.StringIO(), width=140, color_system=None)
    out = io.StringIO()
    assert await run_demo(10.0, 3, out, live_view=True, view_console=screen) == 0
    drawn = screen.export_text()
    assert "trio-tradovate demo" in drawn
    assert "recent transitions" in drawn
    assert "DEMO" in drawn  # the account panel
    # the forced drop, counted: one reconnect of the user socket, one of the market data's
    assert "reconnects 2" in drawn
    assert "quotes" in drawn
    assert "ESZ6: bid " in drawn  # the demo's quotes, a panel of the live view
    # header, the closing transition, the summary: no plain transition lines meanwhile
    assert len(out.getvalue().splitlines()) == 3
    assert out.getvalue().rstrip().endswith("entities in store")


async def test_demo_prints_status_lines_in_plain_view(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_tradovate.cli import run_demo

    out, err = io.StringIO(), io.StringIO()
    assert await run_demo(20.0, 3, out, status_every=6, err=err) == 0
    statuses = err.getvalue().splitlines()
    assert len(statuses) == 3  # at 6, 12 and 18 s; the demo ends at 20
    assert all(line.startswith("status ") for line in statuses)
