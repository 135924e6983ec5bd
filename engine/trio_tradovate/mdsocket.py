"""The market-data socket in the engine: its conversation, and delivery to each subscription.

Theory of operation
-------------------
A market-data socket runs on the same :class:`~trio_tradovate.supervisor.SocketSupervisor` as
the user socket (connect, ``authorize``, heartbeats, silence watchdog, faults, jittered
backoff, penalties, every transition recorded), with :class:`MdConversation` naming what
differs: ``MARKET_DATA_TABLE``, the market-data URL, an
:class:`~trio_tradovate.mdsession.MdSession` per connection, and the actions only this
socket has (send the registry's planned requests, deliver values, note answers). It
authorizes with the token keeper's ``mdAccessToken``, or the ``accessToken`` when the login
gave none, so every socket of an engine shares one token and one rate governor.

Delivery (:class:`Subscription`) never makes the reader wait: a value is put on each
consumer's buffer without awaiting. Quotes, DOM and histograms conflate: a consumer holds at
most the latest value per subscription, and a value that replaced an untaken one is marked
``conflated=True``. Bars, ticks and the end of history are never dropped: they queue, and the
subscription reports the queue as ``lag``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from . import auth
from .errors import ConfigError, EngineStopped, SubscriptionRefused
from .marketdata import ClockTick, Dom, Histogram, Quote
from .mdsession import ClockEvent, MarketData, MdSession, ReplaySession, SubscriptionAnswered
from .replay import ReplayClock, ReplayOptions
from .session import Fault, Limits, Session
from .statechart import MARKET_DATA_TABLE, REPLAY_TABLE, Action, State, Table, Trigger
from .subscriptions import (
    ChartSpec,
    Kind,
    ServerState,
    SubKey,
    SubscriptionRegistry,
    Update,
    check_symbol,
)

if TYPE_CHECKING:
    from .config import EngineConfig
    from .engine import Engine
    from .supervisor import SocketContext, SocketSupervisor

logger = logging.getLogger("trio_tradovate.marketdata")

#: Kinds whose values replace each other (a consumer wants the latest, not every one).
CONFLATING = frozenset({Kind.QUOTE, Kind.DOM, Kind.HISTOGRAM})


@dataclass(frozen=True)
class SubscriptionStatus:
    """How one subscription is doing (see ``docs/market-data.md``)."""

    #: ``absent``, ``subscribing``, ``active`` or ``unsubscribing`` on the current connection.
    server: str
    #: No value for ``stale_after`` seconds while active (re-subscribed once).
    stale: bool
    #: Values waiting for this consumer (bars and ticks; conflating kinds hold at most one).
    lag: int
    #: Values this consumer never saw because a newer one replaced them.
    conflated: int
    #: Updates delivered to this consumer marked ``gap=True``.
    gaps: int
    #: When the latest value came (trio time), if any did.
    last_value_at: float | None


class Subscription:
    """One consumer of one subscription: an async iterator of
    :class:`~trio_tradovate.subscriptions.Update`, and an async context manager that releases
    it on exit. Get one from :class:`MarketDataFeed`.
    """

    def __init__(self, feed: MarketDataFeed, key: SubKey) -> None:
        self.key = key
        self._feed = feed
        self._conflating = key.kind in CONFLATING
        self._queue: deque[Update] = deque()
        self._wake = trio.Event()
        self._status_changed = trio.Event()
        self._closed = False
        self._error: Exception | None = None
        self.conflated = 0
        self.gaps = 0
        self.delivered = 0

    # -- the engine's side ----------------------------------------------------------------------

    def push(self, update: Update) -> None:
        """A value for this consumer; never waits."""
        if self._closed:
            return
        if self._conflating and self._queue:
            self._queue.clear()
            self.conflated += 1
            value = update.value
            if isinstance(value, Quote | Dom | Histogram):
                update = replace(update, value=replace(value, conflated=True))
        if update.gap:
            self.gaps += 1
        self._queue.append(update)
        self._wake.set()

    def fail(self, error: Exception) -> None:
        """The subscription cannot go on (refused, or the engine stopped)."""
        if self._error is None:
            self._error = error
        self._wake.set()
        self.status_changed()

    def status_changed(self) -> None:
        self._status_changed.set()
        self._status_changed = trio.Event()

    # -- the consumer's side --------------------------------------------------------------------

    @property
    def status(self) -> SubscriptionStatus:
        """This subscription's status now."""
        registry = self._feed.registry
        return SubscriptionStatus(
            server=registry.server_state(self.key).value,
            stale=registry.is_stale(self.key),
            lag=len(self._queue),
            conflated=self.conflated,
            gaps=self.gaps,
            last_value_at=registry.last_value_at(self.key),
        )

    async def wait_status_change(self) -> SubscriptionStatus:
        """Wait until the status changes in a way worth telling (stale, fresh, failed)."""
        await self._status_changed.wait()
        return self.status

    async def receive(self) -> Update:
        """The next update, waiting for one.

        Raises:
            SubscriptionRefused: the server refused this subscription.
            EngineStopped: the engine stopped (after what was waiting was taken).
            trio.ClosedResourceError: this subscription was closed.
        """
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this subscription is closed")
            if self._queue:
                await trio.lowlevel.checkpoint()
                self.delivered += 1
                return self._queue.popleft()
            if self._error is not None:
                raise self._error
            await self._wake.wait()
            self._wake = trio.Event()

    def receive_nowait(self) -> Update:
        """The next update if one waits (for a conflating kind: the latest).

        Raises:
            trio.WouldBlock: nothing waits.
        """
        if self._closed:
            raise trio.ClosedResourceError("this subscription is closed")
        if not self._queue:
            if self._error is not None:
                raise self._error
            raise trio.WouldBlock
        self.delivered += 1
        return self._queue.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Update:
        try:
            return await self.receive()
        except EngineStopped:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop consuming: the server subscription is released when its last consumer
        leaves. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._feed.release(self)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class MarketDataFeed:
    """The application's side of a market-data socket: subscribe, read, watch.

    Every method is synchronous and fails fast on a bad argument; the server subscription is
    asked for by the socket's own loop (paced, and again after every reconnect).
    """

    def __init__(self, registry: SubscriptionRegistry, replay: ReplayClock | None = None) -> None:
        self.registry = registry
        #: The replay clock's position and speed, when this is a replay socket.
        self.replay = replay
        self._consumers: dict[SubKey, list[Subscription]] = {}
        self._clock_watchers: list[trio.MemorySendChannel[ClockTick]] = []
        self._supervisor: SocketSupervisor | None = None
        self._stale_seen: set[SubKey] = set()
        self._stopped: EngineStopped | None = None
        #: The latest replay clock tick, if this socket is a replay socket.
        self.clock: ClockTick | None = None

    def attach(self, supervisor: SocketSupervisor) -> None:
        self._supervisor = supervisor

    # -- subscribing ----------------------------------------------------------------------------

    def quotes(self, symbol: str | int) -> Subscription:
        """Quotes of ``symbol`` (a contract name or id): every ``entries`` kind, conflated."""
        return self._subscribe(SubKey(Kind.QUOTE, check_symbol(symbol)))

    def dom(self, symbol: str | int) -> Subscription:
        """Depth of market of ``symbol``, conflated."""
        return self._subscribe(SubKey(Kind.DOM, check_symbol(symbol)))

    def histogram(self, symbol: str | int) -> Subscription:
        """Volume by price of ``symbol``, conflated."""
        return self._subscribe(SubKey(Kind.HISTOGRAM, check_symbol(symbol)))

    def chart(self, symbol: str | int, spec: ChartSpec) -> Subscription:
        """A chart of ``symbol`` (``md/getChart``): history up to an
        :class:`~trio_tradovate.subscriptions.EndOfHistory`, then realtime; never dropped."""
        if not isinstance(spec, ChartSpec):
            raise TypeError(f"spec must be a ChartSpec(...), got {type(spec).__name__}")
        return self._subscribe(SubKey(Kind.CHART, check_symbol(symbol), spec))

    def _subscribe(self, key: SubKey) -> Subscription:
        if self._stopped is not None:
            raise self._stopped
        subscription = Subscription(self, key)
        self._consumers.setdefault(key, []).append(subscription)
        self.registry.acquire(key)
        self._wake()
        return subscription

    def release(self, subscription: Subscription) -> None:
        consumers = self._consumers.get(subscription.key, [])
        if subscription in consumers:
            consumers.remove(subscription)
            if not consumers:
                del self._consumers[subscription.key]
            self.registry.release(subscription.key)
            self._wake()

    def _wake(self) -> None:
        if self._supervisor is not None:
            self._supervisor.wake()

    def change_speed(self, speed: int) -> None:
        """Ask the replay clock for ``speed`` (0 to 400); sent at once, and kept for the clock
        started after a reconnect."""
        if self.replay is None:
            raise ConfigError("change_speed needs a replay socket: EngineConfig(replay=...)")
        self.replay.change_speed(speed)
        self._wake()

    def watch_clock(self, buffer: int = 64) -> trio.MemoryReceiveChannel[ClockTick]:
        """A channel of replay ``clock`` ticks (dropped for this watcher when it is full)."""
        send, receive = trio.open_memory_channel[ClockTick](buffer)
        self._clock_watchers.append(send)
        return receive

    # -- read-only view -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The market-data socket's public state."""
        return self._supervisor.state if self._supervisor is not None else State.DISCONNECTED

    @property
    def counters(self) -> dict[str, int]:
        """What the registry counted: requests, refusals, staleness, observed discarding."""
        return dict(self.registry.counters)

    def server_subscriptions(self) -> list[SubKey]:
        """Keys the server holds on the current connection."""
        return [
            key
            for key in self.registry.wanted()
            if self.registry.server_state(key) is ServerState.ACTIVE
        ]

    # -- the socket's side ----------------------------------------------------------------------

    def deliver(self, updates: list[Update]) -> None:
        for update in updates:
            key = update.key
            if key in self._stale_seen and not self.registry.is_stale(key):
                self._stale_seen.discard(key)
                self._status(key)
            for subscription in self._consumers.get(key, ()):
                subscription.push(update)

    def tick(self, tick: ClockTick) -> None:
        self.clock = tick
        kept = []
        for send in self._clock_watchers:
            try:
                send.send_nowait(tick)
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue
            kept.append(send)
        self._clock_watchers = kept

    def refused(self, key: SubKey, error: str) -> None:
        for subscription in self._consumers.get(key, ()):
            subscription.fail(SubscriptionRefused(str(key), error))

    def went_stale(self, keys: list[SubKey]) -> None:
        for key in keys:
            self._stale_seen.add(key)
            self._status(key)

    def _status(self, key: SubKey) -> None:
        for subscription in self._consumers.get(key, ()):
            subscription.status_changed()

    def stop(self, error: EngineStopped) -> None:
        """The engine stopped: consumers take what waits, then get ``error``."""
        self._stopped = error
        for consumers in self._consumers.values():
            for subscription in consumers:
                subscription.fail(error)
        for send in self._clock_watchers:
            send.close()


