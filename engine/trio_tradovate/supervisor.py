"""One websocket's supervisor: connect, run the child tasks, feed the session, fire the table.

Theory of operation
-------------------
An :class:`~trio_tradovate.engine.Engine` runs one :class:`SocketSupervisor` per socket (one,
unless ``shards=N`` spreads the sync stream over N sockets). The supervisor is the only code
that fires its socket's chart (``statechart.CONNECTION_TABLE``), and it holds no protocol
logic of its own: for every connection attempt (a *generation*) it

1. gets a token and opens the websocket through the transport (a :class:`~.transport.Link` of
   the layer ``EngineConfig.websocket_layer`` names);
2. creates a sans-I/O :class:`~trio_tradovate.session.SyncSession` and runs one loop: wait for
   the next message or the session's next deadline, hand either to the session, and for each
   event it returns fire the trigger the event names, then do the action the table's rule
   names (send ``authorize``, send the syncrequest, apply the snapshot, apply an event, route
   an answer to its caller, end the connection);
3. runs two child tasks beside the loop: the **heartbeat** (``[]`` on a fixed schedule, never
   queued behind requests) and, from the moment the socket is live, the **sender** of
   application requests. Neither changes any state; a closed socket ends them quietly, and the
   loop learns why from its next receive.

The reader is the loop itself, so a frame crosses no task boundary between the socket and the
store. The silence watchdog is the session's deadline (no frame for ``server_silence_timeout``).

A supervisor sees the engine only through a :class:`SocketContext`: the token source, the
store writer, the request pipeline, the rate governor, the penalty desk, counters and the
record sink. It never touches the engine itself.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio

from . import auth
from .boundary import classify_connect_error
from .collector import CollectorDiscipline
from .config import EngineConfig, SyncOptions
from .errors import (
    AuthenticationError,
    ClosedByServer,
    ConnectError,
    EngineStopped,
    Penalized,
    TradovateError,
)
from .pipeline import Outbound, RequestPipeline
from .protocol import HEARTBEAT_FRAME
from .reconnect import ReconnectPolicy
from .scheduler import RateGovernor
from .session import (
    ENDING_TYPES,
    Answer,
    Authorized,
    ConnectFailed,
    ConnectionEnded,
    Ending,
    EntityEvents,
    Fault,
    Limits,
    MalformedInput,
    Session,
    SessionEvent,
    SnapshotPart,
    SnapshotReady,
    SyncSession,
    Unrecoverable,
    Unrequested,
    closed_fault,
    connect_fault,
)
from .statechart import (
    CONNECTION_TABLE,
    Action,
    Fired,
    MdNode,
    Node,
    Outcome,
    State,
    Statechart,
    Table,
    TransitionRecord,
    Trigger,
)
from .transport import CONNECT_ERRORS, HANDSHAKE_ERRORS, Connector, Link, link_class
from .writer import StoreWriter

logger = logging.getLogger("trio_tradovate.engine")


class TokenSource(Protocol):
    """Where a socket gets its access token (shared by every socket of an engine)."""

    @property
    def renewable(self) -> bool:
        """Whether a refused token can be replaced (the engine holds credentials)."""

    @property
    def user_id(self) -> int | None:
        """The logged-in user, once known."""

    async def get(self) -> auth.AccessToken:
        """A token fit for ``authorize``, with the user id known."""

    def reject(self, token: auth.AccessToken) -> None:
        """The server refused ``token``: the next :meth:`get` replaces it."""


class PenaltyDesk(Protocol):
    """Where a socket reports a lockout that one of its own answers began."""

    def lockout(self, reason: str) -> None:
        """A captcha or 429 answer: only cancellations and liquidations go out for a while."""


@dataclass(frozen=True)
class SocketContext:
    """What a socket supervisor may use of its engine: nothing else."""

    config: EngineConfig
    connector: Connector
    tokens: TokenSource
    writer: StoreWriter
    pipeline: RequestPipeline
    governor: RateGovernor
    penalties: PenaltyDesk
    counters: Counter[str]
    on_record: Callable[[TransitionRecord], None]
    wall_clock: Callable[[], str]
    collector: CollectorDiscipline


class Conversation(Protocol):
    """What one kind of socket says, beside what every socket shares.

    The supervisor runs every socket the same way (connect, ``authorize``, heartbeats, the
    silence watchdog, faults, backoff, records); a conversation names the socket's table, its
    URL and its sans-I/O session, and does the actions of the table that only it knows.
    :class:`SyncConversation` is the user-sync socket's;
    :class:`~trio_tradovate.mdsocket.MdConversation` is a market-data socket's.
    """

    #: The declared table this socket runs.
    table: Table[Any, Trigger]
    #: Whether application requests (the engine's queue) are sent on this socket once live.
    serves_requests: bool
    #: Whether ``GO_LIVE`` puts a snapshot in the store (the collector freezes it then).
    applies_snapshot: bool

    @property
    def url(self) -> str:
        """The websocket URL."""

    def session(self, token: auth.AccessToken, *, generation: int, now: float) -> Session:
        """A new session for one connection."""

    def act(self, action: Action, event: object, session: Session, generation: int) -> list[str]:
        """Do one of this socket's own actions; the frames it sends, in order."""

    def connection_ended(self, fault: Fault) -> None:
        """A connection ended with ``fault`` (a penalised sync's ticket is kept from it)."""


