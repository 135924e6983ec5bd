"""One boundary for lower-layer exceptions (issue 8, point 5), and sans-I/O modules in fact.

No test here touches the network: DNS failures are raised by a custom trio resolver or by an
``httpx.MockTransport`` handler that chains exactly what httpx -> httpcore -> trio raise.
"""

from __future__ import annotations

import errno
import itertools
import socket
import ssl
import subprocess
import sys
from typing import Any

import httpcore
import httpx
import pytest
import trio
import trio_websocket

import trio_tradovate
from trio_tradovate import EngineConfig, State, open_engine
from trio_tradovate.auth import request_access_token
from trio_tradovate.boundary import (
    TABLE,
    classify_connect_error,
    map_exception,
    map_exceptions,
    translate,
)
from trio_tradovate.config import Credentials
from trio_tradovate.errors import (
    ClosedByServer,
    ConnectionRefused,
    ConnectTimeout,
    DNSError,
    HandshakeRejected,
    RemoteProtocolError,
    TLSError,
)

#: Modules that must not load trio, trio-websocket or httpx. Add new sans-I/O modules here
#: (the per-socket ``session`` module joins when it exists).
SANS_IO_MODULES = (
    "trio_tradovate.errors",
    "trio_tradovate.protocol",
    "trio_tradovate.scheduler",
    "trio_tradovate.store",
    "trio_tradovate.feed",
    "trio_tradovate.config",
    "trio_tradovate.session",
    "trio_tradovate.statechart",
    "trio_tradovate.reconnect",
    "trio_tradovate.writer",
)

#: Top-level packages of the I/O stack.
IO_PACKAGES = ("trio", "trio_websocket", "httpx", "httpcore", "anyio")

REST = "https://demo.tradovateapi.com/v1"


def _io_modules_after_import(module: str) -> list[str]:
    """Import ``module`` in a fresh interpreter; the I/O-stack modules that came with it."""
    probe = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        f"io = {IO_PACKAGES!r}\n"
        "print('\\n'.join(sorted(n for n in sys.modules if n.split('.')[0] in io)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_sans_io_module_loads_no_io_stack(module: str) -> None:
    assert _io_modules_after_import(module) == []


def test_lazy_package_exports_every_public_name() -> None:
    assert set(trio_tradovate._SOURCES) == set(trio_tradovate.__all__)
    for name in trio_tradovate.__all__:
        assert getattr(trio_tradovate, name) is not None
    with pytest.raises(AttributeError):
        _ = trio_tradovate.no_such_name  # type: ignore[attr-defined]


# --- the real stack's chaining, reproduced -----------------------------------------------------


class _NoSuchHost(trio.abc.HostnameResolver):
    """trio's resolver hook: every name fails as a real NXDOMAIN does, with no lookup."""

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def test_real_httpx_stack_chains_gaierror_under_connect_error() -> None:
    """What httpx 0.28 / httpcore 1.0 over trio really raise for DNS: our mock must match."""
    previous = trio.socket.set_custom_hostname_resolver(_NoSuchHost())
    try:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ConnectError) as info:
                await client.get("http://tradovate.invalid/v1/auth/me")
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    middle = info.value.__cause__
    assert isinstance(middle, httpcore.ConnectError)
    # httpcore's pool re-raises ``from None``: the gaierror is only its argument and context.
    assert middle.__cause__ is None
    assert middle.__suppress_context__
    assert isinstance(middle.__context__, socket.gaierror)
    assert middle.args == (middle.__context__,)
    assert isinstance(classify_connect_error(info.value), DNSError)


def _httpx_dns_failure(request: httpx.Request) -> httpx.Response:
    """Raise what ``httpx.AsyncClient`` raises when the host does not resolve (see above)."""
    try:
        try:
            try:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            except OSError as exc:  # httpcore._backends.trio: map_exceptions({OSError: ...})
                raise httpcore.ConnectError(exc) from exc
        except httpcore.ConnectError as exc:  # httpcore AsyncConnectionPool.handle_async_request
            raise exc from None
    except httpcore.ConnectError as exc:  # httpx._transports.default.map_httpcore_exceptions
        raise httpx.ConnectError(str(exc)) from exc


async def test_dns_failure_on_rest_login_is_dns_error() -> None:
    transport = httpx.MockTransport(_httpx_dns_failure)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(DNSError) as info:
            await request_access_token(client, REST, Credentials("user", "secret-password"))
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "secret-password" not in str(info.value)


async def test_engine_names_a_rest_dns_failure_dns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = EngineConfig(
        rest_url=REST,
        credentials=Credentials("user", "secret-password"),
        http_transport=httpx.MockTransport(_httpx_dns_failure),
        seed=1,
    )
    async with open_engine(config) as engine:
        record = await engine.wait_for(State.BACKOFF)
    assert record.reason.startswith("dns:"), record.reason
    assert engine.counters["fault.dns"] >= 1


