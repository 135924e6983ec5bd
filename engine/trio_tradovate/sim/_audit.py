"""What each simulated websocket saw: the record conformance tests assert against.

The audit is written by the sans-I/O session as it processes traffic, so it records what the
*server* observed (times are ``trio.current_time()`` values), not what a client believes it sent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["RequestRecord", "SocketAudit"]


@dataclass(frozen=True)
class RequestRecord:
    """One client request frame (``endpoint\\nid\\nquery\\nbody``, §3); heartbeats excluded.

    ``body`` is kept verbatim except for ``authorize``, whose body is the access token and is
    therefore replaced by ``"<redacted>"`` (tokens never leave the simulator in logs or reprs).
    """

    time: float
    endpoint: str
    id: int | None
    query: str
    body: str


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
