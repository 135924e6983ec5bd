"""One socket's conversation with the server, sans-I/O: text and ``now`` in, typed events out.

Theory of operation
-------------------
A :class:`Session` lives exactly as long as one websocket (one *generation*), like h11's
``Connection`` and our simulator's ``SimSession``. The caller feeds it every message the
server sends (:meth:`Session.receive`) and the time when a deadline passes
(:meth:`Session.expire`); it answers with frozen event objects, each naming the
:class:`~trio_tradovate.statechart.Trigger` the supervisor fires. It never awaits, never
reads a clock and imports nothing of trio, trio-websocket or httpx, so every case is a
synchronous test.

What it owns:

- the request ids of ``authorize`` and of the one ``user/syncrequest``, and what an answer to
  each means (authorized, rejected with or without hope, snapshot, split part, penalty,
  rate limit); a second answer to either is :class:`Unrequested` and never reaches the store;
- the events that race the snapshot: kept coalesced per entity (the last value wins, as in the
  change feed), so memory is bounded by the number of entities, not by the event rate;
- split-snapshot assembly and its quiet-period deadline;
- the phase deadlines (no ``o``, no authorize answer, no snapshot in time; the rate budget of
  the syncrequest) and the silence watchdog (no frame at all for ``silence`` seconds).

What it does not own: what happens next. That is the table's (``statechart.py``); the
supervisor tells the session which node it entered (:meth:`Session.entered`) and asks it for
the frames the table's actions name (:meth:`Session.authorize`, :meth:`SyncSession.sync`).
:class:`Session` holds what every Tradovate socket shares; :class:`SyncSession` adds the
user-sync conversation, and a market-data session will add its subscriptions beside it.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import (
    AuthenticationError,
    AuthenticationTimeout,
    CaptchaRequired,
    ClosedByServer,
    ConnectError,
    ConnectTimeout,
    DNSError,
    HandshakeRejected,
    Penalized,
    RateLimited,
    RemoteProtocolError,
    RequestError,
    ServerShutdown,
    Stalled,
    SyncTimeout,
    TLSError,
    TradovateError,
    excerpt,
)
from .protocol import (
    Close,
    EntityEvent,
    Heartbeat,
    Malformed,
    Open,
    Push,
    Response,
    encode_request,
    parse_entity_event,
    parse_frame,
)
from .scheduler import PENALTY_MARGIN, server_ticket, server_wait
from .statechart import Node, Trigger

logger = logging.getLogger("trio_tradovate.session")

#: A token received this recently (s) and refused at once was never good.
JUST_MINTED = 60.0


# --- what ends a connection --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """Why a connection ended: the kind named in transition reasons, and the typed error."""

    kind: str
    error: TradovateError
    #: The next attempt waits at least this long (a ``p-time``, a lockout).
    min_delay: float = 0.0
    #: The ``p-ticket`` the next socket's syncrequest presents (tradovate-protocol §8).
    ticket: str | None = field(default=None, repr=False)
    #: ``captcha`` or ``429`` when this fault began a penalty lockout.
    lockout: str | None = None

    def describe(self) -> str:
        return f"{self.kind}: {self.error}"


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """``o``: the server waits for ``authorize``."""

    trigger: ClassVar[Trigger] = Trigger.OPENED


@dataclass(frozen=True, slots=True)
class ServerHeartbeat:
    """``h``."""

    trigger: ClassVar[Trigger] = Trigger.HEARTBEAT


@dataclass(frozen=True, slots=True)
class Authorized:
    """``authorize`` answered ``s=200``; ``sync_delay`` is what the syncrequest's budget asks."""

    sync_delay: float = 0.0
    trigger: ClassVar[Trigger] = Trigger.AUTHORIZED


@dataclass(frozen=True, slots=True)
class AuthorizationRejected:
    """``authorize`` refused. ``fresh``: the token was minted for this very attempt;
    ``renewable``: the engine can get another (it has credentials)."""

    fault: Fault
    fresh: bool
    renewable: bool
    trigger: ClassVar[Trigger] = Trigger.AUTH_REJECTED


