"""A market-data socket's conversation, sans-I/O: the sibling of ``SyncSession``.

Theory of operation
-------------------
:class:`MdSession` is a :class:`~trio_tradovate.session.Session` (the frames, ``authorize``,
heartbeats, phase deadlines and the silence watchdog are shared) whose socket carries
subscriptions instead of the one user sync. It lives one connection; what outlives it is the
engine's :class:`~trio_tradovate.subscriptions.SubscriptionRegistry`, which this session
drives:

- at creation it tells the registry a connection began (the server holds no subscription);
- ``authorize`` answered: :class:`MdAuthorized` carries how many subscriptions to restore,
  so the table goes ``live`` at once when there are none (guard ``nothing_to_restore``) and
  to ``syncing.restoring`` otherwise;
- :meth:`MdSession.requests` turns the registry's plan into frames (ids from this socket),
  paced by the rate budget the caller passes; what the plan defers comes back as a deadline,
  and :meth:`MdSession.expire` then reports :class:`RequestsDue`;
- answers to its requests update the registry (:class:`SubscriptionAnswered`); once every
  restored key has its answer, :meth:`expire` reports :class:`RestoreDone`;
- ``md`` and ``chart`` pushes are parsed into typed values and routed by the registry to
  the keys that asked (:class:`MarketData`); ``clock`` becomes :class:`ClockEvent`;
- a subscription with no value for ``stale_after`` is reported once
  (:class:`SubscriptionsStale`) and re-subscribed by the next plan.

The silence watchdog is the base session's: any frame is life. A streaming market-data
socket sends values and no ``h``; a quiet market sends only ``h``; both keep the socket up,
and only no frame at all for ``server_silence_timeout`` ends it. A frozen *subscription*
(others stream, it does not) is the staleness check's job, never a reconnect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import RemoteProtocolError, ReplayRefused, SyncTimeout
from .marketdata import ClockTick, parse_chart, parse_clock, parse_md
from .protocol import Push, Response, encode_request
from .replay import ReplayClock, check_answer
from .session import (
    Authorized,
    Fault,
    MalformedInput,
    PhaseTimedOut,
    Session,
    SessionEvent,
    SyncSession,
    Unrecoverable,
)
from .statechart import MdNode, Node, Trigger
from .subscriptions import Failure, SubKey, SubscriptionRegistry, Update


@dataclass(frozen=True, slots=True)
class MdAuthorized:
    """``authorize`` answered ``s=200``; ``restore`` subscriptions are to be asked again."""

    restore: int
    trigger: ClassVar[Trigger] = Trigger.AUTHORIZED


@dataclass(frozen=True, slots=True)
class RestoreDone:
    """Every subscription wanted when the connection began has its answer."""

    trigger: ClassVar[Trigger] = Trigger.RESTORED


@dataclass(frozen=True, slots=True)
class MarketData:
    """Values of one ``md`` or ``chart`` event, routed to their keys; ``malformed`` elements
    of the same event were skipped."""

    updates: list[Update]
    malformed: int = 0
    trigger: ClassVar[Trigger] = Trigger.MARKET_DATA


@dataclass(frozen=True, slots=True)
class ClockEvent:
    """A replay ``clock`` event."""

    tick: ClockTick
    trigger: ClassVar[Trigger] = Trigger.CLOCK


@dataclass(frozen=True, slots=True)
class SubscriptionAnswered:
    """The server answered a subscription request; ``failure`` when it refused."""

    failure: Failure | None
    trigger: ClassVar[Trigger] = Trigger.SUBSCRIPTION_ANSWER


@dataclass(frozen=True, slots=True)
class RequestsDue:
    """The registry has subscribe or unsubscribe requests to send (or their budget freed)."""

    trigger: ClassVar[Trigger] = Trigger.REQUESTS_DUE


@dataclass(frozen=True, slots=True)
class SubscriptionsStale:
    """Keys with no value for their ``stale_after``: each is re-subscribed once."""

    keys: list[SubKey]
    trigger: ClassVar[Trigger] = Trigger.STALE


#: Every event class a market-data session adds, for tests that walk them.
MD_EVENT_TYPES: tuple[type, ...] = (
    MdAuthorized,
    RestoreDone,
    MarketData,
    ClockEvent,
    SubscriptionAnswered,
    RequestsDue,
    SubscriptionsStale,
)


#: Nodes in which subscriptions stream (a replay socket's sync nodes included).
_STREAMING = frozenset(
    {
        MdNode.RESTORING,
        MdNode.LIVE,
        Node.SYNC_PACED,
        Node.SYNC_SENT,
        Node.SYNC_COLLECTING,
        Node.LIVE,
    }
)


class MdSession(Session):
    """One market-data (or replay) connection: :class:`Session` plus subscriptions."""

    def __init__(
        self,
        *,
        registry: SubscriptionRegistry,
        pace: Callable[[str, float], float],
        replay: ReplayClock | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self._registry = registry
        self._pace = pace
        self._due_at = math.inf
        registry.begin(self.generation)
        #: A replay socket first checks the session and starts the clock (``replay.py``):
        #: the endpoints still to send, and the id of the one out.
        self._replay = replay
        self._preamble = ["replay/checkReplaySession", "replay/initializeClock"] if replay else []
        self._preamble_id: int | None = None
        self._replay_ids: set[int] = set()

    # -- deadlines ----------------------------------------------------------------------------

    def _streaming(self) -> bool:
        return self._node in _STREAMING

    def _deadline_of(self, node: Node | MdNode, now: float) -> float:
        if node is MdNode.RESTORING:
            self._due_at = now
            return now + self.limits.sync
        if node is MdNode.LIVE or node is Node.LIVE:
            self._due_at = now  # whatever was acquired meanwhile goes out
        return super()._deadline_of(node, now)

    def wake(self) -> None:
        """The application changed the wanted set: plan at the next opportunity."""
        self._due_at = -math.inf

    def next_deadline(self) -> float:
        deadline = super().next_deadline()
        if not self._streaming():
            return deadline
        if self._node is MdNode.RESTORING and self._restored():
            return -math.inf
        return min(deadline, self._due_at, self._registry.next_stale_check())

    def expire(self, now: float) -> list[SessionEvent]:
        events = super().expire(now)
        if events or not self._streaming():
            return events
        out: list[Any] = []
        if self._node is MdNode.RESTORING and self._restored():
            out.append(RestoreDone())
        stale = self._registry.stale_keys(now)
        if stale:
            self._due_at = now
            out.append(SubscriptionsStale(stale))
        if self._due_at <= now:
            self._due_at = math.inf
            out.append(RequestsDue())
        return out

    def _phase_expired(self, now: float) -> list[SessionEvent]:
        if self._node is MdNode.RESTORING:
            left = self._registry.pending_restore
            error = SyncTimeout(
                f"{left} subscription(s) unanswered {self.limits.sync:g} s after authorize"
            )
            return [PhaseTimedOut(Fault("restore_timeout", error))]
        return super()._phase_expired(now)

    # -- what the server says -------------------------------------------------------------------

    def _authorize_answer(self, response: Response, now: float) -> SessionEvent:
        answer = super()._authorize_answer(response, now)
        if isinstance(answer, Authorized):
            pending = self._registry.pending_restore + len(self._preamble)
            return MdAuthorized(pending)  # type: ignore[return-value]
        return answer

    def _restored(self) -> bool:
        return not self._preamble and self._registry.restored

    def _on_response(self, response: Response, now: float) -> SessionEvent:
        if response.request_id in self._replay_ids:
            self._replay_ids.discard(response.request_id)
            self._due_at = now
            if response.request_id != self._preamble_id:
                return SubscriptionAnswered(None)  # type: ignore[return-value]  # changeSpeed
            self._preamble_id = None
            endpoint = self._preamble.pop(0)
            why = check_answer(response.data) if endpoint.endswith("Session") else None
            if response.status != 200:
                why = str(response.data)[:200]
            if why is not None:
                error = ReplayRefused(f"{endpoint} refused: {why}")
                return Unrecoverable(Fault("replay_refused", error))
            if self._replay is not None and not self._preamble:
                self._replay.initialized()
            return SubscriptionAnswered(None)  # type: ignore[return-value]
        if self._registry.owns(response.request_id):
            failure = self._registry.answered(response, now)
            self._due_at = now  # the next request of a key may follow its answer
            return SubscriptionAnswered(failure)  # type: ignore[return-value]
        return super()._on_response(response, now)

    def _on_push(self, push: Push, now: float) -> SessionEvent:
        kind = push.kind
        if kind == "md" or kind == "chart":
            if kind == "md":
                values, errors = parse_md(push.data)
                updates = self._registry.route_md(values, now)
            else:
                packets, errors = parse_chart(push.data)
                updates = self._registry.route_chart(packets, now)
            if errors and not updates:
                return MalformedInput(errors[0])
            return MarketData(updates, len(errors))  # type: ignore[return-value]
        if kind == "clock":
            try:
                tick = parse_clock(push.data)
            except RemoteProtocolError as exc:
                return MalformedInput(exc)
            if self._replay is not None:
                self._replay.seen(tick)
            return ClockEvent(tick)  # type: ignore[return-value]
        return super()._on_push(push, now)

    # -- what the table's actions send ------------------------------------------------------------

    def requests(self, now: float, record: Callable[[str, float], None]) -> list[str]:
        """The frames of the registry's plan for ``now``; ``record`` counts each one sent
        against the shared rate budget."""
        if self._preamble or self._replay is not None:
            replay = self._replay_requests(now, record)
            if self._preamble:
                return replay  # no market data before the clock runs
        else:
            replay = []
        budget = self._pace

        def pace(endpoint: str, when: float) -> float:
            wait = budget(endpoint, when)
            if wait <= 0:
                record(endpoint, when)  # counted now, so the next one of this plan sees it
            return wait

        planned, later = self._registry.plan(now, pace)
        frames = []
        for request in planned:
            request_id = next(self.request_ids)
            self._registry.sent(request, request_id, now)
            frames.append(encode_request(request.endpoint, request_id, None, request.body))
        self._due_at = min(self._due_at, later)
        return replay + frames

    def _replay_requests(self, now: float, record: Callable[[str, float], None]) -> list[str]:
        """The next replay request owed: the preamble one at a time, then speed changes."""
        clock = self._replay
        assert clock is not None
        if self._preamble:
            if self._preamble_id is not None:
                return []  # its answer comes first
            endpoint = self._preamble[0]
            body = clock.check_body() if endpoint.endswith("Session") else clock.initialize_body()
        else:
            change = clock.take_speed_change()
            if change is None:
                return []
            endpoint, body = "replay/changeSpeed", change
        wait = self._pace(endpoint, now)
        if wait > 0:
            self._due_at = min(self._due_at, now + wait)
            if endpoint == "replay/changeSpeed":
                clock.change_speed(clock.speed)  # still owed
            return []
        record(endpoint, now)
        request_id = next(self.request_ids)
        self._replay_ids.add(request_id)
        if self._preamble:
            self._preamble_id = request_id
        return [encode_request(endpoint, request_id, None, body)]


class ReplaySession(MdSession, SyncSession):
    """A replay connection: the replay clock and subscriptions (:class:`MdSession`), then the
    replay account's user sync (:class:`SyncSession`), on one socket (``REPLAY_TABLE``).

    Each base handles its own answers, pushes and phases and hands the rest on (``super()``):
    the market-data side first, then the sync, then what every socket shares.
    """