class MdConversation:
    """A market-data socket's part of the supervisor's loop (see the module docstring)."""

    table: Table[Any, Trigger] = MARKET_DATA_TABLE
    serves_requests = False
    applies_snapshot = False

    def __init__(self, context: SocketContext, feed: MarketDataFeed) -> None:
        self._ctx = context
        self.feed = feed
        config = context.config
        self._limits = Limits.of(config)

    @property
    def url(self) -> str:
        return self._ctx.config.market_data_url

    def session(self, token: auth.AccessToken, *, generation: int, now: float) -> Session:
        return MdSession(
            registry=self.feed.registry,
            pace=self._pace,
            generation=generation,
            now=now,
            replay=self.feed.replay,
            limits=self._limits,
            token=token.md_token or token.token,
            token_minted_at=token.minted_at,
            renewable=self._ctx.tokens.renewable,
        )

    def _pace(self, endpoint: str, now: float) -> float:
        """Seconds until ``endpoint`` may go: the shared rate governor, and the engine's
        request queue's ``p-ticket`` pause and captcha/429 lockout, which hold every socket's
        requests alike (subscriptions are not cancellations, so a lockout holds them)."""
        penalty = self._ctx.pipeline.scheduler.penalty
        held = max(penalty.paused_until, penalty.lockout_until) - now
        return max(held, self._ctx.governor.delay(endpoint, now))

    def connection_ended(self, fault: Fault) -> None:
        """Nothing to carry to the next connection: the registry and clock outlive it."""

    def act(self, action: Action, event: object, session: Session, generation: int) -> list[str]:
        assert isinstance(session, MdSession)
        counters = self._ctx.counters
        feed = self.feed
        if action is Action.DELIVER:
            if isinstance(event, MarketData):
                counters["md_values"] += len(event.updates)
                if event.malformed:
                    counters["malformed"] += event.malformed
                feed.deliver(event.updates)
            elif isinstance(event, ClockEvent):
                feed.tick(event.tick)
            return []
        if action is Action.NOTE_ANSWER:
            assert isinstance(event, SubscriptionAnswered)
            failure = event.failure
            if failure is not None and failure.lockout is not None:
                logger.error("subscription %s: %s", failure.key, failure.error)
                self._ctx.penalties.lockout(failure.lockout)  # every socket's requests wait
            elif failure is not None:
                logger.warning("subscription %s refused: %s", failure.key, failure.error)
                feed.refused(failure.key, failure.error)
            return session.requests(trio.current_time(), self._ctx.governor.record)
        if action is Action.RESUBSCRIBE:
            keys = getattr(event, "keys", [])
            logger.warning(
                "stale subscription(s) %s: re-subscribing once", ", ".join(map(str, keys))
            )
            feed.went_stale(keys)
        # SEND_REQUESTS, RESUBSCRIBE and GO_LIVE: whatever the registry plans now.
        return session.requests(trio.current_time(), self._ctx.governor.record)