@dataclass(frozen=True, slots=True)
class SnapshotReady:
    """The whole snapshot (one answer, or split parts assembled)."""

    snapshot: Mapping[str, Any]
    trigger: ClassVar[Trigger] = Trigger.SNAPSHOT


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """One part of a split snapshot (``splitResponses``)."""

    part: Mapping[str, Any]
    trigger: ClassVar[Trigger] = Trigger.SNAPSHOT_PART


@dataclass(frozen=True, slots=True)
class PartsComplete:
    """``split_quiet`` passed without a new part: the snapshot is complete (no marker exists)."""

    trigger: ClassVar[Trigger] = Trigger.PARTS_COMPLETE


@dataclass(frozen=True, slots=True)
class BudgetReady:
    """The syncrequest's rate budget allows it now."""

    trigger: ClassVar[Trigger] = Trigger.BUDGET_READY


@dataclass(frozen=True, slots=True)
class SyncRejected:
    """The syncrequest was refused, penalised or rate limited."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.SYNC_REJECTED


@dataclass(frozen=True, slots=True)
class EntityEvents:
    """A valid ``props`` event."""

    event: EntityEvent
    trigger: ClassVar[Trigger] = Trigger.PROPS


@dataclass(frozen=True, slots=True)
class Answer:
    """A response to an id this session does not own: an application request's, perhaps."""

    response: Response
    trigger: ClassVar[Trigger] = Trigger.ANSWER


@dataclass(frozen=True, slots=True)
class Unrequested:
    """A second answer to ``authorize`` or to the syncrequest: counted, never applied."""

    response: Response
    why: str
    trigger: ClassVar[Trigger] = Trigger.UNREQUESTED


@dataclass(frozen=True, slots=True)
class OtherPush:
    """An event this socket does not serve (``md``, ``chart``, ``clock``, unknown kinds)."""

    kind: str
    trigger: ClassVar[Trigger] = Trigger.PUSH


@dataclass(frozen=True, slots=True)
class MalformedInput:
    """Input that cannot be understood; the connection stays up."""

    error: RemoteProtocolError
    trigger: ClassVar[Trigger] = Trigger.MALFORMED


@dataclass(frozen=True, slots=True)
class ServerClosing:
    """``c[code, "reason"]``."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.SERVER_CLOSING


@dataclass(frozen=True, slots=True)
class ShutdownAnnounced:
    """A ``shutdown`` event with its ``reasonCode``."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.SHUTDOWN


@dataclass(frozen=True, slots=True)
class PhaseTimedOut:
    """No ``o``, no authorize answer, or no snapshot within its limit."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.TIMED_OUT


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The websocket closed or dropped, or the server went silent."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.LOST


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """No websocket: DNS, TLS, refused, timed out, upgrade rejected, token not to be had."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.CONNECT_FAILED


@dataclass(frozen=True, slots=True)
class Unrecoverable:
    """Nothing to retry with (for example the credentials were refused over REST)."""

    fault: Fault
    trigger: ClassVar[Trigger] = Trigger.FAIL


Ending = (
    AuthorizationRejected
    | SyncRejected
    | ServerClosing
    | ShutdownAnnounced
    | PhaseTimedOut
    | ConnectionEnded
    | ConnectFailed
    | Unrecoverable
)

#: The event classes that end a connection (each carries a :class:`Fault`).
ENDING_TYPES = (
    AuthorizationRejected,
    SyncRejected,
    ServerClosing,
    ShutdownAnnounced,
    PhaseTimedOut,
    ConnectionEnded,
    ConnectFailed,
    Unrecoverable,
)

SessionEvent = (
    Opened
    | ServerHeartbeat
    | Authorized
    | SnapshotReady
    | SnapshotPart
    | PartsComplete
    | BudgetReady
    | EntityEvents
    | Answer
    | Unrequested
    | OtherPush
    | MalformedInput
    | Ending
)

#: Every event class, for tests that walk them.
EVENT_TYPES: tuple[type, ...] = (
    Opened,
    ServerHeartbeat,
    Authorized,
    AuthorizationRejected,
    SnapshotReady,
    SnapshotPart,
    PartsComplete,
    BudgetReady,
    SyncRejected,
    EntityEvents,
    Answer,
    Unrequested,
    OtherPush,
    MalformedInput,
    ServerClosing,
    ShutdownAnnounced,
    PhaseTimedOut,
    ConnectionEnded,
    ConnectFailed,
    Unrecoverable,
)

