"""Logs a person and a machine can use: structured fields, JSON lines, a NullHandler, and no
other package's logger touched."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from contextlib import suppress

import orjson
import pytest
import trio

from trio_tradovate import EngineStopped, State, open_engine
from trio_tradovate.logs import FIELDS, JsonFormatter, TextFormatter, configure
from trio_tradovate.sim import Simulator

from ..conftest import config_for


async def test_records_carry_socket_generation_state_and_fault_kind(
    sim: Simulator, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trio_tradovate"):
        async with open_engine(config_for(sim)) as engine:
            await engine.wait_for(State.LIVE)
            await sim.drop_connections()
            await trio.sleep(0.1)
            await engine.wait_for(State.LIVE)
    moves = [r for r in caplog.records if r.name == "trio_tradovate.transitions"]
    assert moves
    for record in moves:
        assert record.__dict__["socket"] == 0
        assert record.__dict__["state"] == record.__dict__["transition"]["dest"]
        assert record.__dict__["generation"] == record.__dict__["transition"]["generation"]
        assert record.__dict__["transition"]["wall_time"]  # wall clock beside trio time
    faults = [r for r in caplog.records if r.__dict__.get("fault_kind") is not None]
    assert [r.__dict__["fault_kind"] for r in faults] == ["dropped"]
    assert faults[0].__dict__["socket"] == 0
    assert faults[0].__dict__["generation"] == 1
    assert faults[0].__dict__["state"] == "backoff"


def test_json_formatter_writes_the_fields_as_one_object_per_line() -> None:
    record = logging.LogRecord(
        "trio_tradovate.engine", logging.WARNING, "x", 1, "lost %s", ("it",), None
    )
    record.__dict__.update(socket=1, generation=4, state="backoff", fault_kind="stalled")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    payload = orjson.loads(line)
    assert payload["message"] == "lost it"
    assert payload["level"] == "WARNING"
    assert payload["logger"] == "trio_tradovate.engine"
    assert payload["time"].endswith("+00:00")
    assert {k: payload[k] for k in FIELDS if k in payload} == {
        "socket": 1,
        "generation": 4,
        "state": "backoff",
        "fault_kind": "stalled",
    }
    assert "socket 1" in TextFormatter().format(record)


def test_cli_handler_is_json_and_keeps_transitions_chatter_out() -> None:
    out = io.StringIO()
    handler = configure("json", logging.DEBUG, out)
    try:
        logging.getLogger("transitions.core").info("Executed callback 'x'")
        logging.getLogger("transitions.core").warning("a real warning")
        logging.getLogger("trio_tradovate.engine").info("ours", extra={"socket": 0})
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("transitions.core", "a real warning"),
        ("trio_tradovate.engine", "ours"),
    ]
    assert lines[1]["socket"] == 0


def test_the_library_adds_a_null_handler_and_changes_no_other_logger() -> None:
    """In a fresh interpreter: the state of every logger that is not ours is the same before
    and after importing every module of the package."""
    script = """
import logging, pkgutil, importlib
import transitions, trio, httpx, h11, trio_websocket, websockets, orjson

def state():
    return {
        name: (lg.level, [type(h).__name__ for h in lg.handlers], lg.propagate, lg.disabled)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and not name.startswith("trio_tradovate")
    }

before = state()
import trio_tradovate
for info in pkgutil.walk_packages(trio_tradovate.__path__, "trio_tradovate."):
    if info.name.endswith(("metrics", "console")) or ".certify" in info.name:
        continue
    importlib.import_module(info.name)
after = state()
untouched = (0, [], True, False)  # a logger nobody configured
changed = {n: after[n] for n in after if before.get(n, untouched) != after[n]}
print(changed)
top = logging.getLogger("trio_tradovate")
print([type(h).__name__ for h in top.handlers], top.level)
print(logging.getLogger("transitions").level, logging.root.handlers)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    changed, handlers, transitions = done.stdout.splitlines()
    assert changed == "{}"
    assert handlers == "['NullHandler'] 0"
    assert transitions == "0 []"  # NOTSET, and nothing configured on the root logger


class _Boom(Exception):
    pass


async def test_an_error_raised_while_a_socket_stops_is_not_lost(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """A handler raising inside the engine's own logging (Ctrl-C lands there as easily) while
    the application is closing: the error reaches the application, it is not replaced by the
    cancellation of the close and swallowed (``trio-tradovate certify`` used to ignore
    Ctrl-C this way)."""

    class Raising(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "the socket stops" in record.getMessage():
                raise _Boom

    handler = Raising(logging.ERROR)
    library = logging.getLogger("trio_tradovate")
    library.addHandler(handler)
    config = config_for(sim, credentials=None, access_token="not-a-token", user_id=sim.user_id)
    caught: list[BaseException] = []
    try:
        async with open_engine(config) as engine:
            with suppress(EngineStopped):
                await engine.wait_for(State.LIVE)
    except BaseException as exc:  # whatever shape, it must arrive
        caught.append(exc)
    finally:
        library.removeHandler(handler)
    assert caught
    leaves = [caught[0]]
    while isinstance(leaves[-1], BaseExceptionGroup):
        leaves = list(leaves[-1].exceptions)
    assert any(isinstance(leaf, _Boom) for leaf in leaves), caught


class _ArmedStream(trio.abc.Stream):
    """Delegates to a stream; once armed, every send raises ``_Boom``."""

    def __init__(self, inner: trio.abc.Stream, armed: list[bool]) -> None:
        self.inner = inner
        self.armed = armed

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.armed:
            raise _Boom
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_error_raised_while_closing_the_socket_is_not_lost(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """The same for an error raised by the close itself (the close frame's write): the
    stream's forced close afterwards used to be cancelled and take the error's place."""
    armed: list[bool] = []
    inner = sim.connector()

    async def connector(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        return _ArmedStream(await inner(host, port, tls=tls), armed)

    caught: list[BaseException] = []
    try:
        async with open_engine(config_for(sim, connector=connector)) as engine:
            await engine.wait_for(State.LIVE)
            armed.append(True)
    except BaseException as exc:  # whatever shape, it must arrive
        caught.append(exc)
    assert caught
    leaves = [caught[0]]
    while isinstance(leaves[-1], BaseExceptionGroup):
        leaves = list(leaves[-1].exceptions)
    assert any(isinstance(leaf, _Boom) for leaf in leaves), caught
