"""Client-side connect faults: classified at one boundary, named in the transition, recovered."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from trio_tradovate import EngineConfig, State, TcpConnector, open_engine
from trio_tradovate.boundary import classify_connect_error
from trio_tradovate.errors import (
    ConnectionRefused,
    ConnectTimeout,
    DNSError,
    HandshakeRejected,
    TLSError,
)
from trio_tradovate.sim import Simulator
from trio_tradovate.testing import ScriptedConnector

from ..conftest import config_for, layer_settings


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("dns", "dns"),
        ("tls", "tls"),
        ("timeout", "connect_timeout"),
        ("refused", "refused"),
        ("reset", "refused"),
    ],
)
async def test_connect_fault_is_named_and_recovered(
    fault: str, kind: str, sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    connector = ScriptedConnector(sim.connector())
    connector.fail_next(fault, times=2)
    async with open_engine(config_for(sim, connector=connector, connect_timeout=5)) as engine:
        await engine.wait_for(State.LIVE)
    failures = [r for r in engine.transitions if r.trigger == "connect_failed"]
    assert len(failures) == 2
    assert all(r.reason.startswith(f"{kind}:") for r in failures)
    assert engine.counters[f"fault.{kind}"] == 2
    if fault == "timeout":
        first_attempt = connector.attempts[0][0]
        assert failures[0].time - first_attempt == pytest.approx(5)


def test_scripted_connector_rejects_unknown_faults() -> None:
    connector = ScriptedConnector(TcpConnector())
    with pytest.raises(ValueError, match="unknown connect fault"):
        connector.fail_next("gremlins")


def test_classification_boundary() -> None:
    import socket
    import ssl

    import trio_websocket

    assert isinstance(classify_connect_error(socket.gaierror(-2, "x")), DNSError)
    assert isinstance(classify_connect_error(ssl.SSLError(1, "x")), TLSError)
    broken = trio.BrokenResourceError()
    broken.__cause__ = ssl.SSLError(1, "EOF")
    assert isinstance(classify_connect_error(broken), TLSError)
    assert isinstance(classify_connect_error(trio.TooSlowError()), ConnectTimeout)
    assert isinstance(classify_connect_error(ConnectionRefusedError()), ConnectionRefused)
    rejected = trio_websocket.ConnectionRejected(404, (), b"nope")
    assert isinstance(classify_connect_error(rejected), HandshakeRejected)


async def _plain_http_server(stream: trio.SocketStream) -> None:
    """Answers whatever arrives (a TLS ClientHello here) with a plain HTTP 400, then closes."""
    try:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


@pytest.mark.loopback
async def test_real_tls_handshake_failure_against_a_plain_server() -> None:
    """wss:// to a plain-HTTP loopback port: the TLS error surfaces as TLSError, not a timeout."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_tcp, _plain_http_server, 0, host="127.0.0.1")
            [listener] = await nursery.start(serve)
            port = listener.socket.getsockname()[1]
            config = EngineConfig(
                rest_url=f"https://127.0.0.1:{port}/v1",
                access_token="unused-token",
                user_id=1,
                connector=TcpConnector(),
                seed=1,
                **layer_settings(),
            )
            async with open_engine(config) as engine:
                record = await engine.wait_for(State.BACKOFF)
            assert record.reason.startswith("tls:"), record.reason
            assert "WRONG_VERSION_NUMBER" in record.reason or "wrong version" in record.reason
            nursery.cancel_scope.cancel()
