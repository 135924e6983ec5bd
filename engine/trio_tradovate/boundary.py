"""The one place where lower-layer exceptions become ours (the I/O side of :mod:`.errors`).

trio, trio-websocket, websockets, httpx (and, below it, httpcore), ssl and the socket module
each raise their own exceptions, and they wrap one another: a DNS failure on the REST login
reaches us as ``httpx.ConnectError``, raised ``from`` an ``httpcore.ConnectError`` that
carries, as its argument and its ``__context__``, the ``socket.gaierror`` trio's resolver
raised. Deciding
what happened means looking down that chain, and doing it in one declared table (as httpx's
``map_httpcore_exceptions`` and httpcore's ``map_exceptions`` do) keeps every caller's answer
the same.

How a lookup works: every exception of the chain (see :func:`_chain`; outermost first, at most
:data:`MAX_CHAIN` links) is matched against :data:`TABLE`. The row nearest the top of the
table that any link matches wins (ties go to the outermost link), so the table is ordered from
the most specific meaning to the vaguest. That is why ``httpx.ConnectError`` around a
``gaierror`` is a :class:`DNSError` and not the generic "could not connect" of its own row.

:mod:`.errors` stays free of trio, trio-websocket and httpx imports so that the sans-I/O
modules (:mod:`.protocol`, :mod:`.scheduler`, ...) can use the error types without loading
an I/O stack; only this module knows the lower layers.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

import h11
import httpx
import trio
import trio_websocket
import websockets.exceptions as wsx

from .errors import (
    ClosedByServer,
    ConnectError,
    ConnectionRefused,
    ConnectTimeout,
    DNSError,
    HandshakeRejected,
    TLSError,
    TradovateError,
)

__all__ = [
    "MAX_CHAIN",
    "TABLE",
    "Rule",
    "classify_connect_error",
    "map_exception",
    "map_exceptions",
    "translate",
]

#: How many links of a ``__cause__``/``__context__`` chain are examined. Real chains are three
#: or four deep (httpx -> httpcore -> trio -> ssl); the bound keeps a pathological chain cheap.
MAX_CHAIN = 16

#: One row: the lower-layer type, an optional further test on the instance, and what it means.
Rule = tuple[
    type[BaseException],
    Callable[[BaseException], bool] | None,
    Callable[[BaseException], TradovateError],
]

_REFUSED_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH}
    | {errno.ENETUNREACH}
)


def _is_refused(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS


def _caused_by_ssl(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, ssl.SSLError)


def _message(exc: BaseException) -> str:
    """The lower layer's own text, or its type name when it has none."""
    return str(exc) or type(exc).__name__


def _rejected(exc: BaseException) -> TradovateError:
    assert isinstance(exc, trio_websocket.ConnectionRejected)
    return HandshakeRejected(exc.status_code)


def _closed(exc: BaseException) -> TradovateError:
    assert isinstance(exc, trio_websocket.ConnectionClosed)
    if exc.reason is None:
        return ClosedByServer(1006, "no close reason")
    return ClosedByServer(exc.reason.code, exc.reason.reason or exc.reason.name)


def _ws_rejected(exc: BaseException) -> TradovateError:
    assert isinstance(exc, wsx.InvalidStatus)
    return HandshakeRejected(exc.response.status_code)


def _ws_closed(exc: BaseException) -> TradovateError:
    """The ``websockets`` close: the server's close frame when one came, else the one we sent
    when the protocol failed the connection (1009 too big, 1002, 1007), else none (1006)."""
    assert isinstance(exc, wsx.ConnectionClosed)
    close = exc.rcvd or exc.sent
    if close is None:
        return ClosedByServer(1006, "no close frame")
    return ClosedByServer(close.code, close.reason or "no close reason")


