"""What a running engine looks like from outside: one frozen snapshot, and what it means.

Why one snapshot: metrics, health checks, the console and a status line all ask the same
questions (what state is each socket in and since when, how far behind is the consumer, is a
lockout running, how long does the token last), and they must not each reach into the
engine. :meth:`trio_tradovate.Engine.snapshot_metrics` answers them all at once, from what
the engine already keeps, into an :class:`EngineSnapshot` that is plain data: cheap to take
(no I/O, nothing copied but a few numbers and the last transitions), safe to hand to another
task, and easy to build by hand in a test.

:class:`Freshness` is the hook other feeds use to say "data arrived": the engine keeps one
(:attr:`Engine.freshness <trio_tradovate.Engine.freshness>`); anything that receives data
(a market-data socket, an application's own feed) calls :meth:`Freshness.touch` with a name,
and the snapshot reports the age of each name under :attr:`EngineSnapshot.staleness`, next
to the engine's own ``socket:N`` entries (time since that socket last read a frame).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Reversible
from dataclasses import dataclass

from .statechart import State, TransitionRecord

#: How many of the latest transitions a snapshot carries (for the console).
RECENT_TRANSITIONS = 8


class Freshness:
    """When each named feed last delivered data, in trio time.

    Callers pick the names (``"socket:0"`` is the engine's own; a market-data socket might
    use ``"quotes:ESZ6"``). One dict store per call: cheap enough for once per read.
    """

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def touch(self, name: str, at: float) -> None:
        """``name`` delivered data at trio time ``at``."""
        self._last[name] = at

    def forget(self, name: str) -> None:
        """Stop reporting ``name`` (a subscription that ended on purpose is not stale)."""
        self._last.pop(name, None)

    def ages(self, now: float) -> dict[str, float]:
        """Seconds since each name last delivered, as of trio time ``now``."""
        return {name: max(0.0, now - at) for name, at in self._last.items()}


@dataclass(frozen=True, slots=True)
class SocketSnapshot:
    """One socket of the engine, as of the snapshot."""

    #: The socket's index (0 for an engine with one socket; the ``shard`` of its records).
    index: int
    state: State
    #: The table node (``syncing.sent`` where :attr:`state` says ``syncing``).
    node: str
    #: Connection attempts this socket has started.
    generation: int
    #: Seconds since the socket entered :attr:`state` (since the engine opened if it never
    #: moved).
    time_in_state: float
    #: Consecutive failed attempts since its last stable connection.
    failed_attempts: int
    #: Seconds since this socket last read a frame (``None``: it never read one).
    last_frame_age: float | None
    #: Why it stopped, once it has.
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """Everything metrics, health and the console show, taken at one instant."""

    #: Trio time the snapshot was taken.
    taken_at: float
    #: The same instant on the engine's wall clock (UTC, ISO 8601).
    wall_time: str
    #: The engine's folded state (see :attr:`Engine.state <trio_tradovate.Engine.state>`).
    state: State
    sockets: tuple[SocketSnapshot, ...]
    #: A copy of :attr:`Engine.counters <trio_tradovate.Engine.counters>`.
    counters: Mapping[str, int]
    #: A copy of :attr:`Engine.delivery <trio_tradovate.Engine.delivery>` (the feed's depth).
    delivery: Mapping[str, int]
    #: Requests waiting in the engine's queue (not yet sent).
    queued_requests: int
    #: Whether a captcha or 429 lockout is running, and how long it has left (0 when not).
    locked_out: bool
    lockout_seconds_left: float
    #: Token renewals and logins so far, and seconds until the held token expires
    #: (``None``: no token yet, or the server gave no expiry).
    token_renewals: int
    token_logins: int
    token_seconds_left: float | None
    #: Seconds since each feed last delivered: ``socket:N`` per socket, plus every name fed
    #: through :class:`Freshness`.
    staleness: Mapping[str, float]
    #: The latest transitions, oldest first (at most :data:`RECENT_TRANSITIONS`).
    recent: tuple[TransitionRecord, ...] = ()
    stop_reason: str | None = None
    #: Seconds the request queue is still paused by a ``p-ticket`` penalty (0 when not).
    pause_seconds_left: float = 0.0
    #: ``p-ticket`` penalties and lockouts (captcha, 429) since the engine opened.
    penalties: int = 0
    lockouts: int = 0

    def live(self) -> tuple[bool, str]:
        """Liveness: ``False`` only once the engine stopped (by the application or by a
        policy such as rejected credentials): restarting the process is then the remedy.
        A socket backing off is alive: it is doing its job."""
        if self.state is State.STOPPED:
            return False, f"engine stopped: {self.stop_reason or 'closed'}"
        return True, "running"

    def ready(self, max_staleness: float | None = None) -> tuple[bool, str]:
        """Readiness: every socket live, no penalty lockout, the token not expired, and
        (with ``max_staleness``) every feed delivered within that many seconds. The reason
        names the first thing that is not so."""
        for socket in self.sockets:
            if socket.state is not State.LIVE:
                return False, (
                    f"socket {socket.index} is {socket.state.value} "
                    f"(for {socket.time_in_state:.1f} s)"
                )
        if not self.sockets:
            return False, "no sockets"
        if self.locked_out:
            return False, f"penalty lockout: {self.lockout_seconds_left:.0f} s left"
        if self.token_seconds_left is not None and self.token_seconds_left <= 0:
            return False, "the access token has expired"
        if max_staleness is not None:
            for name, age in sorted(self.staleness.items()):
                if age > max_staleness:
                    return False, f"{name} delivered nothing for {age:.1f} s"
        return True, "live"

    def status_line(self) -> str:
        """One line for logs and long runs: states, rates-ready totals, depth, token."""
        states = " ".join(f"{s.index}:{s.state.value}" for s in self.sockets)
        counters = self.counters
        faults = sum(n for name, n in counters.items() if name.startswith("fault."))
        token = (
            "token ?"
            if self.token_seconds_left is None
            else f"token {_duration(self.token_seconds_left)}"
        )
        lockout = f" LOCKED OUT {self.lockout_seconds_left:.0f} s" if self.locked_out else ""
        return (
            f"{self.state.value} [{states}] frames {counters.get('frames_received', 0)} "
            f"events {counters.get('props_events', 0)} reconnects {counters.get('reconnects', 0)} "
            f"faults {faults} waiting {self.delivery.get('waiting', 0)} "
            f"queued {self.queued_requests} {token}{lockout}"
        )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 3600:
        return f"{sign}{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{sign}{seconds / 60:.0f} min"
    return f"{sign}{seconds:.0f} s"


def time_in_state(
    records: Reversible[TransitionRecord],
    index: int,
    now: float,
    opened_at: float,
) -> float:
    """Seconds socket ``index`` has been in its current public state: since its latest
    connection record that changed the public state (a move between ``syncing``'s children
    does not), or ``opened_at`` if none is kept."""
    for record in reversed(records):
        if record.region == "connection" and record.shard == index and record.source != record.dest:
            return max(0.0, now - record.time)
    return max(0.0, now - opened_at)
