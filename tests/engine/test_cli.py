"""The command line: demo, stream, diagram, and one-line configuration errors."""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from trio_tradovate import State, __version__
from trio_tradovate.cli import ENV_VARS, build_parser, config_from_env, main, run_demo, run_stream
from trio_tradovate.errors import ConfigError
from trio_tradovate.sim import SimConfig, Simulator
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


# ------------------------------------------------------------------ conventions (issue 12, 8)


def _no_tradovate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TRADOVATE_")]:
        monkeypatch.delenv(name)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"trio-tradovate {__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim", "--port", "99999"], "99999 is not a port"),
        (["sim", "--port", "-5"], "-5 is not a port"),
        (["sim", "--port", "http"], "not a port number"),
        (["sim", "--epoch", "yesterday"], "not an ISO 8601 instant"),
        (["sim", "--epoch", "2026-01-05T14:30:00"], "has no zone"),
        (["sim", "--fault", "soon:{}"], "use SECONDS:JSON"),
        (["sim", '--fault=-1:{"kind":"drop"}'], "SECONDS must be"),
        (["sim", "--fault", '1:{"kind":"meteor"}'], "'kind' must be one of"),
        (["demo", "--duration", "-1"], "--duration"),
        (["demo", "--duration", "nan"], "--duration"),
        (["demo", "--seed", "x"], "--seed"),
        (["demo", "--view", "fancy"], "--view"),
        (["stream", "--metrics-port", "70000"], "70000 is not a port"),
        (["stream", "--status-every", "-3"], "--status-every"),
        (["stream", "--log-format", "xml"], "--log-format"),
        (["diagram", "--format", "png"], "--format"),
        (["certify", "--duration", "nan"], "--duration"),
        (["certify", "--delay", "-1"], "seconds >= 0"),
        (["certify", "--out", "/proc/no/such/dir"], "--out /proc/no/such/dir"),
        (["certify", "--target", "ftp://x"], "--target"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_every_flag_is_validated_in_one_line(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _no_tradovate_env(monkeypatch)
    monkeypatch.setenv("TRADOVATE_ACCESS_TOKEN", "t")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


def test_numeric_variables_are_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_tradovate_env(monkeypatch)
    for name, value in {
        "TRADOVATE_USERNAME": "u",
        "TRADOVATE_PASSWORD": "p",
        "TRADOVATE_CID": "abc",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["stream"]) == 2
    err = capsys.readouterr().err
    assert err == "trio-tradovate: TRADOVATE_CID must be a whole number, got 'abc'\n"
    env = {"TRADOVATE_USERNAME": "u", "TRADOVATE_PASSWORD": "p", "TRADOVATE_CID": " 12 "}
    config = config_from_env(_args(), env)
    assert config.credentials is not None
    assert config.credentials.cid == 12


def test_diagram_write_to_a_bad_path_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["diagram", "--write", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"trio-tradovate: --write {blocker / 'sub'}: ")


def test_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["sim", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--port {port}: cannot listen on 127.0.0.1" in err


def test_help_is_plain_and_stream_lists_the_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert main(["stream", "--help"]) == 0
    stream_help = capsys.readouterr().out
    for name in ENV_VARS:
        assert name in stream_help
    texts = [parser.format_help(), stream_help]
    for command in ("demo", "sim", "certify", "diagram", "quotes"):
        assert main([command, "--help"]) == 0
        texts.append(capsys.readouterr().out)
    for text in texts:
        for markup in ("``", ":func:", ":class:", ":meth:", ":mod:", ".. "):
            assert markup not in text


# --- the real command in a subprocess: signals, pipes, the simulator's clock and its log


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trio_tradovate.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _read_until(stream: object, needle: str) -> list[str]:
    """Lines of a child's output up to the first that contains ``needle`` (a readiness
    signal, not a timing: the test's faulthandler timeout bounds a child that never says it)."""
    lines: list[str] = []
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        assert line, f"output ended before {needle!r}: {lines[-5:]}"
        lines.append(line)
        if needle in line:
            return lines


def _stopped_cleanly(child: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    child.send_signal(signum)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()  # and close its pipes: a child left behind would fail later tests
        out, err = child.communicate()
        pytest.fail(f"still running 60 s after signal {signum}; its stderr ends: {err[-2000:]}")
    assert child.returncode == 0, err
    assert "Traceback" not in err
    assert "ExceptionGroup" not in err
    return out, err


STOPS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


@pytest.mark.parametrize("signum", STOPS)
def test_demo_stops_cleanly_on_a_signal(signum: int) -> None:
    child = _spawn("demo", "--duration", "600")
    _read_until(child.stdout, "-> live")
    _stopped_cleanly(child, signum)


@pytest.mark.parametrize("signum", STOPS)
def test_certify_stops_cleanly_on_a_signal(signum: int, tmp_path: Path) -> None:
    child = _spawn("certify", "--verbose", "--out", str(tmp_path / "pack"))
    _read_until(child.stderr, "log: ")
    _stopped_cleanly(child, signum)
    assert not (tmp_path / "pack" / "report.md").exists()  # stopped, not run to the end


@pytest.fixture
def sim_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    child = _spawn("sim", "--port", "0", "--log-format", "json")
    first = _read_until(child.stdout, "REST")
    rest_url = first[-1].split()[1]
    _read_until(child.stdout, "Ctrl-C stops")
    yield child, rest_url
    if child.poll() is None:
        child.kill()
        child.communicate()


def _sim_env() -> dict[str, str]:
    config = SimConfig()
    return {"TRADOVATE_USERNAME": config.username, "TRADOVATE_PASSWORD": config.password}


@pytest.mark.loopback
@pytest.mark.parametrize("signum", STOPS)
def test_sim_and_stream_stop_cleanly_and_the_sim_logs_sockets_and_faults(
    sim_process: tuple[subprocess.Popen[str], str], signum: int
) -> None:
    sim_child, rest_url = sim_process
    stream = _spawn("stream", "--rest-url", rest_url, "--view", "plain", env=_sim_env())
    _read_until(stream.stdout, '"dest":"live"')
    logged = _read_until(sim_child.stderr, "websocket #0 opened")
    assert orjson.loads(logged[-1])["logger"] == "trio_tradovate.cli"
    base = rest_url.removesuffix("/v1")
    answer = httpx.post(f"{base}/_sim/fault", json={"kind": "drop"}, timeout=10)
    assert answer.status_code == 200
    fault = orjson.loads(_read_until(sim_child.stderr, "fault injected")[-1])
    assert fault["fault_kind"] == "drop"
    _read_until(stream.stdout, '"trigger":"retry"')  # the stream rode it out
    out, err = _stopped_cleanly(stream, signum)
    last = orjson.loads(out.splitlines()[-1])
    assert last["type"] == "transition"
    assert last["dest"] == "stopped"
    assert "renewal in" not in err  # the simulator's clock is today's: no skew warning
    _stopped_cleanly(sim_child, signum)


@pytest.mark.loopback
@pytest.mark.parametrize("signum", STOPS)
def test_quotes_prints_json_lines_and_stops_cleanly(
    sim_process: tuple[subprocess.Popen[str], str], signum: int
) -> None:
    _, rest_url = sim_process
    md_url = rest_url.replace("http://", "ws://").removesuffix("/v1") + "/md/v1/websocket"
    quotes = _spawn("quotes", "ESZ6", "--rest-url", rest_url, "--md-url", md_url, env=_sim_env())
    line = _read_until(quotes.stdout, '"type":"quote"')[-1]
    assert orjson.loads(line)["symbol"] == "ESZ6"
    _stopped_cleanly(quotes, signum)


@pytest.mark.loopback
def test_stream_into_a_closed_pipe_exits_quietly(
    sim_process: tuple[subprocess.Popen[str], str],
) -> None:
    _, rest_url = sim_process
    stream = _spawn("stream", "--rest-url", rest_url, env=_sim_env())
    assert stream.stdout is not None
    for _ in range(2):
        assert stream.stdout.readline().startswith('{"type":"transition"')
    stream.stdout.close()  # `| head -2`
    assert stream.stderr is not None
    with stream.stderr:
        err = stream.stderr.read()
    assert stream.wait(timeout=60) == 0
    assert "Traceback" not in err
    assert "BrokenPipe" not in err


def test_sim_clock_starts_today_unless_fixed(
    sim_process: tuple[subprocess.Popen[str], str],
) -> None:
    # the fixture's simulator printed its start; --epoch fixes one (checked by the parser)
    from datetime import UTC, datetime

    from trio_tradovate.cli import utc_instant

    assert utc_instant("2026-01-05T14:30:00Z") == "2026-01-05T14:30:00+00:00"
    _, rest_url = sim_process
    token = httpx.post(
        f"{rest_url}/auth/accesstokenrequest",
        json={"name": SimConfig().username, "password": SimConfig().password},
        timeout=10,
    ).json()
    expires = datetime.fromisoformat(token["expirationTime"].replace("Z", "+00:00"))
    assert 0 < (expires - datetime.now(UTC)).total_seconds() < 24 * 3600


@pytest.mark.loopback
def test_stream_serves_metrics_and_health(
    sim_process: tuple[subprocess.Popen[str], str],
) -> None:
    _, rest_url = sim_process
    stream = _spawn(
        "stream", "--rest-url", rest_url, "--view", "plain", "--metrics-port", "0", env=_sim_env()
    )
    announced = _read_until(stream.stderr, "monitoring on http://127.0.0.1:")[-1]
    base = announced.split()[2]
    _read_until(stream.stdout, '"dest":"live"')
    ready = httpx.get(f"{base}/healthz/ready", timeout=10)
    live = httpx.get(f"{base}/healthz/live", timeout=10)
    scraped = httpx.get(f"{base}/metrics", timeout=10)
    _stopped_cleanly(stream, signal.SIGINT)
    assert (ready.status_code, ready.text) == (200, "live\n")
    assert (live.status_code, live.text) == (200, "running\n")
    assert 'tradovate_socket_state{socket="0",state="live"} 1.0' in scraped.text
    observed = [
        line
        for line in scraped.text.splitlines()
        if line.startswith("tradovate_delivery_latency_seconds_count")
    ]
    assert observed
    assert float(observed[0].split()[-1]) > 0  # the stream's consumer observes its latency


@pytest.mark.loopback
def test_sim_epoch_fixes_the_clock() -> None:
    child = _spawn("sim", "--port", "0", "--epoch", "2026-01-05T14:30:00Z")
    banner = _read_until(child.stdout, "Ctrl-C stops")[-1]
    assert "clock starts at 2026-01-05T14:30:00+00:00" in banner
    _stopped_cleanly(child, signal.SIGINT)


def test_busy_metrics_port_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_tradovate_env(monkeypatch)
    monkeypatch.setenv("TRADOVATE_ACCESS_TOKEN", "t")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # nothing listens on port 9 of loopback: the engine only gets refusals meanwhile
        argv = ["stream", "--rest-url", "http://127.0.0.1:9/v1", "--metrics-port", str(port)]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"trio-tradovate: --metrics-port {port}: ")
