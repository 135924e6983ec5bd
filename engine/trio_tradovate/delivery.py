"""The consumer's end of the change feed: :class:`ChangeStream`, what ``Engine.events()`` returns.

Why no channel: a trio memory channel costs about 14 us per item handed from one task to
another, and a delivery task between the feed and a channel was one more task boundary for
every change. The consumer pulls from the :class:`~trio_tradovate.feed.ChangeFeed` itself: the
socket's supervisor writes the store and pushes to the feed (never waiting), and the
consumer's ``receive`` takes the oldest change, or waits until the writer wakes it. So from
socket to consumer a change crosses one task boundary, and a consumer that is behind takes
everything waiting in one :meth:`ChangeStream.receive_batch` call.

The guarantees are the feed's (exactly-once fills, coalescing per entity behind the window,
bounded memory); the fill checkpoint is saved here, when the consumer has caught up and at
most once a second while it is behind.

Several consumers: :class:`ChangeHub` gives every ``Engine.events()`` call a subscription of
its own (its own feed, so its own window, coalescing and exactly-once record), which starts
from the store's current state and follows every later change. It routes the store's writer
to the one feed when there is one subscriber, so a single consumer pays nothing for the
possibility of several; to a :class:`~trio_tradovate.feed.FanOut` when there are several.
A subscription that is closed, or dropped without being closed, leaves the hub at once: it
costs the writer nothing more, and its memory goes with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from types import TracebackType

import trio

from .feed import DISCARD, ChangeFeed, ChangeSink, FanOut, FillLedger
from .store import EntityChange, EntityStore

#: Save the fill checkpoint at most this often while the consumer is behind (seconds).
CHECKPOINT_EVERY = 1.0


class _Subscription:
    """What the hub keeps of one subscriber: its feed and its wake-up, never the
    :class:`ChangeStream` itself, so that a stream its consumer dropped can be collected."""

    __slots__ = ("ended", "event", "feed")

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed
        #: Set when changes were pushed (or the stream ended); replaced after each wait.
        self.event = trio.Event()
        self.ended = False

    def wake(self) -> None:
        """The writer pushed changes: wake a waiting consumer (cheap when none waits)."""
        self.event.set()

    def end(self) -> None:
        self.ended = True
        self.event.set()


def _wake_all(subscriptions: tuple[_Subscription, ...]) -> None:
    for subscription in subscriptions:
        subscription.event.set()


def _nobody() -> None:
    pass


class ChangeStream:
    """An async iterator of :class:`EntityChange`, in order; also :meth:`receive_batch`.

    Like a trio receive channel: :meth:`receive` is a checkpoint, raises
    ``trio.EndOfChannel`` once the engine stopped and everything was taken, and
    ``trio.ClosedResourceError`` after :meth:`close`. One consumer (task) per stream; every
    ``Engine.events()`` call makes a stream of its own. ``async with`` closes it on the way
    out.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        *,
        batch: int,
        checkpoint: FillLedger | None = None,
        on_close: Callable[[], None] | None = None,
        subscription: _Subscription | None = None,
    ) -> None:
        self._feed = feed
        self._batch = batch
        self._sub = subscription if subscription is not None else _Subscription(feed)
        #: The ledger that keeps the checkpoint file (the engine's; ``feed.ledger`` forks it).
        self._checkpoint = checkpoint if checkpoint is not None else feed.ledger
        self._closed = False
        self._saved_at = -CHECKPOINT_EVERY
        #: Runs ``on_close`` once: at :meth:`close`, or when the stream is collected unclosed.
        self._leave: weakref.finalize[[], ChangeStream] | None = None
        if on_close is not None:
            self._leave = weakref.finalize(self, on_close)
            self._leave.atexit = False

    # -- the engine's side ------------------------------------------------------------------

    def wake(self) -> None:
        """The writer pushed changes: wake a waiting consumer (cheap when none waits)."""
        self._sub.wake()

    def end(self) -> None:
        """The engine stopped: what is waiting can still be taken, then ``EndOfChannel``."""
        self._sub.end()
        self._checkpoint.save()

    # -- the consumer's side ----------------------------------------------------------------

    async def receive(self) -> EntityChange:
        """The next change, waiting for one if needed."""
        [change] = await self._take(1)
        return change

    async def receive_batch(self, max_items: int | None = None) -> list[EntityChange]:
        """Every change waiting now (at least one, at most ``max_items``, default
        ``event_buffer``), waiting for one if none is: the cheap way to keep up when behind."""
        limit = self._batch if max_items is None else max_items
        if limit < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items!r}")
        return await self._take(limit)

    async def _take(self, limit: int) -> list[EntityChange]:
        """Every call is one checkpoint, as a trio channel's ``receive`` is: a cancellation
        point before anything is taken, and one schedule point, which is the wait when there
        was nothing to take (a second one after it would cost a change a whole round of the
        scheduler on its way to the consumer)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this change stream was closed")
            batch = self._feed.pop_many(limit)
            if batch:
                self._checkpoint_fills(caught_up=not len(self._feed))
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return batch
            subscription = self._sub
            if subscription.ended:
                raise trio.EndOfChannel
            self._checkpoint_fills(caught_up=True)
            await subscription.event.wait()
            waited = True
            subscription.event = trio.Event()

    def _checkpoint_fills(self, *, caught_up: bool) -> None:
        now = trio.current_time()
        if caught_up or now - self._saved_at >= CHECKPOINT_EVERY:
            self._checkpoint.save()  # writes only when new fills were announced
            self._saved_at = now

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> EntityChange:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop consuming: the subscription leaves the engine and what it held is freed; the
        store and the other subscriptions carry on. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sub.wake()  # a receive waiting in another task raises ClosedResourceError
        self._feed.clear()
        if self._leave is not None:
            self._leave()

    async def aclose(self) -> None:
        """:meth:`close`, as an async resource."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> dict[str, int]:
        """How many changes are waiting, and how many entities the consumer holds (what it
        was given, net of deletions: the size of its exactly-once record)."""
        return {"waiting": len(self._feed), "held": self._feed.held}


