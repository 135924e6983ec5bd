"""What each simulated websocket saw: the record conformance tests assert against.

The audit is written by the sans-I/O session as it processes traffic, so it records what the
*server* observed (times are ``trio.current_time()`` values), not what a client believes it sent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "MdRecord",
    "PenaltyRecord",
    "RequestRecord",
    "RestRecord",
    "RetryRecord",
    "SocketAudit",
]


@dataclass(frozen=True)
class RequestRecord:
    """One client request frame (``endpoint\\nid\\nquery\\nbody``, docs/protocol.md §3); heartbeats
    excluded.

    ``body`` is kept verbatim except for ``authorize``, whose body is the access token and is
    therefore replaced by ``"<redacted>"`` (tokens never leave the simulator in logs or reprs).
    """

    time: float
    endpoint: str
    id: int | None
    query: str
    body: str


@dataclass(frozen=True)
class PenaltyRecord:
    """A ``p-ticket`` answer the server gave instead of executing a request (§8).

    ``reason`` is ``"script"`` (a scripted penalty), ``"limit"`` (a rolling limit was
    exceeded) or ``"retry"`` (a resend presented a wrong, early or captcha ticket). Tickets are
    opaque throttling handles, not credentials, so they are recorded verbatim.
    """

    time: float
    endpoint: str
    id: int | None
    ticket: str
    p_time: float
    captcha: bool
    reason: str


@dataclass(frozen=True)
class RetryRecord:
    """A request that presented a ``p-ticket``; ``elapsed`` is the time since that ticket was
    issued (``None`` if the server never issued it)."""

    time: float
    endpoint: str
    id: int | None
    ticket: str
    elapsed: float | None
    accepted: bool


@dataclass(frozen=True)
class RestRecord:
    """One REST request as the server saw it. Deliberately no body, query or headers: those
    carry passwords and tokens (§9), which must never reach an audit or a log."""

    time: float
    method: str
    path: str
    status: int
    #: The ticket issued instead of an answer (§8), if any.
    penalty: str | None = None
    #: The ``p-ticket`` the request presented, if any, and whether it was accepted.
    ticket_presented: str | None = None
    accepted: bool | None = None


@dataclass
class MdRecord:
    """One market-data request (``md/subscribeQuote`` ... ``md/cancelChart``) as the server
    handled it: when, on which socket (its :attr:`SocketAudit.index`), what it named and how
    it was answered. ``symbol`` is the symbol or contract id as sent (for ``cancelChart``, the
    ``subscriptionId``); ``contract_id`` is what it resolved to (``None`` if nothing);
    ``chart_ids`` is ``(historicalId, realtimeId)`` of a successful ``getChart``."""

    time: float
    socket: int
    endpoint: str
    id: int
    body: str
    symbol: str | int | None = None
    contract_id: int | None = None
    status: int | None = None
    chart_ids: tuple[int, int] | None = None


@dataclass
class SocketAudit:
    """Per-connection observations, one per websocket ever accepted, in order of opening.

    ``close_reason`` is ``None`` while the socket is open, then one of ``"client closed"``,
    ``"client dropped"`` (no WS close from the client), ``"auth timeout"``,
    ``"heartbeat timeout"``, ``"dropped"``, ``"close frame"``, ``"shutdown"``, ``"evicted"``,
    ``"second syncrequest"`` (strict profile) or ``"simulator stopped"``.
    """

    index: int
    opened_at: float
    #: Which socket this is: ``"user"``, ``"md"`` (market data) or ``"replay"``.
    role: str = "user"
    authorized_at: float | None = None
    #: ``(time, status)``; status ``None`` means the authorize was deliberately ignored.
    auth_attempts: list[tuple[float, int | None]] = field(default_factory=list)
    client_heartbeats: list[float] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    syncrequest_count: int = 0
    violations: list[str] = field(default_factory=list)
    #: Frames actually written, by kind: ``"o"``, ``"h"``, ``"a"``, ``"c"``.
    frames_sent: Counter[str] = field(default_factory=Counter)
    closed_at: float | None = None
    close_reason: str | None = None
    user_id: int | None = None
    #: §8 penalties issued on this socket and resends that presented a ticket.
    penalties: list[PenaltyRecord] = field(default_factory=list)
    retries: list[RetryRecord] = field(default_factory=list)
    #: ``(time, endpoint, id)`` of requests refused with ``s:429``.
    refused_429: list[tuple[float, str, int]] = field(default_factory=list)
    #: Market-data requests handled on this socket, in order (md and replay sockets).
    md_requests: list[MdRecord] = field(default_factory=list)