#: The mapping, most specific meaning first (see the module docstring for how it is read).
TABLE: Final[tuple[Rule, ...]] = (
    # The server answered the upgrade, with something other than 101.
    (trio_websocket.ConnectionRejected, None, _rejected),
    (wsx.InvalidStatus, None, _ws_rejected),
    # A message over max_message_size (the websockets protocol closed with 1009); looked for
    # before the close row so the code says why even when no close frame could be sent.
    (wsx.PayloadTooBig, None, lambda e: ClosedByServer(1009, f"message too big: {e}")),
    # The name did not resolve: trio's getaddrinfo (and anyio's) raise socket.gaierror.
    (socket.gaierror, None, lambda e: DNSError(f"could not resolve host: {_message(e)}")),
    # trio.SSLStream raises BrokenResourceError from the SSLError; either link says TLS.
    (ssl.SSLError, None, lambda e: TLSError(f"TLS handshake failed: {_message(e)}")),
    (
        trio.BrokenResourceError,
        _caused_by_ssl,
        lambda e: TLSError(f"TLS handshake failed: {_message(e.__cause__ or e)}"),
    ),
    # Our own fail_after, httpx's connect/read timeouts, trio-websocket's, the kernel's.
    (trio.TooSlowError, None, lambda e: ConnectTimeout("connect timed out")),
    (httpx.TimeoutException, None, lambda e: ConnectTimeout("connect timed out")),
    (trio_websocket.ConnectionTimeout, None, lambda e: ConnectTimeout("connect timed out")),
    (TimeoutError, None, lambda e: ConnectTimeout("connect timed out")),
    # Refused, reset or unreachable: the server (or the route to it) is not accepting.
    (OSError, _is_refused, lambda e: ConnectionRefused(f"connection refused: {_message(e)}")),
    # A websocket that closed (the read loop's concern; also seen mid-handshake).
    (trio_websocket.ConnectionClosed, None, _closed),
    (wsx.ConnectionClosed, None, _ws_closed),
    # The vaguest rows: something failed while connecting and no link says more.
    (OSError, None, lambda e: ConnectionRefused(f"could not connect: {_message(e)}")),
    (
        trio.BrokenResourceError,
        None,
        lambda e: ConnectionRefused(f"could not connect: {_message(e)}"),
    ),
    (
        trio_websocket.HandshakeError,
        None,
        lambda e: ConnectionRefused(f"websocket handshake failed: {type(e).__name__}"),
    ),
    # trio-websocket 0.12.2 given garbage instead of an HTTP answer (see transport).
    (
        h11.LocalProtocolError,
        None,
        lambda e: ConnectionRefused(f"websocket handshake failed: {_message(e)}"),
    ),
    # EOF or garbage instead of an HTTP answer, a bad Sec-WebSocket-Accept, an extension or
    # subprotocol we never offered.
    (
        wsx.InvalidHandshake,
        None,
        lambda e: ConnectionRefused(f"websocket handshake failed: {_message(e)}"),
    ),
    (httpx.HTTPError, None, lambda e: ConnectionRefused(f"could not connect: {_message(e)}")),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from, outermost first, each at most once.

    A link leads on to its ``__cause__`` (else its ``__context__``, unless suppressed, as a
    traceback prints it) and to any exception among its ``args``. The second path matters:
    httpcore wraps as ``ConnectError(original) from original``, and its connection pool then
    re-raises that ``from None``, which erases the cause but not the argument.
    """
    seen: set[int] = set()
    pending: deque[BaseException] = deque([exc])
    while pending and len(seen) < MAX_CHAIN:
        link = pending.popleft()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        after = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
        if after is not None:
            pending.append(after)
        pending.extend(arg for arg in link.args if isinstance(arg, BaseException))


def translate(exc: BaseException) -> TradovateError | None:
    """Our error for ``exc`` by :data:`TABLE`, ``exc`` itself when it is already ours, or
    ``None`` when no row matches any link (a bug, a cancellation: not ours to rename)."""
    if isinstance(exc, TradovateError):
        return exc
    best: tuple[int, BaseException] | None = None
    for link in _chain(exc):
        for index, (kind, test, _) in enumerate(TABLE):
            if best is not None and index >= best[0]:
                break
            if isinstance(link, kind) and (test is None or test(link)):
                best = (index, link)
                break
    if best is None:
        return None
    index, link = best
    return TABLE[index][2](link)


def map_exception(exc: BaseException) -> TradovateError:
    """Our error for a lower-layer ``exc`` (see :data:`TABLE`).

    An exception no row knows is reported as :class:`ConnectionRefused` naming its type: this
    is called where a connection attempt failed, and "could not connect" is then the truth
    that the engine's backoff can act on. Use :func:`translate` to tell the cases apart.
    """
    mapped = translate(exc)
    if mapped is not None:
        return mapped
    return ConnectionRefused(f"could not connect: {type(exc).__name__}: {exc}")


def classify_connect_error(exc: BaseException) -> ConnectError:
    """:func:`map_exception` for a connection attempt: always a :class:`ConnectError`.

    Kept under the name callers used when it lived in :mod:`.errors`. A websocket that closed
    before it was open is a failed connect, not a lost connection, so a
    :class:`ClosedByServer` here becomes :class:`ConnectionRefused` with its message.
    """
    mapped = map_exception(exc)
    if isinstance(mapped, ConnectError):
        return mapped
    return ConnectionRefused(f"could not connect: {mapped}")


@contextmanager
def map_exceptions() -> Iterator[None]:
    """Re-raise lower-layer exceptions from the block as ours, ``from`` the original.

    Our own errors pass through unchanged, and so does anything no row of :data:`TABLE`
    knows (a bug stays visible as itself). Only ``Exception`` is examined: trio's
    ``Cancelled`` and ``KeyboardInterrupt`` are ``BaseException`` and must travel untouched.
    """
    try:
        yield
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc
