"""What to send next: priorities, client-side pacing, and Tradovate's penalties, sans-I/O.

Theory of operation
-------------------
Every application request becomes a :class:`Job` in one :class:`RequestScheduler`, which
lives as long as the engine (not one connection), so a read-only request that was queued or in
flight when a socket died can go out again on the next one. The per-connection trio task asks
:meth:`RequestScheduler.next_job` what to send and when; everything else here is plain
synchronous code driven by a clock value passed in, so the tests need no trio at all.

Three things decide "when":

1. **Priority** (:class:`Priority`): cancellations and liquidations first, then order placement
   and modification, then other requests, then bulk queries and subscriptions. Within a
   priority, first come first served.
2. **Pacing** (:class:`RateGovernor`): sliding-window budgets per endpoint class, defaulting to
   Tradovate's documented limits (tradovate-protocol.md §8, P-RL), so penalties stay rare.
3. **Penalties**: a ``p-ticket`` pauses the whole pipeline for ``p-time`` seconds (heartbeats
   are not requests and never pause); ``p-captcha`` or status 429 starts a *lockout* (default
   one hour) during which only essential requests (cancellations, liquidations) go out. The
   penalty state can be saved and loaded so a restarted process keeps honouring it.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from .errors import ConfigError

logger = logging.getLogger("trio_tradovate.requests")

#: Added to every ``p-time`` wait (see ``auth.PENALTY_MARGIN``): early resends are penalised.
PENALTY_MARGIN = 0.25


class Priority(enum.IntEnum):
    """Lower values go first."""

    #: Cancellations and liquidations: they reduce risk, so they never wait behind anything.
    CANCEL = 0
    #: Placing and modifying orders.
    ORDER = 1
    #: Everything not classified otherwise.
    NORMAL = 2
    #: Lists, dependents, market data and chart subscriptions: large or deferrable.
    BULK = 3


_CANCEL = frozenset(
    {
        "order/cancelorder",
        "order/liquidateposition",
        "order/liquidatepositions",
        "order/interruptorderstrategy",
    }
)
_ORDER = frozenset(
    {
        "order/placeorder",
        "order/modifyorder",
        "order/placeoso",
        "order/placeoco",
        "order/startorderstrategy",
        "order/modifyorderstrategy",
    }
)
_BULK_SUFFIXES = ("/list", "/ldeps", "/deps", "/items", "/lditems")
_BULK_PREFIXES = ("md/", "replay/", "chart/")

#: Requests that move money: never re-sent after a drop, reported as ``OutcomeUnknown``.
MONEY_MOVING = _CANCEL | _ORDER


def classify(endpoint: str) -> Priority:
    """The default priority of ``endpoint`` (lower-case, no leading ``/``)."""
    if endpoint in _CANCEL:
        return Priority.CANCEL
    if endpoint in _ORDER:
        return Priority.ORDER
    if endpoint.endswith(_BULK_SUFFIXES) or endpoint.startswith(_BULK_PREFIXES):
        return Priority.BULK
    return Priority.NORMAL


@dataclass(frozen=True)
class Window:
    """At most ``limit`` requests in any ``seconds``-long sliding window."""

    limit: int
    seconds: float

    def __post_init__(self) -> None:
        if self.limit < 1 or not self.seconds > 0:
            raise ConfigError(f"a rate window needs limit >= 1 and seconds > 0, got {self}")


#: Client-side budgets by endpoint (``"*"`` is every request). Sources: P-RL (current) gives
#: authenticated users 5,000/h and 5,000/min, and ``user/syncrequest`` 300/h per IP;
#: P-RL-old adds a per-second ceiling (tradovate-protocol.md §8). The per-second window here
#: is kept well under every quoted figure, since Tradovate says its limits vary on purpose.
DEFAULT_LIMITS: Mapping[str, tuple[Window, ...]] = {
    "*": (Window(50, 1.0), Window(4500, 60.0), Window(4500, 3600.0)),
    "user/syncrequest": (Window(280, 3600.0),),
    # REST, per IP over a rolling hour, counting every request (P-RL). The token request is
    # limited on failures only, and the engine never retries a refused login, so it is
    # not paced here.
    "auth/renewaccesstoken": (Window(14, 3600.0),),
    "auth/me": (Window(9, 3600.0),),
}


class RateGovernor:
    """Sliding-window request budgets; :meth:`delay` says how long until a send is allowed."""

    def __init__(self, limits: Mapping[str, Sequence[Window]] = DEFAULT_LIMITS) -> None:
        self._limits = {key: tuple(windows) for key, windows in limits.items()}
        self._sent: dict[tuple[str, int], deque[float]] = {}

    def _windows(self, endpoint: str) -> Iterable[tuple[tuple[str, int], Window]]:
        for key in ("*", endpoint):
            for index, window in enumerate(self._limits.get(key, ())):
                yield (key, index), window

    def delay(self, endpoint: str, now: float) -> float:
        """Seconds to wait before ``endpoint`` may be sent (0 when it may go now)."""
        wait = 0.0
        for slot, window in self._windows(endpoint):
            sent = self._sent.get(slot)
            if sent is None:
                continue
            while sent and sent[0] <= now - window.seconds:
                sent.popleft()
            if len(sent) >= window.limit:
                wait = max(wait, sent[-window.limit] + window.seconds - now)
        return wait

    def reserve(self, endpoint: str, now: float) -> float:
        """Count a send of ``endpoint`` at the first moment the budget allows it; return how
        long the caller must wait before sending (0 when it may go now)."""
        wait = self.delay(endpoint, now)
        self.record(endpoint, now + wait)
        return wait

    def record(self, endpoint: str, now: float) -> None:
        """Count one send of ``endpoint`` at ``now``."""
        for slot, window in self._windows(endpoint):
            sent = self._sent.setdefault(slot, deque())
            sent.append(now)
            while len(sent) > window.limit:
                sent.popleft()


@dataclass(eq=False)
class Job:
    """One application request, from submission to answer, across penalties and sockets."""

    endpoint: str
    query: str | Mapping[str, Any] | None
    body: Any
    priority: Priority
    #: p-ticket to present on the next send (tradovate-protocol.md §8).
    ticket: str | None = None
    #: Sent on the current socket (the server may have acted on it).
    sent: bool = False
    #: Sent on any socket, ever.
    ever_sent: bool = False
    #: How many penalties this request has met.
    penalties: int = 0
    seq: int = 0

    @property
    def money_moving(self) -> bool:
        """Whether the request may move money (never re-sent blindly)."""
        return self.endpoint in MONEY_MOVING

    def send_body(self) -> Any:
        """The body to send: the identical body, plus ``p-ticket`` after a penalty."""
        if self.ticket is None:
            return self.body
        if self.body is None:
            return {"p-ticket": self.ticket}
        if isinstance(self.body, Mapping):
            return {**self.body, "p-ticket": self.ticket}
        return self.body  # a non-object body cannot carry a ticket; resend as is


@dataclass
class PenaltyState:
    """Pipeline pause and lockout, in engine (trio) time, plus why."""

    paused_until: float = 0.0
    lockout_until: float = 0.0
    lockout_reason: str = ""
    penalties: int = 0
    lockouts: int = 0


@dataclass
class RequestScheduler:
    """The engine's outgoing request queue (see the module docstring)."""

    governor: RateGovernor = field(default_factory=RateGovernor)
    lockout: float = 3600.0
    penalty: PenaltyState = field(default_factory=PenaltyState)
    _heap: list[tuple[int, int, Job]] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._heap)

    def submit(self, job: Job) -> None:
        """Queue ``job`` behind every job of the same or higher priority."""
        job.seq = next(self._counter)
        heapq.heappush(self._heap, (int(job.priority), job.seq, job))

    def requeue(self, job: Job) -> None:
        """Put ``job`` back in its original place (it keeps its sequence number)."""
        job.sent = False
        heapq.heappush(self._heap, (int(job.priority), job.seq, job))

    def discard(self, job: Job) -> None:
        """Forget a queued job (its caller gave up)."""
        self._heap = [entry for entry in self._heap if entry[2] is not job]
        heapq.heapify(self._heap)

    def drain(self) -> list[Job]:
        """Take every queued job off the queue (the engine is stopping)."""
        jobs = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return jobs

    def locked_out(self, now: float) -> bool:
        """Whether a captcha or 429 lockout is running."""
        return now < self.penalty.lockout_until

    def next_job(self, now: float) -> tuple[Job | None, float]:
        """The job to send now, or ``(None, seconds to wait)`` (``inf`` when nothing is queued).

        A returned job is taken off the queue and counted by the governor.
        """
        if not self._heap:
            return None, float("inf")
        if now < self.penalty.paused_until:
            return None, self.penalty.paused_until - now
        lockout = self.locked_out(now)
        wait = float("inf")
        skipped: list[tuple[int, int, Job]] = []
        chosen: Job | None = None
        while self._heap:
            entry = heapq.heappop(self._heap)
            job = entry[2]
            if lockout and job.priority is not Priority.CANCEL:
                skipped.append(entry)
                wait = min(wait, self.penalty.lockout_until - now)
                continue
            delay = self.governor.delay(job.endpoint, now)
            if delay > 0:
                skipped.append(entry)
                wait = min(wait, delay)
                break  # strict priority: nothing lower overtakes a paced higher-priority job
            chosen = job
            break
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        if chosen is None:
            return None, wait
        self.governor.record(chosen.endpoint, now)
        return chosen, 0.0

    def on_penalty(self, job: Job, ticket: str, p_time: float, now: float) -> float:
        """A ``p-ticket`` answer: pause the pipeline, park ``job`` first in line with its ticket.

        Repeated penalties on one request wait longer (``p-time`` doubled each time), as
        Tradovate lengthens back-off for repeat offenders (P-RL).
        """
        job.penalties += 1
        job.ticket = ticket
        wait: float = max(p_time, 0.0) * 2.0 ** (job.penalties - 1) + PENALTY_MARGIN
        self.penalty.paused_until = max(self.penalty.paused_until, now + wait)
        self.penalty.penalties += 1
        self.requeue(job)
        return wait

    def on_lockout(self, reason: str, now: float) -> None:
        """A captcha or 429: only cancellations and liquidations for ``lockout`` seconds."""
        self.penalty.lockout_until = max(self.penalty.lockout_until, now + self.lockout)
        self.penalty.lockout_reason = reason
        self.penalty.lockouts += 1

    # ----------------------------------------------------------------------- persistence

    def dump_penalty(self, now: float, wall: datetime) -> bytes:
        """The running pause and lockout as JSON with wall-clock deadlines."""

        def wall_at(deadline: float) -> str | None:
            if deadline <= now:
                return None
            return (wall + timedelta(seconds=deadline - now)).isoformat()

        return orjson.dumps(
            {
                "paused_until": wall_at(self.penalty.paused_until),
                "lockout_until": wall_at(self.penalty.lockout_until),
                "lockout_reason": self.penalty.lockout_reason,
            }
        )

    def load_penalty(self, data: bytes, now: float, wall: datetime) -> None:
        """Resume a pause or lockout saved by :meth:`dump_penalty` (possibly by another process).

        Raises:
            ConfigError: the saved state is not what :meth:`dump_penalty` writes.
        """
        try:
            saved = orjson.loads(data)
            paused = saved.get("paused_until")
            locked = saved.get("lockout_until")
            reason = str(saved.get("lockout_reason") or "")
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise ConfigError(f"penalty state file is not valid: {exc}") from None

        def trio_at(text: Any) -> float:
            if not isinstance(text, str):
                return 0.0
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ConfigError(f"penalty state file has a bad time {text!r}") from None
            return now + (moment - wall).total_seconds()

        self.penalty.paused_until = max(self.penalty.paused_until, trio_at(paused))
        lockout_until = trio_at(locked)
        if lockout_until > now:
            self.penalty.lockout_until = max(self.penalty.lockout_until, lockout_until)
            self.penalty.lockout_reason = reason


#: The longest wait a server-supplied number may impose (``p-time``): longer is clamped.
MAX_SERVER_WAIT = 3600.0


def server_wait(value: Any, *, what: str) -> float:
    """A wait the server asked for, as seconds in ``[0, MAX_SERVER_WAIT]``; never raises."""
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) and seconds != math.inf:
        logger.warning("%s is not a number (%r): waiting 0 s", what, value)
        return 0.0
    clamped = min(max(seconds, 0.0), MAX_SERVER_WAIT)
    if clamped != seconds:
        logger.warning("%s of %r s clamped to %g s", what, value, clamped)
    return clamped