class SyncConversation:
    """The user-sync socket: one ``user/syncrequest`` per connection, the snapshot into the
    store, then ``props`` events."""

    table: Table[Any, Trigger] = CONNECTION_TABLE
    serves_requests = True
    applies_snapshot = True

    def __init__(self, context: SocketContext, index: int, sync: SyncOptions) -> None:
        self._ctx = context
        self._index = index
        self._sync = sync
        config = context.config
        self._limits = Limits.of(config, split_quiet=sync.split_quiet)
        #: The p-ticket the next syncrequest presents (a penalised sync's, docs/protocol.md §8).
        self.ticket: str | None = None

    @property
    def url(self) -> str:
        return self._ctx.config.websocket_url

    def session(self, token: auth.AccessToken, *, generation: int, now: float) -> Session:
        ctx = self._ctx
        governor = ctx.governor
        return SyncSession(
            generation=generation,
            now=now,
            limits=self._limits,
            token=token.token,
            token_minted_at=token.minted_at,
            renewable=ctx.tokens.renewable,
            split=self._sync.split_responses,
            sync_pace=lambda at: governor.delay("user/syncrequest", at),
            lockout_seconds=ctx.config.lockout_seconds,
        )

    def act(self, action: Action, event: object, session: Session, generation: int) -> list[str]:
        assert isinstance(session, SyncSession)
        ctx = self._ctx
        owner = self._index
        if action is Action.APPLY_PROPS:
            assert isinstance(event, EntityEvents)
            ctx.writer.events(event.updates, generation=generation, owner=owner)
        elif action is Action.BUFFER_PROPS:
            assert isinstance(event, EntityEvents)
            session.buffer(event.updates)
        elif action is Action.SEND_SYNC:
            ctx.governor.record("user/syncrequest", trio.current_time())
            return [session.sync(self._sync_body())]
        elif action is Action.APPLY_LATE_PART:
            assert isinstance(event, SnapshotPart)
            ctx.writer.late_part(event.part, generation=generation, owner=owner)
        elif action is Action.GO_LIVE:
            snapshot = event.snapshot if isinstance(event, SnapshotReady) else session.assembled()
            ctx.writer.snapshot(
                snapshot, session.take_buffered(), generation=generation, owner=owner
            )
            del snapshot
        # COLLECT_PART: the session keeps the parts.
        return []

    def connection_ended(self, fault: Fault) -> None:
        self.ticket = fault.ticket

    def _sync_body(self) -> Mapping[str, Any]:
        body = self._sync.body(self._ctx.tokens.user_id)
        if self.ticket is not None:  # the resend of a penalised sync carries its ticket
            body = {**body, "p-ticket": self.ticket}
        return body