class ChangeHub:
    """Every subscription of one engine, and the sink the store's writer writes to.

    ``route(sink, wake)`` is the writer's; the hub calls it whenever the subscribers change:
    the one feed and its wake-up for one subscriber, a :class:`~trio_tradovate.feed.FanOut`
    for several, :data:`~trio_tradovate.feed.DISCARD` for none.
    """

    def __init__(
        self,
        store: EntityStore,
        ledger: FillLedger,
        *,
        window: int,
        batch: int,
        generation: Callable[[], int],
    ) -> None:
        self._store = store
        #: The engine's fill ledger: keeps the checkpoint file; each subscription forks it.
        self.ledger = ledger
        self._window = window
        self._batch = batch
        self._generation = generation
        self._subscriptions: tuple[_Subscription, ...] = ()
        self._route: Callable[[ChangeSink, Callable[[], None]], None] | None = None
        self._ended = False
        #: Counters of subscriptions that left, so the totals never go down.
        self._retired = {"coalesced": 0, "no_ops": 0, "repeated_fills": 0, "high_water": 0}

    def attach(self, route: Callable[[ChangeSink, Callable[[], None]], None]) -> None:
        """Route the store's writer through ``route`` from now on."""
        self._route = route
        self._reroute()

    def subscribe(self) -> ChangeStream:
        """A new subscription: the store's current contents first (``Created``, marked
        ``recovered``, queued as a snapshot diff is), then every later change. After the
        engine stopped, the contents and then ``EndOfChannel``."""
        feed = ChangeFeed(self.ledger.fork(), window=self._window)
        held = self._store.contents(self._generation())
        if held:
            feed.defer(held)
        subscription = _Subscription(feed)
        if self._ended:
            subscription.ended = True
            leave = None
        else:
            self._subscriptions += (subscription,)
            self._reroute()
            leave = partial(self._forget, subscription)
        return ChangeStream(
            feed,
            batch=self._batch,
            checkpoint=self.ledger,
            on_close=leave,
            subscription=subscription,
        )

    def end(self) -> None:
        """The engine stopped: every subscription ends once drained; the checkpoint is saved."""
        self._ended = True
        for subscription in self._subscriptions:
            subscription.end()
        self.ledger.save()

    def statistics(self) -> dict[str, int]:
        """Over every subscription: how many are open, changes waiting now (the sum), the
        most that ever waited in one, and what was coalesced, dropped as a no-op or
        suppressed as a repeated fill (totals since the engine started)."""
        feeds = [subscription.feed for subscription in self._subscriptions]
        retired = self._retired
        return {
            "subscriptions": len(feeds),
            "waiting": sum(map(len, feeds)),
            "high_water": max([retired["high_water"], *(feed.high_water for feed in feeds)]),
            "coalesced": retired["coalesced"] + sum(feed.coalesced for feed in feeds),
            "no_ops": retired["no_ops"] + sum(feed.no_ops for feed in feeds),
            "repeated_fills": retired["repeated_fills"]
            + sum(feed.repeated_fills for feed in feeds),
        }

    def _forget(self, subscription: _Subscription) -> None:
        """The subscription was closed or collected: stop feeding it."""
        if subscription not in self._subscriptions:
            return
        self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
        feed, retired = subscription.feed, self._retired
        retired["coalesced"] += feed.coalesced
        retired["no_ops"] += feed.no_ops
        retired["repeated_fills"] += feed.repeated_fills
        retired["high_water"] = max(retired["high_water"], feed.high_water)
        self._reroute()

    def _reroute(self) -> None:
        if self._route is None:
            return
        subscriptions = self._subscriptions
        if not subscriptions:
            self._route(DISCARD, _nobody)
        elif len(subscriptions) == 1:
            self._route(subscriptions[0].feed, subscriptions[0].wake)
        else:
            feeds = tuple(subscription.feed for subscription in subscriptions)
            self._route(FanOut(feeds), partial(_wake_all, subscriptions))
