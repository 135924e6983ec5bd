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
"""

from __future__ import annotations

import trio

from .feed import ChangeFeed
from .store import EntityChange

#: Save the fill checkpoint at most this often while the consumer is behind (seconds).
CHECKPOINT_EVERY = 1.0


class ChangeStream:
    """An async iterator of :class:`EntityChange`, in order; also :meth:`receive_batch`.

    Like a trio receive channel: :meth:`receive` is a checkpoint, raises
    ``trio.EndOfChannel`` once the engine stopped and everything was taken, and
    ``trio.ClosedResourceError`` after :meth:`close`. One consumer at a time.
    """

    def __init__(self, feed: ChangeFeed, *, batch: int) -> None:
        self._feed = feed
        self._batch = batch
        self._wake = trio.Event()
        self._ended = False
        self._closed = False
        self._saved_at = -CHECKPOINT_EVERY

    # -- the engine's side ------------------------------------------------------------------

    def wake(self) -> None:
        """The writer pushed changes: wake a waiting consumer (cheap when none waits)."""
        self._wake.set()

    def end(self) -> None:
        """The engine stopped: what is waiting can still be taken, then ``EndOfChannel``."""
        self._ended = True
        self._feed.ledger.save()
        self._wake.set()

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
            if self._ended:
                raise trio.EndOfChannel
            self._checkpoint_fills(caught_up=True)
            await self._wake.wait()
            waited = True
            self._wake = trio.Event()

    def _checkpoint_fills(self, *, caught_up: bool) -> None:
        now = trio.current_time()
        if caught_up or now - self._saved_at >= CHECKPOINT_EVERY:
            self._feed.ledger.save()  # writes only when new fills were announced
            self._saved_at = now

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> EntityChange:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop consuming; the store keeps updating (and the feed stays bounded)."""
        self._closed = True
        self._wake.set()

    async def aclose(self) -> None:
        """:meth:`close`, as an async resource."""
        self.close()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> dict[str, int]:
        """How many changes are waiting."""
        return {"waiting": len(self._feed)}