class SocketSupervisor:
    """One socket of an engine: its chart, its reconnect policy and its connection loop."""

    def __init__(
        self,
        context: SocketContext,
        index: int,
        sync: SyncOptions | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        self._ctx = context
        self.index = index
        if conversation is None:
            assert sync is not None, "a user-sync socket needs its SyncOptions"
            conversation = SyncConversation(context, index, sync)
        self._conversation = conversation
        #: This socket's side of the engine's collector discipline.
        self._collector = context.collector.for_socket()
        config = context.config
        seed = None if config.seed is None else config.seed + index
        self._policy = ReconnectPolicy(config.backoff, random.Random(seed))
        self._chart: Statechart[Node | MdNode, Trigger] = Statechart(
            conversation.table,
            clock=trio.current_time,
            policy=self._policy,
            on_record=context.on_record,
            on_count=self._count,
            wall_clock=context.wall_clock,
            shard=index,
        )
        #: The websocket layer, chosen once from the config (the only place that reads it).
        self._link_class = link_class(config.websocket_layer)
        self._generation = 0
        self.run_scope = trio.CancelScope()
        self._close_reason = "application closed the engine"
        self.stop_reason: str | None = None
        self.stop_error: TradovateError | None = None
        self._session: Session | None = None
        self._waiting: trio.CancelScope | None = None
        #: Trio time this socket last read frames (``None`` until it does): staleness.
        self.last_frame_at: float | None = None

    # ----------------------------------------------------------------- read-only view

    @property
    def state(self) -> State:
        """This socket's public state."""
        return self._chart.node.state

    @property
    def node(self) -> Node | MdNode:
        """This socket's node in the table (``syncing.sent`` where :attr:`state` says
        ``syncing``)."""
        return self._chart.node

    @property
    def generation(self) -> int:
        """How many connection attempts this socket has started."""
        return self._generation

    @property
    def failed_attempts(self) -> int:
        """Consecutive failed attempts since the last stable connection."""
        return self._policy.failed_attempts

    # ----------------------------------------------------------------- lifecycle

    def wake(self) -> None:
        """Something outside the socket changed what its session would plan now (a
        subscription wanted or released): the loop asks the session at once."""
        if self._session is not None:
            self._session.wake()
        if self._waiting is not None:
            self._waiting.deadline = -math.inf

    def close(self, reason: str) -> None:
        """Make :meth:`run` end, recording ``reason`` in the ``close`` transition."""
        self._close_reason = reason
        self.run_scope.cancel()

    async def run(self) -> None:
        """Supervise this socket until the engine closes or a policy stops it.

        The ``close`` transition is fired in a ``finally`` without awaiting, so it is recorded
        however the supervisor is left: a normal close, a policy stop of a sibling, or the
        application's ``async with`` block raising.
        """
        try:
            with self.run_scope:
                await self._run()
        finally:
            if self._chart.node.state is not State.STOPPED:
                self.stop_error = None
                self._fire(Trigger.CLOSE, self._close_reason)

    def _log_fields(self, fault_kind: str | None = None) -> dict[str, object]:
        """The structured fields of this socket's log records (see ``logs.py``)."""
        return {
            "socket": self.index,
            "generation": self._generation,
            "state": self.state.value,
            "fault_kind": fault_kind,
        }

    def _count(self, name: str) -> None:
        self._ctx.counters[name] += 1

    def _fire(self, trigger: Trigger, reason: str, event: object = None) -> Fired[Node | MdNode]:
        fired = self._chart.fire(trigger, reason=reason, generation=self._generation, event=event)
        if fired.record is not None and fired.record.dest is State.STOPPED:
            self.stop_reason = reason
        return fired

    async def _run(self) -> None:
        self._fire(Trigger.START, "application opened the engine")
        conversation = self._conversation
        while True:
            self._generation += 1
            fault, ended_at = await self._connection_cycle()
            if self._chart.node.state is State.STOPPED:
                return
            conversation.connection_ended(fault)
            delay, why = self._policy.delay(fault)
            log = logger.error if fault.kind == "shutdown" else logger.warning
            log(
                "%s; reconnecting in %.2f s (attempt %d, %s)",
                fault.describe(),
                delay,
                self._policy.failed_attempts,
                why,
                extra=self._log_fields(fault.kind),
            )
            # Measured from when the fault was known, not from when cleanup finished.
            await trio.sleep_until(ended_at + delay)
            self._ctx.counters["reconnects"] += 1
            self._fire(
                Trigger.RETRY,
                f"waited {delay:.3f} s (attempt {self._policy.failed_attempts}, {why})",
            )

    def _end(self, event: Ending, token: auth.AccessToken | None = None) -> tuple[Fault, float]:
        """Fire the trigger a connection-ending event names, the moment it is known (before
        any cleanup, so the record's time is when the engine knew)."""
        now = trio.current_time()
        fault = self._note_fault(event)
        if self._chart.outcome_of(event.trigger) is Outcome.MOVE:
            self._policy.connection_ended(event, now)
        self.stop_error = fault.error  # kept only if this fault ends up stopping us
        fired = self._fire(event.trigger, fault.describe(), event)
        if fired.action is Action.REJECT_TOKEN and token is not None:
            self._ctx.tokens.reject(token)
        if self._chart.node.state is State.STOPPED:
            logger.error(
                "%s; the socket stops (%s)",
                fault.describe(),
                fired.rule.doc,
                extra=self._log_fields(fault.kind),
            )
        return fault, now

    def _note_fault(self, event: Ending) -> Fault:
        """What every connection-ending event means whatever the table does with it: its kind
        is counted, and a captcha or 429 answer starts the lockout (the server said so, even
        when the connection stays up, as for a late answer to a split sync)."""
        fault = event.fault
        self._ctx.counters[f"fault.{fault.kind}"] += 1
        if fault.lockout is not None:
            self._ctx.penalties.lockout(fault.lockout)
        return fault

    async def _connection_cycle(self) -> tuple[Fault, float]:
        """One connection attempt, from token to the first fault."""
        ctx = self._ctx
        config = ctx.config
        try:
            token = await ctx.tokens.get()
        except AuthenticationError as exc:  # includes CaptchaRequired: no program can go on
            return self._end(Unrecoverable(Fault("credentials_rejected", exc)))
        except Penalized as exc:
            return self._end(ConnectFailed(Fault("login_penalized", exc)))
        except ConnectError as exc:
            return self._end(ConnectFailed(connect_fault(exc)))
        url = urlsplit(self._conversation.url)
        host = url.hostname or ""
        tls = url.scheme == "wss"
        port = url.port or (443 if tls else 80)
        resource = url.path + (f"?{url.query}" if url.query else "")
        stream: trio.abc.Stream | None = None
        rejected: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(config.connect_timeout):
                        stream = await ctx.connector(host, port, tls=tls)
                        link = await self._link_class.open(
                            nursery,
                            stream,
                            host,
                            resource,
                            max_message_size=config.max_message_size,
                            message_queue_size=config.message_queue_size,
                            receive_buffer_size=config.receive_buffer_size,
                        )
                except CONNECT_ERRORS as exc:
                    nursery.cancel_scope.cancel()
                    return self._end(ConnectFailed(connect_fault(classify_connect_error(exc))))
                try:
                    return await self._converse(nursery, link, token)
                finally:
                    with trio.CancelScope(shield=_failing()):
                        await link.aclose()
                    nursery.cancel_scope.cancel()
        except* HANDSHAKE_ERRORS as group:
            # trio-websocket raises a rejected upgrade (HTTP 404, 401, ...) from its own reader
            # task, so it arrives here wrapped by the nursery rather than from the call above.
            rejected = group.exceptions[0]
        finally:
            if stream is not None:
                with trio.CancelScope(shield=_failing()):
                    await trio.aclose_forcefully(stream)
        assert rejected is not None  # every other path returned inside the nursery
        return self._end(ConnectFailed(connect_fault(classify_connect_error(rejected))))

    async def _converse(
        self,
        nursery: trio.Nursery,
        link: Link,
        token: auth.AccessToken,
    ) -> tuple[Fault, float]:
        """The loop: messages and deadlines in, the session's events fired, until one ends
        the connection."""
        ctx = self._ctx
        counters = ctx.counters
        session = self._conversation.session(
            token, generation=self._generation, now=trio.current_time()
        )
        self._session = session
        outbound = Outbound(session.request_ids)
        sender_scope = trio.CancelScope()
        nursery.start_soon(self._heartbeat, link, session.started_at)
        ended: Fault | None = None
        outgoing: list[str] = []

        def handle(batches: Iterable[list[SessionEvent]]) -> tuple[Fault, float] | None:
            """Fire every event of ``batches`` (never awaiting: frames to send go on
            ``outgoing``); what ended the connection, if one did."""
            nonlocal ended
            for events in batches:
                for event in events:
                    if isinstance(event, ENDING_TYPES):
                        if self._chart.outcome_of(event.trigger) is not Outcome.MOVE:
                            self._note_fault(event)
                            self._fire(event.trigger, event.fault.describe(), event)
                            continue
                        result = self._end(event, token)
                        ended = result[0]
                        return result
                    outgoing.extend(
                        self._step(event, session, link, outbound, nursery, sender_scope)
                    )
            return None

        try:
            while True:
                # One cancel scope carries the session's deadline over many reads, and it is
                # only ever moved earlier: a scope, and each deadline set on it, is a
                # reference cycle or a heap entry for the collector, and one per read was
                # enough to set off full collections while streaming. When it fires early
                # (frames came meanwhile), the session says nothing is due, and a new scope
                # takes the next deadline. Only the wait for a read is inside it: the events
                # are handled without awaiting, and frames to send go out after it is left.
                with trio.CancelScope() as waiting:
                    self._waiting = waiting
                    while not outgoing:
                        deadline = session.next_deadline()
                        if deadline < waiting.deadline:
                            waiting.deadline = deadline
                        try:
                            messages = await link.receive_messages()
                        except ClosedByServer as exc:
                            fault = closed_fault(exc.code, exc.reason)
                            result = handle([[ConnectionEnded(fault)]])
                            assert result is not None  # a closed socket always ends it
                            return result
                        counters["frames_received"] += len(messages)
                        now = self.last_frame_at = trio.current_time()
                        with self._collector.around(messages):  # parsed and applied in it
                            events, index = session.receive_batch(messages, now)
                            if index == len(messages):  # one batch, as a streaming read is
                                result = handle([events])
                            else:  # lazily: read on only after the events so far fired
                                rest = _read(session, messages, now, index)
                                result = handle(itertools.chain([events], rest))
                        if result is not None:
                            return result
                self._waiting = None
                if waiting.cancelled_caught:
                    result = handle([session.expire(trio.current_time())])
                    if result is not None:
                        return result
                for frame in outgoing:
                    await link.send(frame)
                outgoing.clear()
        finally:
            self._session = self._waiting = None
            self._collector.connection_ended()
            sender_scope.cancel()
            cause = ended.error if ended is not None else EngineStopped("closing")
            ctx.pipeline.connection_lost(outbound, cause)

    def _step(
        self,
        event: SessionEvent,
        session: Session,
        link: Link,
        outbound: Outbound,
        nursery: trio.Nursery,
        sender_scope: trio.CancelScope,
    ) -> list[str]:
        """Fire one non-ending event and do the action its rule names; return the frames the
        action sends (made now, so the session knows their ids before the next message is
        read; the caller sends them)."""
        chart = self._chart
        # Every event goes through the chart (so its observers see every cell); a `handle`
        # rule records nothing, so its reason text is not built. Props come a run per read,
        # so this is once per read on the hot path, not once per event.
        handled = chart.outcome_of(event.trigger) is Outcome.HANDLE
        fired = self._fire(event.trigger, "" if handled else _reason(event), event)
        action = fired.action
        if fired.record is not None:
            session.entered(chart.node, trio.current_time())
        if action is None:
            if isinstance(event, Unrequested):
                logger.warning(
                    "%s (id %d) ignored",
                    event.why,
                    event.response.request_id,
                    extra=self._log_fields(),
                )
            return []
        ctx = self._ctx
        if action is Action.COUNT_HEARTBEAT:
            ctx.counters["server_heartbeats"] += 1
        elif action is Action.ROUTE_ANSWER:
            assert isinstance(event, Answer)
            if not ctx.pipeline.on_response(outbound, event.response):
                logger.debug("reply to unknown request %d dropped", event.response.request_id)
                ctx.counters["late_replies"] += 1
        elif action is Action.SEND_AUTHORIZE:
            return [session.authorize()]
        else:
            frames = self._conversation.act(action, event, session, self._generation)
            if action is Action.GO_LIVE:
                if self._conversation.applies_snapshot:
                    self._collector.snapshot_applied()
                self._policy.went_live(trio.current_time())
                if self._conversation.serves_requests:
                    nursery.start_soon(self._sender, link, outbound, sender_scope)
            return frames
        return []

    async def _heartbeat(self, link: Link, started_at: float) -> None:
        interval = self._ctx.config.heartbeat_interval
        next_at = started_at + interval
        while True:
            await trio.sleep_until(next_at)
            await link.send(HEARTBEAT_FRAME)
            self._ctx.counters["heartbeats_sent"] += 1
            # A fixed schedule: a slow send does not push every later heartbeat back.
            next_at = max(next_at + interval, trio.current_time())

    async def _sender(self, link: Link, outbound: Outbound, scope: trio.CancelScope) -> None:
        # Cancelled first when the connection ends, so no request is taken off the queue for
        # a socket that is going away; RequestPipeline.connection_lost handles those in flight.
        with scope:
            await self._ctx.pipeline.run_sender(outbound, link.send)


def _failing() -> bool:
    """In a ``finally``: whether what is propagating is more than a cancellation.

    Such an error (Ctrl-C raised inside a handler or a close, a bug) must survive the cleanup
    awaited in the ``finally``: a cancellation arriving meanwhile would replace it, and the
    socket's run scope would then swallow that cancellation, and the error with it. So the
    cleanup is shielded then (each close is bounded by its own timeout).
    """
    exc = sys.exc_info()[1]
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is not None
    return not isinstance(exc, trio.Cancelled)


def _read(
    session: Session, messages: list[str | bytes], now: float, index: int = 0
) -> Iterator[list[SessionEvent]]:
    """The events of one read from ``index`` on, a batch at a time (see
    :meth:`Session.receive_batch`)."""
    while index < len(messages):
        events, index = session.receive_batch(messages, now, index)
        yield events


def _reason(event: SessionEvent) -> str:
    """The reason text of a recorded (or malformed) event."""
    if isinstance(event, Authorized):
        pace = event.sync_delay
        return "authorize answered s=200: sending user/syncrequest" + (
            f" in {pace:.1f} s (rate budget)" if pace > 0 else ""
        )
    if isinstance(event, SnapshotReady):
        entities = sum(len(v) for v in event.snapshot.values() if isinstance(v, list))
        return f"snapshot applied: {entities} entities"
    if isinstance(event, MalformedInput):
        return str(event.error)
    texts = {
        Trigger.OPENED: "'o' received: sending authorize",
        Trigger.BUDGET_READY: "rate budget free: sending user/syncrequest",
        Trigger.SNAPSHOT_PART: "first split part received",
        Trigger.PARTS_COMPLETE: "split parts complete: snapshot assembled and applied",
    }
    return texts.get(event.trigger, str(event.trigger))
