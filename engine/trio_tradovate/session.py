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
user-sync conversation; :class:`~trio_tradovate.mdsession.MdSession` adds the subscriptions
of a market-data socket beside it.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

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
    EntityUpdate,
    Heartbeat,
    Malformed,
    Open,
    Push,
    Response,
    ServerEvent,
    encode_request,
    parse_frame,
    props_updates,
    read_props,
)
from .scheduler import PENALTY_MARGIN, server_ticket, server_wait
from .statechart import MdNode, Node, State, Trigger

if TYPE_CHECKING:
    from .config import EngineConfig

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
    #: The ``p-ticket`` the next socket's syncrequest presents (docs/protocol.md §8).
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
    """Valid ``props`` events, one update per entity, in order: every one that came in a row
    (across messages of one read) until something else did, so the table is consulted once
    per run rather than once per event."""

    updates: list[EntityUpdate]
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


def _frames(message: str | bytes) -> list[ServerEvent]:
    """The frames of one message read the general way, a fault as :class:`Malformed`."""
    if type(message) is not str:
        return [Malformed(RemoteProtocolError("binary frame", message))]
    try:
        return parse_frame(message)
    except RemoteProtocolError as exc:
        return [Malformed(exc)]


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

    @classmethod
    def of(cls, config: EngineConfig, *, split_quiet: float = 0.5) -> Limits:
        """The limits ``config`` sets, alike for every kind of socket (only the user sync
        has a split-snapshot quiet period)."""
        return cls(
            connect=config.connect_timeout,
            authorize=config.auth_timeout,
            sync=config.sync_timeout,
            silence=config.server_silence_timeout,
            split_quiet=split_quiet,
        )


class Session:
    """What every Tradovate socket's conversation shares (see the module docstring)."""

    #: The event kind this socket streams (``props`` for the user sync): its events skip
    #: the per-event objects and come out as runs of updates (:meth:`receive_batch`).
    STREAM_KIND: ClassVar[str | None] = None

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
        self._node: Node | MdNode = Node.CONNECTING
        self._phase_deadline = now + limits.connect

    def __repr__(self) -> str:  # no token in here
        return f"<{type(self).__name__} generation={self.generation} node={self._node.value}>"

    # -- what the caller tells us -----------------------------------------------------------

    def entered(self, node: Node | MdNode, now: float) -> None:
        """The supervisor's chart entered ``node``: set its phase deadline."""
        self._node = node
        if node.state is State.AUTHENTICATING:
            self._phase_deadline = now + self.limits.authorize
        elif node.state is State.CONNECTING:
            self._phase_deadline = self.started_at + self.limits.connect
        else:
            self._phase_deadline = self._deadline_of(node, now)

    def _deadline_of(self, node: Node | MdNode, now: float) -> float:
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
        if self._node.state is State.AUTHENTICATING:
            error: TradovateError = AuthenticationTimeout(
                f"authorize unanswered after {self.limits.authorize:g} s"
            )
            return [PhaseTimedOut(Fault("auth_timeout", error))]
        error = ConnectTimeout(f"no 'o' frame within {self.limits.connect:g} s")
        return [PhaseTimedOut(Fault("connect_timeout", error))]

    # -- what the server says ---------------------------------------------------------------

    def receive(self, message: str | bytes, now: float) -> list[SessionEvent]:
        """Every event one websocket message holds, in order."""
        events, _ = self.receive_batch([message], now)
        return events

    def receive_batch(
        self, messages: Sequence[str | bytes], now: float, start: int = 0
    ) -> tuple[list[SessionEvent], int]:
        """The events of ``messages[start:]``, in order, and the index of the first message
        not yet read.

        Reading stops after the first message that holds anything but streamed updates (an
        answer, a heartbeat, a close, malformed input...): the caller fires its events before
        the session reads on, since what they do (an ``authorize`` sent, a snapshot applied)
        can change what the next message means. Streamed updates in a row, across messages,
        come as one :class:`EntityEvents`.
        """
        self.last_frame_at = now
        stream_kind = self.STREAM_KIND
        fast = self._read_stream
        events: list[SessionEvent] = []
        run: list[EntityUpdate] = []
        index = start
        end = len(messages)
        while index < end:
            index = fast(messages, index, run)
            if index == end:
                break
            message = messages[index]
            index += 1
            other = len(events)
            for frame in _frames(message):
                if type(frame) is Push and frame.kind == stream_kind:
                    try:
                        self._stream(frame.data, run)
                        continue
                    except RemoteProtocolError as exc:
                        frame = Malformed(exc)
                if run:
                    events.append(EntityEvents(run))
                    run = []
                events.append(self._on_frame(frame, now))
            if len(events) > other:
                break
        if run:
            events.append(EntityEvents(run))
        return events, index

    def _read_stream(
        self, messages: Sequence[str | bytes], start: int, run: list[EntityUpdate]
    ) -> int:
        """The fast path of this socket's streamed frames: their updates onto ``run`` from
        ``start`` on, as far as it goes; the index where the general path takes over."""
        return start

    def _stream(self, data: Any, run: list[EntityUpdate]) -> None:
        """Append the updates of one streamed event to ``run`` (raises
        ``RemoteProtocolError`` when it is malformed)."""
        raise RemoteProtocolError(f"{self.STREAM_KIND} is not streamed here")

    def _on_frame(self, frame: ServerEvent, now: float) -> SessionEvent:
        if isinstance(frame, Push):
            return self._on_push(frame, now)
        if isinstance(frame, Response):
            return self._on_response(frame, now)
        if isinstance(frame, Heartbeat):
            return ServerHeartbeat()
        if isinstance(frame, Open):
            return self._on_open()
        if isinstance(frame, Close):
            return ServerClosing(
                Fault("closed_by_server", ClosedByServer(frame.code, frame.reason))
            )
        return MalformedInput(frame.error)

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

    def wake(self) -> None:
        """Something outside changed what this session would plan (a market-data session's
        subscriptions); a session with nothing to plan ignores it."""

    # -- what the table's actions send -------------------------------------------------------

    def authorize(self) -> str:
        """The ``authorize`` frame (its body is the raw token)."""
        self._authorize_id = next(self.request_ids)
        return encode_request("authorize", self._authorize_id, None, self._token)


class SyncSession(Session):
    """The user-sync socket: :class:`Session` plus the one syncrequest and its snapshot."""

    STREAM_KIND = "props"

    def _read_stream(
        self, messages: Sequence[str | bytes], start: int, run: list[EntityUpdate]
    ) -> int:
        return read_props(messages, start, run)

    def _stream(self, data: Any, run: list[EntityUpdate]) -> None:
        props_updates(data, run)

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
        #: Updates that raced the snapshot, the latest per entity.
        self._early: dict[tuple[str, int], EntityUpdate] = {}

    def _deadline_of(self, node: Node | MdNode, now: float) -> float:
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

    def buffer(self, updates: list[EntityUpdate]) -> None:
        """Keep updates that raced the snapshot: the latest per entity."""
        early = self._early
        for update in updates:
            key = (update[0], update[2]["id"])
            early.pop(key, None)  # a newer update goes to the back, as it came last
            early[key] = update

    @property
    def buffered(self) -> int:
        """How many entities have an update waiting for the snapshot."""
        return len(self._early)

    def take_buffered(self) -> list[EntityUpdate]:
        """The updates that raced the snapshot, one per entity, oldest first; then forgets
        them."""
        updates = list(self._early.values())
        self._early.clear()
        return updates

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
