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
   Tradovate's documented limits (docs/protocol.md §8, P-RL), so penalties stay rare.
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

from .errors import ConfigError, excerpt

logger = logging.getLogger("trio_tradovate.scheduler")

#: Added to every ``p-time`` wait (see ``auth.PENALTY_MARGIN``): early resends are penalised.
PENALTY_MARGIN = 0.25

#: The longest wait (s) any number from the server can impose on us: ``p-time`` and the
#: penalties built on it, and a pause loaded from the penalty state file. Tradovate gives
#: ``p-time`` in seconds and documents penalties of seconds to minutes; its longest documented
#: sanction, the captcha or 429 lockout, lasts about an hour (P-RL). A larger value is a server
#: or file error, and obeying it could silence the engine for days.
MAX_SERVER_WAIT = 3600.0

#: Repeat penalties double the wait; past this many doublings every wait is at the maximum
#: anyway, and capping the exponent keeps ``2.0 ** n`` finite for any count.
_MAX_DOUBLINGS = 32


def _as_number(value: object) -> float | None:
    """``value`` as a float (``inf`` for an int beyond float range), or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) < 2**1000:
            return float(value)
        return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str) and len(value) <= 64:  # float() parses "1e999" as inf
        try:
            return float(value)
        except ValueError:
            return None
    return None


def server_wait(value: object, *, what: str) -> float:
    """A wait in seconds as the server gave it, made safe: always a float in
    ``[0, MAX_SERVER_WAIT]``; never raises.

    Accepted as given: an ``int``, a ``float`` or a numeric string within range. Anything else
    is clamped with a warning naming ``what``: a negative number to 0 (the moment has passed),
    a number above the maximum or ``inf`` to :data:`MAX_SERVER_WAIT`, and a missing value,
    text, ``NaN``, a boolean or any other JSON shape to 0, since no wait was stated. (A wrong
    zero costs one early resend, which the server answers with another penalty and a wait;
    a wrong maximum would cost an hour.)
    """
    if value is None:
        logger.warning("%s missing from the server's answer: waiting 0 s", what)
        return 0.0
    number = _as_number(value)
    if number is None or math.isnan(number):
        shown = excerpt(value, 40) if isinstance(value, str) else type(value).__name__
        logger.warning("%s from the server is not a number (%s): waiting 0 s", what, shown)
        return 0.0
    if number < 0:
        logger.warning("%s from the server is negative (%g s): waiting 0 s", what, number)
        return 0.0
    if number > MAX_SERVER_WAIT:
        logger.warning(
            "%s from the server is %g s, above the %g s maximum: waiting %g s",
            what,
            number,
            MAX_SERVER_WAIT,
            MAX_SERVER_WAIT,
        )
        return MAX_SERVER_WAIT
    return number


#: The longest ``p-ticket`` we send back. Tickets are short opaque tokens; a longer value is
#: not one, and echoing it would make every resend as large as the server's mistake.
MAX_TICKET_LENGTH = 4096


def server_ticket(value: object) -> str | None:
    """The ``p-ticket`` to present on the resend, or ``None`` when the server's is unusable.

    A string (or an integer, which some JSON producers emit for numeric ids) is used as
    given. Anything else is logged and dropped: the request is then resent without a ticket
    after its wait, and a server that insists answers with a new penalty. Never raises.
    """
    if isinstance(value, str) and len(value) <= MAX_TICKET_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**100:
        return str(value)
    logger.warning(
        "p-ticket from the server is not a usable ticket (%s): resending without one",
        f"{len(value)} chars" if isinstance(value, str) else type(value).__name__,
    )
    return None


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
#: P-RL-old adds a per-second ceiling (docs/protocol.md §8). The per-second window here
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
    #: p-ticket to present on the next send (docs/protocol.md §8).
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

    def on_penalty(self, job: Job, ticket: str | None, p_time: object, now: float) -> float:
        """A ``p-ticket`` answer: pause the pipeline, park ``job`` first in line with its ticket.

        Repeated penalties on one request wait longer (``p-time`` doubled each time), as
        Tradovate lengthens back-off for repeat offenders (P-RL). ``p_time`` is the server's
        value as received, validated and clamped here by :func:`server_wait`, and so is the
        doubled product: no count of penalties pauses longer than :data:`MAX_SERVER_WAIT`
        (plus the margin).
        """
        job.penalties += 1
        job.ticket = ticket
        base = server_wait(p_time, what="p-time")
        doublings = min(job.penalties - 1, _MAX_DOUBLINGS)
        wait = min(base * 2.0**doublings, MAX_SERVER_WAIT) + PENALTY_MARGIN
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

        The file is input we did not check when it was written (another version, another
        process, a hand edit, a torn write), so it is validated as server input is: any
        content either loads or raises :class:`ConfigError`, and what loads is clamped. A
        saved lockout lasts at most ``lockout`` seconds from now and a saved pause at most
        :data:`MAX_SERVER_WAIT`, so a file claiming a lockout until the year 9999 costs one
        lockout, not the engine.

        Raises:
            ConfigError: the content is not what :meth:`dump_penalty` writes; the message
                says the file is corrupt and may be deleted.
        """
        try:
            saved = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _corrupt(f"not JSON ({exc.msg})") from None
        if not isinstance(saved, dict):
            raise _corrupt(f"a JSON {type(saved).__name__}, not an object")
        reason = saved.get("lockout_reason", "")
        if reason is None:
            reason = ""
        if not isinstance(reason, str):
            raise _corrupt("lockout_reason is not text")
        paused = _saved_wait(saved.get("paused_until"), "paused_until", wall)
        locked = _saved_wait(saved.get("lockout_until"), "lockout_until", wall)
        if paused > MAX_SERVER_WAIT:
            logger.warning(
                "penalty state file: pause of %.0f s shortened to %g s", paused, MAX_SERVER_WAIT
            )
            paused = MAX_SERVER_WAIT
        if locked > self.lockout:
            logger.warning(
                "penalty state file: lockout of %.0f s shortened to %g s", locked, self.lockout
            )
            locked = self.lockout
        if paused > 0:
            self.penalty.paused_until = max(self.penalty.paused_until, now + paused)
        if locked > 0:
            self.penalty.lockout_until = max(self.penalty.lockout_until, now + locked)
            self.penalty.lockout_reason = reason[:200]


def _corrupt(why: str) -> ConfigError:
    return ConfigError(
        f"penalty state file is corrupt ({why}); delete it to start without a saved penalty"
    )


def _saved_wait(value: Any, name: str, wall: datetime) -> float:
    """Seconds from ``wall`` until the saved deadline ``value`` (<= 0: none or passed).

    Raises:
        ConfigError: ``value`` is neither ``null`` nor an ISO time comparable with ``wall``.
    """
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise _corrupt(f"{name} is not a time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _corrupt(f"{name} is not an ISO time: {excerpt(value, 40)}") from None
    if (moment.tzinfo is None) != (wall.tzinfo is None):
        raise _corrupt(f"{name} {excerpt(value, 40)} and the wall clock disagree on time zones")
    try:
        return (moment - wall).total_seconds()
    except OverflowError:  # pragma: no cover - datetime differences stay within timedelta
        raise _corrupt(f"{name} is out of range") from None