#: Websocket close codes that mean the bytes were bad, not that the peer went away.
PROTOCOL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1009})

_PUSH_ELSEWHERE = frozenset({"md", "chart", "clock"})


def closed_fault(code: int, reason: str) -> Fault:
    """The fault of a websocket that closed with ``code`` (1006: no close frame at all)."""
    if code in PROTOCOL_CLOSE_CODES:
        kind = "protocol_error"
    elif code == 1006:
        kind = "dropped"
    else:
        kind = "closed_by_server"
    return Fault(kind, ClosedByServer(code, reason))


@dataclass(frozen=True)
class Limits:
    """The time limits a session enforces, in seconds."""

    connect: float
    authorize: float
    sync: float
    silence: float
    split_quiet: float = 0.5


class Session:
    """What every Tradovate socket's conversation shares (see the module docstring)."""

    def __init__(
        self,
        *,
        generation: int,
        now: float,
        limits: Limits,
        token: str,
        token_minted_at: float | None,
        renewable: bool,
    ) -> None:
        self.generation = generation
        self.limits = limits
        self._token = token
        self._token_minted_at = token_minted_at
        self._renewable = renewable
        #: Request ids of this socket, shared with the application requests sent on it.
        self.request_ids: Iterator[int] = itertools.count(0)
        self.started_at = now
        self.last_frame_at = now
        self._opened = False
        self._authorize_id: int | None = None
        self._authorize_answered = False
        self._node = Node.CONNECTING
        self._phase_deadline = now + limits.connect

    def __repr__(self) -> str:  # no token in here
        return f"<{type(self).__name__} generation={self.generation} node={self._node.value}>"

    # -- what the caller tells us -----------------------------------------------------------

    def entered(self, node: Node, now: float) -> None:
        """The supervisor's chart entered ``node``: set its phase deadline."""
        self._node = node
        if node is Node.AUTHENTICATING:
            self._phase_deadline = now + self.limits.authorize
        elif node is Node.CONNECTING:
            self._phase_deadline = self.started_at + self.limits.connect
        else:
            self._phase_deadline = self._deadline_of(node, now)

    def _deadline_of(self, node: Node, now: float) -> float:
        return math.inf

    def next_deadline(self) -> float:
        """When :meth:`expire` has something to say (phase limit or silence)."""
        return min(self._phase_deadline, self.last_frame_at + self.limits.silence)

    def expire(self, now: float) -> list[SessionEvent]:
        """What the passing of time means at ``now`` (nothing if no deadline passed)."""
        if now >= self.last_frame_at + self.limits.silence:
            silence = self.limits.silence
            return [ConnectionEnded(Fault("stalled", Stalled(silence)))]
        if now < self._phase_deadline:
            return []
        self._phase_deadline = math.inf
        return self._phase_expired(now)

    def _phase_expired(self, now: float) -> list[SessionEvent]:
        if self._node is Node.AUTHENTICATING:
            error: TradovateError = AuthenticationTimeout(
                f"authorize unanswered after {self.limits.authorize:g} s"
            )
            return [PhaseTimedOut(Fault("auth_timeout", error))]
        error = ConnectTimeout(f"no 'o' frame within {self.limits.connect:g} s")
        return [PhaseTimedOut(Fault("connect_timeout", error))]

    # -- what the server says ---------------------------------------------------------------

    def receive(self, message: str | bytes, now: float) -> list[SessionEvent]:
        """Every event one websocket message holds, in order."""
        self.last_frame_at = now
        if not isinstance(message, str):
            return [MalformedInput(RemoteProtocolError("binary frame", message))]
        try:
            frames = parse_frame(message)
        except RemoteProtocolError as exc:
            return [MalformedInput(exc)]
        events: list[SessionEvent] = []
        for frame in frames:
            if isinstance(frame, Push):
                events.append(self._on_push(frame, now))
            elif isinstance(frame, Response):
                events.append(self._on_response(frame, now))
            elif isinstance(frame, Heartbeat):
                events.append(ServerHeartbeat())
            elif isinstance(frame, Open):
                events.append(self._on_open())
            elif isinstance(frame, Close):
                fault = Fault("closed_by_server", ClosedByServer(frame.code, frame.reason))
                events.append(ServerClosing(fault))
            elif isinstance(frame, Malformed):
                events.append(MalformedInput(frame.error))
        return events

    def _on_open(self) -> SessionEvent:
        if self._opened:
            return MalformedInput(RemoteProtocolError("second 'o' frame on one socket"))
        self._opened = True
        return Opened()

    def _on_push(self, push: Push, now: float) -> SessionEvent:
        if push.kind == "shutdown":
            data = push.data if isinstance(push.data, dict) else {}
            code = data.get("reasonCode")
            text = data.get("reason")
            error = ServerShutdown(
                code if isinstance(code, str) and code else "Unknown",
                excerpt(text, 200) if isinstance(text, str) else None,
            )
            return ShutdownAnnounced(Fault("shutdown", error))
        return OtherPush(push.kind)

    def _on_response(self, response: Response, now: float) -> SessionEvent:
        if response.request_id == self._authorize_id:
            if self._authorize_answered:
                return Unrequested(response, "a second answer to authorize")
            self._authorize_answered = True
            return self._authorize_answer(response, now)
        return Answer(response)

    def _authorize_answer(self, response: Response, now: float) -> SessionEvent:
        if response.status == 200:
            return Authorized()
        detail = response.data
        if isinstance(detail, dict):
            detail = detail.get("errorText", detail)
        error = AuthenticationError(
            f"authorize rejected with status {response.status}: {excerpt(str(detail), 80)}",
            status=response.status,
            retryable=self._renewable,
        )
        minted = self._token_minted_at
        fresh = minted is not None and now - minted <= JUST_MINTED
        return AuthorizationRejected(Fault("auth_rejected", error), fresh, self._renewable)

    # -- what the table's actions send -------------------------------------------------------

    def authorize(self) -> str:
        """The ``authorize`` frame (its body is the raw token)."""
        self._authorize_id = next(self.request_ids)
        return encode_request("authorize", self._authorize_id, None, self._token)


