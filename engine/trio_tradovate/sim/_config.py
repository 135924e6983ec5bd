"""Configuration of the Tradovate-compatible simulator.

Every default comes from docs/protocol.md §12/§13 ("Recommended defaults ... Simulator") so
that a test which does not care about a knob gets the behaviour of the documented server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["DEFAULT_REQUEST_LIMITS", "SimConfig"]

#: Rolling request limits, ``endpoint (lower-case) or "*" -> (max requests, per seconds)``.
#: docs/protocol.md §8, P-RL (current): authenticated user-level 5,000/h (also 5,000/min
#: and 5,000/s, which the hourly cap makes redundant) and ``user/syncrequest`` 300/h per IP.
#: 500 ``account/list`` requests at once therefore pass; the 5,001st within an hour does not.
DEFAULT_REQUEST_LIMITS: Mapping[str, tuple[int, float]] = MappingProxyType(
    {"*": (5000, 3600.0), "user/syncrequest": (300, 3600.0)}
)


@dataclass(frozen=True)
class SimConfig:
    """Knobs of one simulated Tradovate demo environment.

    Secrets (``password``, ``sec``) are excluded from ``repr`` so that a config printed in a
    test failure or a log line never leaks them.
    """

    seed: int = 0
    username: str = "demo-user"
    password: str = field(default="demo-password", repr=False)
    #: When set, ``accesstokenrequest`` must carry this ``appId`` (API-key logins, §9).
    app_id: str | None = None
    #: When set, ``accesstokenrequest`` must carry this ``sec``.
    sec: str | None = field(default=None, repr=False)
    #: Token lifetime in seconds; §9/§13.1: the current partner text says 80 minutes.
    token_lifetime: float = 80 * 60
    #: Server ``h`` while idle (§5: "about every 2.5 seconds").
    heartbeat_interval: float = 2.5
    #: Close a socket that is not authorized in time (§4 ISS #23, default from §12).
    auth_timeout: float = 10.0
    #: Close a socket whose client went quiet (§5: undocumented; §13.3 picks 15 s).
    client_heartbeat_timeout: float = 15.0
    #: Seconds between generated account events; ``None`` disables the generator.
    activity_interval: float | None = 1.0
    #: Demo accounts owned by the user.
    accounts: int = 2
    #: §12: a second syncrequest is always a recorded violation; strict also closes the socket.
    strict_second_sync: bool = False
    #: §9: two concurrent sessions per user; a third evicts the oldest.
    max_sessions: int = 2
    #: Probability that one activity tick emits two mutations in a single ``a[...]`` frame
    #: (§2: one frame can carry several messages).
    batch_probability: float = 0.3
    #: How long a server-initiated close waits for the client's WS close reply.
    close_timeout: float = 5.0
    #: Virtual wall clock at trio time "simulator start" (timestamps, ``expirationTime``).
    epoch: str = "2026-01-05T14:30:00Z"
    #: Largest accepted websocket message (bytes/characters), as trio-websocket counts them.
    max_message_size: int = 2**20
    #: Size of the ``inject_malformed("oversized")`` frame: just over twice the 1 MiB default
    #: message limit of trio-websocket (docs/protocol.md §15), so any default client must refuse.
    oversized_bytes: int = 2 * 2**20 + 1
    #: Rolling request limits (see :data:`DEFAULT_REQUEST_LIMITS`); exceeding one earns a
    #: ``p-ticket`` (§8) with ``limit_p_time`` seconds to wait.
    request_limits: Mapping[str, tuple[int, float]] = field(
        default_factory=lambda: DEFAULT_REQUEST_LIMITS, hash=False
    )
    #: §8 P-RL: ``syncrequest`` back-off is 3 s, the shortest documented back-off.
    limit_p_time: float = 3.0
    #: How many parts a ``splitResponses:true`` snapshot is sent in (§6; see ``_core``).
    split_parts: int = 3
    #: Market data (``_market``): seconds between steps of every contract's price process
    #: (one trade per step; 60 s must hold a whole number of at least 40 steps). Below the
    #: 2.5 s heartbeat interval, so a streaming market-data socket never sends ``h`` (§2).
    md_step_interval: float = 1.0
    #: Days of market history before the epoch's UTC midnight (charts, replay start times).
    md_history_days: int = 2
    #: Most elements (bars or ticks) one ``md/getChart`` history returns.
    md_max_elements: int = 5000

    def __post_init__(self) -> None:
        steps = 60 / self.md_step_interval if self.md_step_interval > 0 else 0.0
        if abs(steps - round(steps)) > 1e-9 or round(steps) < 40:
            raise ValueError(
                f"md_step_interval must divide 60 s into at least 40 steps, got "
                f"{self.md_step_interval!r} (1.0, 0.5, 0.25 ... work)"
            )
        if self.md_history_days < 0:
            raise ValueError(f"md_history_days must be >= 0, got {self.md_history_days!r}")
        if self.md_max_elements < 1:
            raise ValueError(f"md_max_elements must be >= 1, got {self.md_max_elements!r}")