# --- the table ---------------------------------------------------------------------------------


def _chained(*links: BaseException) -> BaseException:
    """``links[0]`` raised from ``links[1]`` raised from ... (``__cause__`` chain)."""
    for outer, inner in itertools.pairwise(links):
        outer.__cause__ = inner
    return links[0]


def _closed(code: int, reason: str) -> trio_websocket.ConnectionClosed:
    return trio_websocket.ConnectionClosed(trio_websocket.CloseReason(code, reason))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (socket.gaierror(-2, "x"), DNSError),
        (ssl.SSLError(1, "x"), TLSError),
        (_chained(trio.BrokenResourceError(), ssl.SSLError(1, "EOF")), TLSError),
        (
            _chained(
                httpx.ConnectError("x"),
                httpcore.ConnectError("x"),
                trio.BrokenResourceError(),
                ssl.SSLCertVerificationError(1, "certificate verify failed"),
            ),
            TLSError,
        ),
        (trio.TooSlowError(), ConnectTimeout),
        (_chained(httpx.ConnectTimeout("x"), httpcore.ConnectTimeout("x")), ConnectTimeout),
        (trio_websocket.ConnectionTimeout(), ConnectTimeout),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), ConnectTimeout),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ConnectionRefused),
        (_chained(httpx.ConnectError("x"), ConnectionResetError()), ConnectionRefused),
        (OSError("all attempts to connect to h:443 failed"), ConnectionRefused),
        (trio.BrokenResourceError(), ConnectionRefused),
        (trio_websocket.ConnectionRejected(404, (), b"nope"), HandshakeRejected),
        (_chained(trio_websocket.HandshakeError(), socket.gaierror(-2, "x")), DNSError),
        (trio_websocket.HandshakeError(), ConnectionRefused),
        (httpx.RemoteProtocolError("x"), ConnectionRefused),
        (_closed(1006, ""), ClosedByServer),
    ],
)
def test_table_maps_each_lower_layer_error(exc: BaseException, expected: type) -> None:
    assert isinstance(map_exception(exc), expected)


def test_connect_classification_is_always_a_connect_error() -> None:
    assert isinstance(classify_connect_error(_closed(1000, "bye")), ConnectionRefused)
    assert isinstance(classify_connect_error(ValueError("odd")), ConnectionRefused)
    mapped = map_exception(_closed(4000, "go away"))
    assert isinstance(mapped, ClosedByServer)
    assert (mapped.code, mapped.reason) == (4000, "go away")


def test_ours_pass_through_and_unknowns_are_not_renamed() -> None:
    ours = RemoteProtocolError("bad")
    assert translate(ours) is ours
    assert translate(ValueError("a bug")) is None
    assert translate(KeyError("a bug")) is None


def _raised_while_handling_dns(*, suppress: bool) -> BaseException:
    try:
        try:
            raise socket.gaierror(-2, "x")
        except OSError:
            if suppress:
                raise trio.BrokenResourceError from None
            raise trio.BrokenResourceError  # noqa: B904 - the implicit context is the point
    except trio.BrokenResourceError as exc:
        return exc
    raise AssertionError("unreachable")


def test_implicit_context_counts_unless_suppressed() -> None:
    suppressed = _raised_while_handling_dns(suppress=True)
    assert isinstance(map_exception(suppressed), ConnectionRefused)
    assert isinstance(map_exception(_raised_while_handling_dns(suppress=False)), DNSError)


def test_a_cyclic_chain_terminates() -> None:
    first, second = trio.BrokenResourceError(), OSError("x")
    first.__cause__, second.__cause__ = second, first
    assert isinstance(map_exception(first), ConnectionRefused)


def test_map_exceptions_raises_ours_from_the_original() -> None:
    original = socket.gaierror(-2, "x")
    with pytest.raises(DNSError) as info, map_exceptions():
        raise original
    assert info.value.__cause__ is original
    with pytest.raises(ValueError, match="a bug"), map_exceptions():
        raise ValueError("a bug")
    ours = ConnectTimeout("t")
    with pytest.raises(ConnectTimeout) as same, map_exceptions():
        raise ours
    assert same.value is ours


async def test_map_exceptions_leaves_cancellation_alone() -> None:
    with trio.move_on_after(0) as scope, map_exceptions():
        await trio.sleep(1)
    assert scope.cancelled_caught


def test_table_rows_are_lower_layer_types() -> None:
    """The table maps only what lower layers raise; our own errors never need a row."""
    for kind, _test, _make in TABLE:
        assert not kind.__module__.startswith("trio_tradovate")
