"""The command line: demo, stream, diagram, and one-line configuration errors."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import trio

from trio_tradovate import State
from trio_tradovate.cli import config_from_env, main, run_demo, run_stream
from trio_tradovate.errors import ConfigError
from trio_tradovate.sim import Simulator
from trio_tradovate.statechart import DIAGRAM_FILES

from ..conftest import config_for


async def test_demo_shows_transitions_account_and_recovery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out = io.StringIO()
    assert await run_demo(20.0, 3, out) == 0
    text = out.getvalue()
    assert text.count("-> live") == 4  # user and market-data sockets: live, dropped, live again
    assert "live -> backoff" in text
    assert " working, " in text
    assert " fills; cash " in text
    assert "DEMO" in text  # accounts by name
    assert "2 reconnect(s)" in text  # one per socket
    assert text.rstrip().endswith("entities in store")


async def test_stream_prints_json_lines(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    import orjson

    out = io.StringIO()

    def enough(engine: object) -> bool:
        return out.getvalue().count('"type":"change"') >= 30

    with trio.move_on_after(600):
        await run_stream(config_for(sim), out, stop_signals=(), until=enough)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    kinds = {line["type"] for line in lines}
    assert kinds == {"transition", "change"}
    transitions = [line for line in lines if line["type"] == "transition"]
    assert [t["dest"] for t in transitions][:4] == [
        "connecting",
        "authenticating",
        "syncing",
        "live",
    ]
    assert sim.config.password not in out.getvalue()


def _args(**kw: object) -> argparse.Namespace:
    defaults: dict[str, object] = {"env": "demo", "rest_url": None, "ws_url": None}
    defaults.update(kw)
    return argparse.Namespace(**defaults)


def test_config_from_env_reads_credentials() -> None:
    config = config_from_env(
        _args(),
        {
            "TRADOVATE_USERNAME": "u",
            "TRADOVATE_PASSWORD": "p",
            "TRADOVATE_CID": "8",
            "TRADOVATE_SEC": "s",
        },
    )
    assert config.credentials is not None
    assert config.credentials.cid == 8
    assert config.websocket_url == "wss://demo.tradovateapi.com/v1/websocket"
    assert "'p'" not in repr(config)
    assert "'s'" not in repr(config)


def test_config_from_env_token_only() -> None:
    config = config_from_env(_args(env="live"), {"TRADOVATE_ACCESS_TOKEN": "tok"})
    assert config.credentials is None
    assert config.access_token == "tok"
    assert config.websocket_url == "wss://live.tradovateapi.com/v1/websocket"


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["stream"], {}, "TRADOVATE_USERNAME"),
        (["stream"], {"TRADOVATE_USERNAME": "u"}, "TRADOVATE_PASSWORD"),
        (["stream", "--rest-url", "ftp://x/v1"], {"TRADOVATE_ACCESS_TOKEN": "t"}, "rest_url"),
        (["stream", "--ws-url", "http://x"], {"TRADOVATE_ACCESS_TOKEN": "t"}, "ws_url"),
        (["demo", "--duration", "0"], {}, "--duration"),
        (["sim", "--host", "0.0.0.0"], {}, "loopback"),
    ],
)
def test_configuration_mistakes_are_one_line_exit_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("TRADOVATE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="rest_url"):
        config_from_env(_args(rest_url="nonsense"), {"TRADOVATE_ACCESS_TOKEN": "t"})
    assert issubclass(ConfigError, ValueError)


def test_diagram_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagram", "--format", "dot"]) == 0
    assert capsys.readouterr().out == DIAGRAM_FILES["connection.dot"]()
    assert main(["diagram", "--write", str(tmp_path)]) == 0
    for name, render in DIAGRAM_FILES.items():
        assert (tmp_path / name).read_text() == render()


def test_state_values_are_the_documented_names() -> None:
    assert [s.value for s in State] == [
        "disconnected",
        "connecting",
        "authenticating",
        "syncing",
        "live",
        "backoff",
        "stopped",
    ]