#: Actions of the user sync; a replay socket hands them to its sync conversation.
_SYNC_ACTIONS = frozenset(
    {
        Action.SEND_SYNC,
        Action.APPLY_PROPS,
        Action.BUFFER_PROPS,
        Action.COLLECT_PART,
        Action.APPLY_LATE_PART,
    }
)


class ReplayConversation(MdConversation):
    """A replay socket: the replay clock and market data (as :class:`MdConversation`), then
    the replay account's user sync (as the user socket's), on one socket."""

    table: Table[Any, Trigger] = REPLAY_TABLE
    serves_requests = True
    applies_snapshot = True

    def __init__(self, context: SocketContext, feed: MarketDataFeed, index: int) -> None:
        from .supervisor import SyncConversation

        super().__init__(context, feed)
        self._sync = SyncConversation(context, index, context.config.sync)
        self._split_quiet = context.config.sync.split_quiet

    def session(self, token: auth.AccessToken, *, generation: int, now: float) -> Session:
        ctx = self._ctx
        governor = ctx.governor
        sync = ctx.config.sync
        return ReplaySession(
            registry=self.feed.registry,
            pace=self._pace,
            replay=self.feed.replay,
            split=sync.split_responses,
            sync_pace=lambda at: governor.delay("user/syncrequest", at),
            lockout_seconds=ctx.config.lockout_seconds,
            generation=generation,
            now=now,
            limits=replace(self._limits, split_quiet=self._split_quiet),
            token=token.token,
            token_minted_at=token.minted_at,
            renewable=ctx.tokens.renewable,
        )

    def connection_ended(self, fault: Fault) -> None:
        self._sync.connection_ended(fault)  # a penalised sync's ticket

    def act(self, action: Action, event: object, session: Session, generation: int) -> list[str]:
        if action in _SYNC_ACTIONS:
            return self._sync.act(action, event, session, generation)
        if action is Action.GO_LIVE:  # the snapshot, then whatever subscriptions wait
            frames = self._sync.act(action, event, session, generation)
            return frames + super().act(action, event, session, generation)
        return super().act(action, event, session, generation)


