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

from .errors import RemoteProtocolError, SyncTimeout
from .marketdata import ClockTick, parse_chart, parse_clock, parse_md
from .protocol import Push, Response, encode_request
from .session import (
    Authorized,
    Fault,
    MalformedInput,
    PhaseTimedOut,
    Session,
    SessionEvent,
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


class MdSession(Session):
    """One market-data (or replay) connection: :class:`Session` plus subscriptions."""

    def __init__(
        self,
        *,
        registry: SubscriptionRegistry,
        pace: Callable[[str, float], float],
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self._registry = registry
        self._pace = pace
        self._due_at = math.inf
        registry.begin(self.generation)

    # -- deadlines ----------------------------------------------------------------------------

    def _streaming(self) -> bool:
        return self._node in (MdNode.RESTORING, MdNode.LIVE)

    def _deadline_of(self, node: Node | MdNode, now: float) -> float:
        if node is MdNode.RESTORING:
            self._due_at = now
            return now + self.limits.sync
        if node is MdNode.LIVE:
            self._due_at = now  # whatever was acquired meanwhile goes out
        return math.inf

    def wake(self) -> None:
        """The application changed the wanted set: plan at the next opportunity."""
        self._due_at = -math.inf

    def next_deadline(self) -> float:
        deadline = super().next_deadline()
        if not self._streaming():
            return deadline
        if self._node is MdNode.RESTORING and self._registry.restored:
            return -math.inf
        return min(deadline, self._due_at, self._registry.next_stale_check())

    def expire(self, now: float) -> list[SessionEvent]:
        events = super().expire(now)
        if events or not self._streaming():
            return events
        out: list[Any] = []
        if self._node is MdNode.RESTORING and self._registry.restored:
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
            return MdAuthorized(self._registry.pending_restore)  # type: ignore[return-value]
        return answer

    def _on_response(self, response: Response, now: float) -> SessionEvent:
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
                return ClockEvent(parse_clock(push.data))  # type: ignore[return-value]
            except RemoteProtocolError as exc:
                return MalformedInput(exc)
        return super()._on_push(push, now)

    # -- what the table's actions send ------------------------------------------------------------

    def requests(self, now: float, record: Callable[[str, float], None]) -> list[str]:
        """The frames of the registry's plan for ``now``; ``record`` counts each one sent
        against the shared rate budget."""
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
        return frames
