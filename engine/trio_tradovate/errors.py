"""Every error trio-tradovate raises, drawn in one place.

The tree (``Fault`` kinds used in transition records are in brackets)::

    TradovateError
    ├── ConfigError                  a caller's bad argument; also a ValueError
    ├── InvalidTransition            reserved: the tables are total, so the engine never raises it
    ├── ProtocolError                abstract: someone broke the wire protocol
    │   ├── LocalProtocolError       we were asked to send something the protocol cannot carry
    │   └── RemoteProtocolError      the server sent something we cannot parse: counted as
    │                                ``malformed``, logged with an excerpt, skipped
    ├── AuthenticationError          credentials or token rejected (REST errorText, WS 401)
    │   │                            [auth_rejected, credentials_rejected]
    │   └── CaptchaRequired          (also a Penalized) the server wants a captcha
    ├── ConnectError                 no websocket could be opened
    │   ├── DNSError                 the host name did not resolve           [dns]
    │   ├── TLSError                 the TLS handshake failed                [tls]
    │   ├── ConnectTimeout           no connection within connect_timeout    [connect_timeout]
    │   ├── ConnectionRefused        the server is not accepting             [refused]
    │   └── HandshakeRejected        the HTTP upgrade was answered non-101   [handshake_rejected]
    ├── ConnectionLost               an open connection ended
    │   ├── ClosedByServer           a ``c[code,"reason"]`` frame or a websocket close
    │   │                            [closed_by_server; dropped for 1006; protocol_error for
    │   │                            1002/1003/1007/1009, e.g. a frame over max_message_size]
    │   ├── Stalled                  no frame at all for server_silence_timeout [stalled]
    │   └── ServerShutdown           a ``shutdown`` event with its reasonCode   [shutdown]
    ├── Timeout                      a phase or request took too long
    │   ├── AuthenticationTimeout    authorize unanswered                     [auth_timeout]
    │   ├── SyncTimeout              user/syncrequest unanswered              [sync_timeout]
    │   └── RequestTimeout           a caller's request unanswered
    ├── RequestError                 the server answered a request with s >= 400
    │                                [sync_failed when it is user/syncrequest]
    ├── Penalized                    Tradovate's rate limiting refused a request: a lockout
    │   ├── CaptchaRequired          p-captcha: no program can answer it; wait ~1 hour
    │   └── RateLimited              status 429: wait ~1 hour
    ├── OutcomeUnknown               a money-moving request was in flight when the connection
    │                                dropped: reconcile from the synced store, never resend
    ├── OrderError                   an order did not do what was asked (``trio_tradovate.orders``)
    │   ├── OrderRejected            refused inside an ``s:200`` answer (``failureReason`` /
    │   │                            ``failureText``, or ``errorText``)
    │   ├── OrderNotPlaced           reconciliation after ``OutcomeUnknown``: it never existed
    │   └── OrderNotFilled           it ended (cancelled, rejected, expired) without filling
    └── EngineStopped                the engine is in its terminal state; carries the reason

Like trio, we keep "you closed it" apart from "it broke": ``EngineStopped`` after
``aclose`` versus ``ConnectionLost`` for the network. Like httpx, exceptions from lower layers
(trio, trio-websocket, websockets, httpx, ssl, socket) are translated at one boundary, the table in
:mod:`trio_tradovate.boundary`, and the original is kept as ``__cause__``. This module imports
only the standard library, so sans-I/O code can raise and catch these without loading trio.
"""

from __future__ import annotations

from typing import Any

EXCERPT_LIMIT = 120


def excerpt(text: str | bytes, limit: int = EXCERPT_LIMIT) -> str:
    """A short, printable piece of untrusted input for error messages and logs."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = text[:limit]
    suffix = f"... ({len(text)} chars)" if len(text) > limit else ""
    return repr(shown) + suffix


class TradovateError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(TradovateError, ValueError):
    """A caller's argument is invalid; the message says what to change."""


class InvalidTransition(TradovateError):
    """A trigger was fired in a state whose declared table does not allow it."""

    def __init__(self, trigger: str, state: str) -> None:
        super().__init__(f"trigger {trigger!r} is not declared for state {state!r}")
        self.trigger = trigger
        self.state = state