def market_data_socket(
    context: SocketContext, index: int
) -> tuple[SocketSupervisor, MarketDataFeed]:
    """A supervisor for a market-data socket and the feed the application reads."""
    from .supervisor import SocketSupervisor

    config = context.config
    replay = ReplayClock(config.replay) if config.replay is not None else None
    feed = MarketDataFeed(SubscriptionRegistry(stale=config.md_stale), replay)
    conversation = (
        ReplayConversation(context, feed, index)
        if replay is not None
        else MdConversation(context, feed)
    )
    supervisor = SocketSupervisor(context, index, conversation=conversation)
    feed.attach(supervisor)
    return supervisor, feed


@asynccontextmanager
async def open_market_data(config: EngineConfig) -> AsyncIterator[MarketDataFeed]:
    """Run a market-data socket alone for the duration of the ``async with`` block.

    The same engine as :func:`~trio_tradovate.open_engine` with no user socket: one token
    keeper, one rate governor, one penalty region. For quotes next to the account, give
    ``EngineConfig(market_data=True)`` to :func:`~trio_tradovate.open_engine` and use
    ``engine.market_data``.
    """
    from dataclasses import replace as replace_config

    from .engine import open_engine

    async with open_engine(replace_config(config, market_data=True, user_sync=False)) as engine:
        yield _feed_of(engine)


@asynccontextmanager
async def open_replay(
    config: EngineConfig, options: ReplayOptions
) -> AsyncIterator[MarketDataFeed]:
    """Run a replay socket alone: :func:`open_market_data` with ``config.replay = options``.

    The replay session is checked (``replay/checkReplaySession``) and its clock started
    (``replay/initializeClock``) before any subscription is asked for; ``clock`` ticks come
    from :meth:`MarketDataFeed.watch_clock`, the speed changes with
    :meth:`MarketDataFeed.change_speed`. A refused session stops the engine with
    ``ReplayRefused``.
    """
    from dataclasses import replace as replace_config

    async with open_market_data(replace_config(config, replay=options)) as feed:
        yield feed


def _feed_of(engine: Engine) -> MarketDataFeed:
    feed = engine.market_data
    assert feed is not None
    return feed


__all__ = [
    "MarketDataFeed",
    "MdConversation",
    "Subscription",
    "SubscriptionStatus",
    "open_market_data",
    "open_replay",
]