class SyncSession(Session):
    """The user-sync socket: :class:`Session` plus the one syncrequest and its snapshot."""

    def __init__(
        self,
        *,
        split: bool,
        sync_pace: Callable[[float], float],
        lockout_seconds: float,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self._split = split
        self._sync_pace = sync_pace
        self._lockout_seconds = lockout_seconds
        self._sync_id: int | None = None
        self._sync_answers = 0
        self._sync_delay = 0.0
        self._parts: list[Mapping[str, Any]] = []
        self._last_part_at = 0.0
        #: Events that raced the snapshot, the latest per entity.
        self._early: dict[tuple[str, int], tuple[str, Mapping[str, Any]]] = {}

    def _deadline_of(self, node: Node, now: float) -> float:
        if node is Node.SYNC_PACED:
            return now + self._sync_delay
        if node is Node.SYNC_SENT:
            return now + self.limits.sync
        if node is Node.SYNC_COLLECTING:
            return self._last_part_at + self.limits.split_quiet
        return math.inf

    def _phase_expired(self, now: float) -> list[SessionEvent]:
        if self._node is Node.SYNC_PACED:
            return [BudgetReady()]
        if self._node is Node.SYNC_COLLECTING:
            return [PartsComplete()]
        if self._node is Node.SYNC_SENT:
            error = SyncTimeout(f"user/syncrequest unanswered after {self.limits.sync:g} s")
            return [PhaseTimedOut(Fault("sync_timeout", error))]
        return super()._phase_expired(now)

    def _authorize_answer(self, response: Response, now: float) -> SessionEvent:
        answer = super()._authorize_answer(response, now)
        if isinstance(answer, Authorized):
            self._sync_delay = max(0.0, self._sync_pace(now))
            return Authorized(self._sync_delay)
        return answer

    def _on_push(self, push: Push, now: float) -> SessionEvent:
        if push.kind == "props":
            try:
                return EntityEvents(parse_entity_event(push.data))
            except RemoteProtocolError as exc:
                return MalformedInput(exc)
        return super()._on_push(push, now)

    def _on_response(self, response: Response, now: float) -> SessionEvent:
        if self._sync_id is None or response.request_id != self._sync_id:
            return super()._on_response(response, now)
        self._sync_answers += 1
        if self._sync_answers > 1 and not self._split:
            return Unrequested(response, "a second answer to the one syncrequest")
        rejected = self._sync_fault(response)
        if rejected is not None:
            return SyncRejected(rejected)
        assert isinstance(response.data, dict)
        if not self._split:
            return SnapshotReady(response.data)
        if self._node in (Node.SYNC_SENT, Node.SYNC_COLLECTING):
            self._parts.append(response.data)
            self._last_part_at = now
            if self._node is Node.SYNC_COLLECTING:  # the quiet period starts again
                self._phase_deadline = now + self.limits.split_quiet
        return SnapshotPart(response.data)

    def _sync_fault(self, response: Response) -> Fault | None:
        """A refused, penalised or rate-limited syncrequest.

        It is not resent on this socket: one sync per socket (Stage 2) outranks the resend.
        The next socket syncs after ``p-time`` at the earliest, presenting the ticket (§8). A
        429 or a captcha means a lockout whose window restarts with every request made during
        it (P-ERR), so the next attempt waits the whole lockout.
        """
        data = response.data
        lockout = self._lockout_seconds
        if response.status == 429:
            error: TradovateError = RateLimited(
                f"user/syncrequest answered 429: waiting {lockout:g} s"
            )
            return Fault("sync_rate_limited", error, min_delay=lockout, lockout="429")
        if response.status == 200 and isinstance(data, dict) and "p-ticket" in data:
            if data.get("p-captcha"):
                error = CaptchaRequired(f"user/syncrequest needs a captcha: waiting {lockout:g} s")
                return Fault("sync_penalized", error, min_delay=lockout, lockout="captcha")
            wait = server_wait(data.get("p-time"), what="user/syncrequest p-time")
            error = Penalized(f"user/syncrequest penalised for {wait:g} s")
            return Fault(
                "sync_penalized",
                error,
                min_delay=wait + PENALTY_MARGIN,
                ticket=server_ticket(data["p-ticket"]),
            )
        if response.status != 200 or not isinstance(data, dict):
            text = data if isinstance(data, str) else "not an object"
            error = RequestError("user/syncrequest", response.status, text)
            return Fault("sync_failed", error)
        return None

    # -- actions ----------------------------------------------------------------------------

    def sync(self, body: Mapping[str, Any]) -> str:
        """The one ``user/syncrequest`` frame of this socket."""
        if self._sync_id is not None:
            raise AssertionError("one syncrequest per socket")  # the table never asks twice
        self._sync_id = next(self.request_ids)
        return encode_request("user/syncrequest", self._sync_id, None, body)

    @property
    def sync_sent(self) -> bool:
        """Whether this socket's syncrequest went out."""
        return self._sync_id is not None

    def buffer(self, event: EntityEvent) -> None:
        """Keep an event that raced the snapshot: the latest per entity."""
        for entity in event.entities:
            key = (event.entity_type, int(entity["id"]))
            self._early.pop(key, None)  # a newer event goes to the back, as it came last
            self._early[key] = (event.event_type, entity)

    @property
    def buffered(self) -> int:
        """How many entities have an event waiting for the snapshot."""
        return len(self._early)

    def take_buffered(self) -> list[EntityEvent]:
        """The events that raced the snapshot, one per entity, oldest first; then forgets them."""
        events = [
            EntityEvent(entity_type, event_type, (entity,))
            for (entity_type, _), (event_type, entity) in self._early.items()
        ]
        self._early.clear()
        return events

    def assembled(self) -> dict[str, Any]:
        """One snapshot from the split parts: collections concatenated by name."""
        snapshot: dict[str, Any] = {}
        for part in self._parts:
            for name, values in part.items():
                if isinstance(values, list):
                    snapshot.setdefault(name, []).extend(values)
                else:
                    snapshot.setdefault(name, values)
        self._parts.clear()
        return snapshot


#: The fault kind of each connect error, most specific first.
_CONNECT_KINDS: tuple[tuple[type[TradovateError], str], ...] = (
    (DNSError, "dns"),
    (TLSError, "tls"),
    (ConnectTimeout, "connect_timeout"),
    (HandshakeRejected, "handshake_rejected"),
    (ConnectError, "refused"),
)


def connect_fault(error: TradovateError) -> Fault:
    """The fault of a connection attempt that failed with ``error``."""
    for cls, kind in _CONNECT_KINDS:
        if isinstance(error, cls):
            return Fault(kind, error)
    return Fault(type(error).__name__, error)