class ProtocolError(TradovateError):
    """Abstract: the wire protocol was broken. Use a subclass."""

    def __init__(self, message: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; raise Local- or RemoteProtocolError")
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We were asked to send something the Tradovate wire format cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The server sent something we cannot parse; ``excerpt`` shows a truncated piece of it."""

    def __init__(self, message: str, data: str | bytes = "") -> None:
        self.excerpt = excerpt(data) if data else ""
        super().__init__(f"{message}: {self.excerpt}" if self.excerpt else message)


class AuthenticationError(TradovateError):
    """The server rejected our credentials or our access token.

    ``status`` is the websocket or HTTP status when there was one (401), else ``None`` for a REST
    ``errorText``. ``retryable`` says whether a fresh token could help (an expired token) or not
    (a wrong password).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Penalized(TradovateError):
    """Tradovate's rate limiting refused a request and a lockout began (docs/protocol.md §8)."""


class CaptchaRequired(Penalized, AuthenticationError):
    """Tradovate answered with ``p-captcha``: a server program cannot solve it; wait ~1 hour."""


class RateLimited(Penalized):
    """Tradovate answered 429: a user-level limit was hit; wait ~1 hour (P-RL)."""


class ConnectError(TradovateError):
    """No websocket could be opened."""


class DNSError(ConnectError):
    """The host name did not resolve."""


class TLSError(ConnectError):
    """The TLS handshake failed."""


class ConnectTimeout(ConnectError):
    """No connection, websocket handshake and ``o`` frame within ``connect_timeout``."""


class ConnectionRefused(ConnectError):
    """The server is not accepting connections (refused, reset or unreachable)."""


class HandshakeRejected(ConnectError):
    """The websocket upgrade was answered with an HTTP status other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"websocket upgrade rejected with HTTP {status}")
        self.status = status


class ConnectionLost(TradovateError):
    """An open connection ended."""


class ClosedByServer(ConnectionLost):
    """The server closed: a ``c[code,"reason"]`` frame, a websocket close, or a TCP drop (1006)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by server: code {code} {reason!r}")
        self.code = code
        self.reason = reason


class Stalled(ConnectionLost):
    """No frame at all, not even ``h``, arrived for ``silence`` seconds: a half-open socket."""

    def __init__(self, silence: float) -> None:
        super().__init__(f"no frame from the server for {silence:g} s")
        self.silence = silence


class ServerShutdown(ConnectionLost):
    """The server announced a shutdown; ``reason_code`` is Tradovate's (e.g. ``Maintenance``)."""

    def __init__(self, reason_code: str, reason: str | None) -> None:
        super().__init__(f"server shutdown: {reason_code}" + (f" ({reason})" if reason else ""))
        self.reason_code = reason_code
        self.reason = reason


class Timeout(TradovateError):
    """A phase or a request took longer than its configured limit."""


class AuthenticationTimeout(Timeout):
    """``authorize`` was not answered within ``auth_timeout``."""


class SyncTimeout(Timeout):
    """``user/syncrequest`` was not answered within ``sync_timeout``."""


class RequestTimeout(Timeout):
    """A request was not answered within its timeout; a late reply is dropped quietly."""


class RequestError(TradovateError):
    """The server refused a request: with status >= 400, or (for the typed read endpoints
    of ``engine.api``) with an ``errorText`` inside a 200 answer, ``status`` then 200.
    ``text`` is its error text."""

    def __init__(self, endpoint: str, status: int, text: str) -> None:
        super().__init__(f"{endpoint} failed with status {status}: {excerpt(text)}")
        self.endpoint = endpoint
        self.status = status
        self.text = text


class OutcomeUnknown(TradovateError):
    """A money-moving request was sent but the connection dropped before its answer.

    It is never re-sent: the order may or may not exist. Reconcile from the store, which is
    re-synced from the server's snapshot after the reconnect.
    """

    def __init__(self, endpoint: str, body: Any) -> None:
        super().__init__(f"outcome of {endpoint} unknown: connection lost before the reply")
        self.endpoint = endpoint
        self.body = body


class OrderError(TradovateError):
    """An order request or order did not do what was asked; ``endpoint`` names the request."""


class OrderRejected(OrderError):
    """Tradovate refused an order request inside a successful (``s:200``) answer.

    Order endpoints answer business failures with status 200 and ``failureReason`` (an enum
    such as ``InvalidPrice`` or ``TradingLocked``) plus ``failureText``; other endpoints use
    ``errorText``. Nothing was placed, modified or cancelled.
    """

    def __init__(self, endpoint: str, reason: str | None, text: str) -> None:
        shown = f"{reason}: {excerpt(text)}" if reason else excerpt(text)
        super().__init__(f"{endpoint} refused: {shown}")
        self.endpoint = endpoint
        #: Tradovate's ``failureReason`` (``None`` for an ``errorText`` refusal).
        self.reason = reason
        self.text = text


class OrderNotPlaced(OrderError):
    """An order whose outcome was unknown was looked for in the re-synced account and is not
    there: the server never acted on it. Placing it again is the caller's decision."""

    def __init__(self, endpoint: str, cl_ord_id: str) -> None:
        super().__init__(
            f"{endpoint} with clOrdId {cl_ord_id!r} never reached the server "
            "(not in the account after a re-sync)"
        )
        self.endpoint = endpoint
        self.cl_ord_id = cl_ord_id


class OrderNotFilled(OrderError):
    """An order reached a final status other than ``Filled`` (``status`` says which)."""

    def __init__(self, order_id: int | None, status: str) -> None:
        super().__init__(f"order {order_id} ended {status} without filling")
        self.order_id = order_id
        self.status = status


class EngineStopped(TradovateError):
    """The engine reached its terminal state; ``reason`` says why.

    ``error`` is the typed error that stopped it (for example an ``AuthenticationError``), or
    ``None`` when the application closed it; it is also the ``__cause__``.
    """

    def __init__(self, reason: str, error: TradovateError | None = None) -> None:
        super().__init__(f"engine stopped: {reason}")
        self.reason = reason
        self.error = error


class SubscriptionRefused(TradovateError):
    """The server refused a market-data subscription (unknown symbol, bad chart request...).

    It is not asked again on this connection; the next connection asks again while the
    application still holds it.
    """

    def __init__(self, key: str, text: str) -> None:
        super().__init__(f"subscription {key} refused: {text}")
        self.key = key
        self.text = text


class ReplayRefused(TradovateError):
    """The replay socket refused the session or its clock (``checkStatus`` not ``OK``, or a
    bad ``initializeClock``): the replay cannot run as configured."""
