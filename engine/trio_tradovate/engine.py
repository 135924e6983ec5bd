"""The engine: what every socket shares, and the public face of the library.

Theory of operation
-------------------
:func:`open_engine` builds one :class:`Engine` and runs, in one nursery, the things every
socket shares: the token keeper's background renewal, and the delivery task that feeds the
consumer channel from the change feed. Then it runs one :class:`~trio_tradovate.shard.Shard`
per socket (one by default; ``shards=N`` spreads the sync stream over N sockets). Each shard
supervises its own socket with its own declared statechart (see ``shard.py``).

Shared by every shard: the access token (:class:`~trio_tradovate.auth.TokenKeeper`), the
entity store, the change feed and its consumer channel, the request queue
(:class:`~trio_tradovate.pipeline.RequestPipeline`) and the counters. The engine's ``state``
is the shards' states folded into one (see :attr:`Engine.state`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from . import auth
from .config import EngineConfig
from .errors import ConfigError, EngineStopped, RemoteProtocolError, TradovateError
from .feed import ChangeFeed, FillLedger
from .pipeline import Request, RequestPipeline
from .protocol import encode_request
from .scheduler import Priority, RateGovernor, RequestScheduler, classify
from .shard import Shard
from .statechart import State, TransitionRecord
from .store import EntityChange, EntityStore
from .transport import Connector, TcpConnector
from .views import StoreViews

logger = logging.getLogger("trio_tradovate.engine")

#: How far along each state is, to fold several shards' states into one.
_PROGRESS = {
    State.DISCONNECTED: 0,
    State.BACKOFF: 1,
    State.CONNECTING: 2,
    State.AUTHENTICATING: 3,
    State.SYNCING: 4,
    State.LIVE: 5,
}


class Engine:
    """A running engine. Get one from :func:`open_engine`.

    Read :attr:`state`, :attr:`store` and :attr:`transitions` at any time; consume entity
    changes from :meth:`events`; send requests with :meth:`request`.
    """

    def __init__(self, config: EngineConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self._http = http
        self._connector: Connector = config.connector or TcpConnector()
        self.store = EntityStore()
        #: Typed, read-only views of :attr:`store` (orders of an account, a position, ...).
        self.views = StoreViews(self.store)
        #: Counts of what happened: frames, malformed input, faults by kind, reconnects.
        self.counters: Counter[str] = Counter()
        self._keeper = auth.TokenKeeper(
            http,
            config.rest_url,
            config.credentials,
            auth.AccessToken(config.access_token) if config.access_token else None,
            wall_clock=config.wall_clock,
            margin=config.token_refresh_margin,
            pace=self._pace_rest,
        )
        self._user_id = config.user_id
        self._entity_types = (
            frozenset(config.sync.entity_types) if config.sync.entity_types is not None else None
        )
        self._records: list[TransitionRecord] = []
        self._state_changed = trio.Event()
        self._watchers: list[trio.MemorySendChannel[TransitionRecord]] = []
        self._events_send, self._events_recv = trio.open_memory_channel[EntityChange](
            config.event_buffer
        )
        self._feed = ChangeFeed(FillLedger(config.checkpoint_file))
        self._feed_wake = trio.Event()
        self._scheduler = RequestScheduler(
            RateGovernor(config.rate_limits), lockout=config.lockout_seconds
        )
        self._pipeline = RequestPipeline(
            self._scheduler, on_lockout=self._lockout_notice, on_penalty_state=self._save_penalty
        )
        self._lockout_announced = False
        #: One per socket; a single one unless ``config.shards`` says otherwise.
        self.shards = tuple(
            Shard(self, index, config.sync_for_shard(index)) for index in range(config.shards)
        )
        self._load_penalty()

    # ----------------------------------------------------------------- public, read-only view

    @property
    def state(self) -> State:
        """The engine's state: its socket's, or for several sockets the least advanced of
        those still running (``LIVE`` only when all are live; ``STOPPED`` when all stopped)."""
        running = [shard.state for shard in self.shards if shard.state is not State.STOPPED]
        if not running:
            return State.STOPPED
        return min(running, key=_PROGRESS.__getitem__)

    @property
    def transitions(self) -> tuple[TransitionRecord, ...]:
        """Every transition of every socket so far, oldest first (``shard`` tells them apart)."""
        return tuple(self._records)

    @property
    def generation(self) -> int:
        """How many connection attempts have started, over all sockets."""
        return sum(shard.generation for shard in self.shards)

    @property
    def stop_reason(self) -> str | None:
        """Why the engine stopped (the first socket that stopped), once it has."""
        for shard in self.shards:
            if shard.stop_reason is not None:
                return shard.stop_reason
        return None

    @property
    def _stop_error(self) -> TradovateError | None:
        for shard in self.shards:
            if shard.stop_error is not None:
                return shard.stop_error
        return None

    def events(self) -> trio.MemoryReceiveChannel[EntityChange]:
        """The stream of entity changes, from the first snapshot on (there is only one).

        Applying every change received, in order, rebuilds exactly the store's state. The
        channel is bounded (``event_buffer``); behind it, a consumer that falls behind gets
        changes coalesced per entity (``coalesced=True``) instead of an ever-growing backlog,
        and the reader never waits for it (see ``docs/state-recovery.md``).
        """
        return self._events_recv

    def watch_transitions(self, buffer: int = 256) -> trio.MemoryReceiveChannel[TransitionRecord]:
        """A channel that receives every later transition record.

        The supervisor never waits for a watcher: if this buffer is full, records are dropped
        for this watcher (their ``seq`` numbers show the gap; :attr:`transitions` has them all).
        """
        send, receive = trio.open_memory_channel[TransitionRecord](buffer)
        self._watchers.append(send)
        return receive

    async def wait_for(self, *states: State) -> TransitionRecord:
        """Wait until the engine is in one of ``states``; return the latest transition record.

        Raises:
            EngineStopped: the engine stopped (and ``STOPPED`` was not asked for).
        """
        while True:
            if self.state in states and self._records:
                return self._records[-1]
            if self.state is State.STOPPED:
                error = self._stop_error
                raise EngineStopped(self.stop_reason or "stopped", error) from error
            await self._state_changed.wait()

    async def request(
        self,
        endpoint: str,
        *,
        query: str | Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-request limit is the contract
        priority: Priority | None = None,
        wait: bool = True,
    ) -> Any:
        """Send one request over the websocket and return the response's ``d``.

        The request joins the engine's queue (see ``docs/rate-limits.md``): it goes out when
        the engine is live, in priority order, paced under Tradovate's limits; a ``p-ticket``
        penalty is waited out and the request resent with its ticket, all within this one
        ``await``. A read-only request still unanswered when its socket dies is resent on the
        next one. ``wait=False`` fails at once instead of waiting for the engine to be live.

        Raises:
            LocalProtocolError: the request cannot be encoded (fails before anything is sent).
            ConfigError: ``timeout`` is not a positive number.
            RequestError: the server answered with ``s >= 400``.
            RequestTimeout: no answer within ``timeout`` (default ``request_timeout``).
            OutcomeUnknown: a money-moving request was sent, then its connection dropped or
                its time ran out before the answer: the order may or may not exist.
            CaptchaRequired, RateLimited: a penalty lockout began (see ``Penalized``).
            ConnectionLost: ``wait=False`` and the engine is not live.
            EngineStopped: the engine stopped.
        """
        endpoint = endpoint.strip().lower()
        encode_request(endpoint, 0, query, body)  # validate now, with the caller's stack
        limit = self.config.request_timeout if timeout is None else timeout
        if not (isinstance(limit, int | float) and limit > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if self.state is State.STOPPED:
            raise EngineStopped(self.stop_reason or "stopped", self._stop_error)
        if not wait and self.state is not State.LIVE:
            raise self._pipeline.not_live_error(endpoint)
        request = Request(endpoint, query, body, priority or classify(endpoint))
        return await self._pipeline.call(request, limit)

    # ------------------------------------------------------------------ shared machinery

    def _on_record(self, record: TransitionRecord) -> None:
        """Every shard's statechart reports its records here (one merged, ordered log)."""
        if record.dest is State.STOPPED:
            self.shards[record.shard].stop_reason = record.reason
        self._records.append(record)
        self._state_changed.set()
        self._state_changed = trio.Event()
        for watcher in list(self._watchers):
            try:
                watcher.send_nowait(record)
            except trio.WouldBlock:
                self.counters["transition_records_dropped"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._watchers.remove(watcher)

    async def _pace_rest(self, endpoint: str) -> None:
        """Wait for ``endpoint``'s REST budget (P-RL), shared with every other request."""
        wait = self._scheduler.governor.reserve(endpoint, trio.current_time())
        if wait > 0:
            logger.warning("%s waits %.0f s for its rate budget", endpoint, wait)
            await trio.sleep(wait)

    def _lockout_notice(self, reason: str) -> None:
        self._lockout_announced = True
        for shard in self.shards:
            shard.lockout_notice(reason)

    def _save_penalty(self) -> None:
        path = self.config.penalty_state_file
        if path is None:
            return
        data = self._scheduler.dump_penalty(trio.current_time(), self.config.wall_clock())
        # A few hundred bytes, written only when a penalty starts: not worth a thread.
        path.write_bytes(data)

    def _load_penalty(self) -> None:
        path = self.config.penalty_state_file
        if path is None or not path.exists():
            return
        self._scheduler.load_penalty(
            path.read_bytes(), trio.current_time(), self.config.wall_clock()
        )
        if self._scheduler.locked_out(trio.current_time()):
            logger.error(
                "a penalty lockout (%s) saved by an earlier run is still running: only "
                "cancellations and liquidations are sent until it ends",
                self._scheduler.penalty.lockout_reason,
            )

    def _emit(self, change: EntityChange) -> None:
        """Hand a change to the feed; never blocks (see :mod:`trio_tradovate.feed`)."""
        self._feed.push(change)
        self._feed_wake.set()

    async def _deliver(self) -> None:
        """Move changes from the feed to the consumer channel, at the consumer's pace."""
        saved_at = trio.current_time()
        while True:
            if trio.current_time() - saved_at >= 1.0:  # checkpoint at most once a second
                self._feed.ledger.save()
                saved_at = trio.current_time()
            change = self._feed.pop()
            if change is None:
                self._feed.ledger.save()  # caught up: a good moment
                saved_at = trio.current_time()
                await self._feed_wake.wait()
                self._feed_wake = trio.Event()
                continue
            try:
                await self._events_send.send(change)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the consumer closed its end; the store keeps updating

    def _malformed(self, error: RemoteProtocolError) -> None:
        self.counters["malformed"] += 1
        logger.warning("malformed server data skipped (%s); connection stays up", error)

    async def _supervise(self) -> None:
        async with trio.open_nursery() as shared:
            shared.start_soon(self._keeper.run)
            shared.start_soon(self._deliver)
            async with trio.open_nursery() as sockets:
                for shard in self.shards:
                    sockets.start_soon(self._run_shard, shard)
            shared.cancel_scope.cancel()
        self._feed.ledger.save()
        error = self._stop_error
        self._pipeline.stop(EngineStopped(self.stop_reason or "stopped", error))
        self._events_send.close()
        for watcher in self._watchers:
            watcher.close()

    async def _run_shard(self, shard: Shard) -> None:
        await shard.run()
        if shard.stop_error is not None:
            # A policy stopped one socket (bad credentials, retry budget): the merged store
            # would silently miss that shard's accounts, so the others stop with it.
            for other in self.shards:
                if other is not shard:
                    other.close(f"shard {shard.index} stopped: {shard.stop_reason}")

    def _close(self) -> None:
        for shard in self.shards:
            shard.close("application closed the engine")

    @property
    def delivery(self) -> dict[str, int]:
        """How the change feed is coping: changes waiting now, the most ever waiting,
        changes merged while the consumer was behind, no-op changes dropped, repeated fills
        suppressed (see :mod:`trio_tradovate.feed`)."""
        feed = self._feed
        return {
            "waiting": len(feed),
            "high_water": feed.high_water,
            "coalesced": feed.coalesced,
            "no_ops": feed.no_ops,
            "repeated_fills": feed.repeated_fills,
        }


@asynccontextmanager
async def open_engine(config: EngineConfig) -> AsyncIterator[Engine]:
    """Run an engine for the duration of the ``async with`` block.

    On entry the engine starts connecting in the background; on exit it closes the websocket
    politely, closes the stream, and reaches ``STOPPED``. Errors of the block propagate as
    themselves, not wrapped in an ``ExceptionGroup``.
    """
    async with httpx.AsyncClient(
        transport=config.http_transport, timeout=config.connect_timeout
    ) as http:
        try:
            async with trio.open_nursery() as nursery:
                engine = Engine(config, http)
                nursery.start_soon(engine._supervise)
                try:
                    yield engine
                finally:
                    engine._close()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
