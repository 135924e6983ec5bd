"""``trio-tradovate quotes``: one JSON line per update, exits like ``stream``."""

from __future__ import annotations

import io

import orjson
import pytest
import trio

from trio_tradovate import Credentials
from trio_tradovate.cli import main
from trio_tradovate.cli_quotes import run_quotes
from trio_tradovate.sim import Simulator


async def test_quotes_dom_and_chart_as_json_lines(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await run_quotes(
        sim.engine_config(),
        ["ESZ6"],
        ["NQZ6"],
        ["MESZ6"],
        out,
        stop_signals=(),
        until=lambda lines: lines >= 80,
        err=err,
    )
    assert code == 0
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    types = {line["type"] for line in lines}
    assert {"transition", "quote", "dom", "bar", "eoh"} <= types
    quote = next(line for line in lines if line["type"] == "quote")
    assert quote["symbol"] == "ESZ6"
    assert quote["value"]["contract_id"] == sim.contract_id("ESZ6")
    assert "Bid" in quote["value"]["entries"]
    dom = next(line for line in lines if line["type"] == "dom")
    assert dom["symbol"] == "NQZ6"
    assert dom["value"]["bids"][0]["price"] > 0
    assert err.getvalue() == ""


async def test_exits_1_when_the_engine_stops_by_policy(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    out, err = io.StringIO(), io.StringIO()
    config = sim.engine_config(credentials=Credentials("nobody", "wrong"))
    code = await run_quotes(config, ["ESZ6"], [], [], out, stop_signals=(), err=err)
    assert code == 1
    assert "the engine stopped" in err.getvalue()
    assert "wrong" not in out.getvalue() + err.getvalue()


def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["quotes"]) == 2
    assert "SYMBOL" in capsys.readouterr().err
    monkeypatch.setenv("TRADOVATE_ACCESS_TOKEN", "t")
    assert main(["quotes", "ESZ6", "--md-url", "http://x"]) == 2
    assert "md_url must be a ws:// or wss:// URL" in capsys.readouterr().err


async def test_the_demo_shows_quotes_next_to_the_account(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_tradovate.cli import run_demo

    out = io.StringIO()
    assert await run_demo(12.0, 1, out) == 0
    text = out.getvalue()
    assert "quotes:\n  ESZ6: bid " in text
    after_drop = text.split("drops every connection")[1]
    assert "ESZ6: bid " in after_drop  # quotes again after the forced drop
    assert "bid None" not in after_drop.split("quotes:")[-1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_a_terminal_gets_a_live_table(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    out = Terminal()
    code = await run_quotes(
        sim.engine_config(), ["ESZ6", "NQZ6"], [], [], out, stop_signals=(), until=lambda n: n >= 40
    )
    assert code == 0
    screens = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert len(screens) >= 5
    last = screens[-1].splitlines()
    assert len(last) == 2  # one row per subscription, redrawn in place
    assert last[0].startswith("quote     ESZ6")
    assert " bid " in last[0]
    assert '"type"' not in out.getvalue()  # no JSON on a terminal
