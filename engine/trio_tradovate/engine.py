"""The engine: what every socket shares, and the public face of the library.

Theory of operation
-------------------
:func:`open_engine` builds one :class:`Engine` and runs, in one nursery, the things every
socket shares: the token keeper's background renewal and the penalty region's clock; the
consumer pulls changes from the change feed itself (``delivery.ChangeStream``). Then it runs one
:class:`~trio_tradovate.supervisor.SocketSupervisor` per socket (one by default; ``shards=N``
spreads the sync stream over N sockets). Each supervisor gets a narrow
:class:`~trio_tradovate.supervisor.SocketContext` (token source, store writer, request
pipeline, rate governor, penalty desk, counters, record sink), never the engine itself.

Shared by every socket: the access token (:class:`~trio_tradovate.auth.TokenKeeper`), the
entity store and its one writer, the change feed and its consumer channel, the request queue
(:class:`~trio_tradovate.pipeline.RequestPipeline`), the penalty region and the counters. The
engine's ``state`` is the sockets' states folded into one (see :attr:`Engine.state`).

Leaving the ``async with`` block, normally or by an exception, runs one shutdown: every
socket records its ``close`` transition, the fill checkpoint is saved, queued requests fail
with :class:`EngineStopped`, and the events and watcher channels close.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

import httpx
import orjson
import trio

from . import auth
from .collector import CollectorDiscipline
from .config import EngineConfig
from .delivery import ChangeHub, ChangeStream
from .endpoints import Endpoints
from .errors import ConfigError, EngineStopped, TradovateError
from .feed import DISCARD, FillLedger
from .health import RECENT_TRANSITIONS, EngineSnapshot, Freshness, SocketSnapshot, time_in_state
from .mdsocket import MarketDataFeed, market_data_socket
from .orders import Orders
from .penalty import PenaltyRegion
from .pipeline import Request, RequestPipeline
from .protocol import encode_request
from .scheduler import Priority, RateGovernor, RequestScheduler, classify
from .statechart import State, TransitionRecord
from .store import EntityStore
from .supervisor import SocketContext, SocketSupervisor
from .transport import TcpConnector
from .views import StoreViews
from .writer import StoreWriter

logger = logging.getLogger("trio_tradovate.engine")

#: How far along each state is, to fold several sockets' states into one.
_PROGRESS = {
    State.DISCONNECTED: 0,
    State.BACKOFF: 1,
    State.CONNECTING: 2,
    State.AUTHENTICATING: 3,
    State.SYNCING: 4,
    State.LIVE: 5,
}


@dataclass(frozen=True)
class TokenStatus:
    """What the engine's token keeper has done, without any secret."""

    #: Renewals through ``auth/renewaccesstoken`` (same session).
    renewals: int
    #: Logins through ``auth/accesstokenrequest`` (a new session each).
    logins: int
    #: The held token's ``expirationTime``, when the server gave one.
    expires_at: datetime | None


class _Tokens:
    """The token source every socket shares: the keeper, plus the user id the sync names."""

    def __init__(
        self,
        keeper: auth.TokenKeeper,
        engine_config: EngineConfig,
        http: httpx.AsyncClient,
        pace: Callable[[str], Awaitable[None]],
    ) -> None:
        self._keeper = keeper
        self._config = engine_config
        self._http = http
        self._pace = pace
        self._user_id = engine_config.user_id

    @property
    def renewable(self) -> bool:
        return self._config.credentials is not None

    @property
    def user_id(self) -> int | None:
        return self._user_id

    async def get(self) -> auth.AccessToken:
        token = await self._keeper.get()
        if self._user_id is None:
            if token.user_id is None:
                await self._pace("auth/me")
            self._user_id = token.user_id or await auth.fetch_user_id(
                self._http, self._config.rest_url, token
            )
        return token

    def reject(self, token: auth.AccessToken) -> None:
        self._keeper.reject(token)


class Engine:
    """A running engine. Get one from :func:`open_engine`.

    Read :attr:`state`, :attr:`store` and :attr:`transitions` at any time; consume entity
    changes from :meth:`events`; send requests with :meth:`request`.
    """

    def __init__(self, config: EngineConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.store = EntityStore(shared=config.shards > 1)
        #: Typed, read-only views of :attr:`store` (orders of an account, a position, ...).
        self.views = StoreViews(self.store)
        #: Typed orders: place, modify, cancel, liquidate; handles that follow the store.
        self.orders = Orders(self)
        #: Typed read-only requests (``account_list()``, ``contract_find("ESZ6")``, ...).
        self.api = Endpoints(self)
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
        self._records: deque[TransitionRecord] = deque(maxlen=config.transition_log_size)
        self._audit = config.audit_file.open("ab") if config.audit_file is not None else None
        self._state_changed = trio.Event()
        self._watchers: list[
            tuple[
                trio.MemorySendChannel[TransitionRecord],
                weakref.ref[trio.MemoryReceiveChannel[TransitionRecord]],
            ]
        ] = []
        #: Every ``events()`` subscription; routes the writer to their feeds.
        self._changes = ChangeHub(
            self.store,
            FillLedger(config.checkpoint_file),
            window=config.event_buffer,
            batch=config.event_buffer,
            generation=lambda: self.generation,
        )
        entity_types = (
            frozenset(config.sync.entity_types) if config.sync.entity_types is not None else None
        )
        self._writer = StoreWriter(
            self.store,
            DISCARD,  # until someone subscribes (the hub routes it)
            entity_types=entity_types,
            counters=self.counters,
            wake=lambda: None,
            on_write=self.orders.store_written,
        )
        self._changes.attach(self._writer.route)
        self._scheduler = RequestScheduler(
            RateGovernor(config.rate_limits), lockout=config.lockout_seconds
        )
        self._penalty = PenaltyRegion(
            self._scheduler,
            path=config.penalty_state_file,
            wall_clock=config.wall_clock,
            wall_stamp=self._wall_stamp,
            on_record=self._on_record,
            engine_state=lambda: self.state,
        )
        self._pipeline = RequestPipeline(
            self._scheduler, on_lockout=self._penalty.begin, on_penalty_state=self._penalty.save
        )
        context = SocketContext(
            config=config,
            connector=config.connector or TcpConnector(),
            tokens=_Tokens(self._keeper, config, http, self._pace_rest),
            writer=self._writer,
            pipeline=self._pipeline,
            governor=self._scheduler.governor,
            penalties=self._penalty,
            counters=self.counters,
            on_record=self._on_record,
            wall_clock=self._wall_stamp,
            collector=CollectorDiscipline(config.gc_discipline),
        )
        #: One supervisor per socket; a single one unless ``config.shards`` says otherwise.
        self.shards = tuple(
            SocketSupervisor(context, index, config.sync_for_shard(index))
            for index in range(config.shards if config.user_sync else 0)
        )
        #: The market-data feed when ``config.market_data`` asks for the socket, else None.
        self.market_data: MarketDataFeed | None = None
        #: Every socket's supervisor: the user-sync shards, then the market-data socket.
        self.sockets: tuple[SocketSupervisor, ...] = self.shards
        if config.market_data:
            md_socket, self.market_data = market_data_socket(context, len(self.shards))
            self.sockets = (*self.shards, md_socket)
        self._penalty.load()
        #: Where feeds report data arriving, for :attr:`EngineSnapshot.staleness`.
        self.freshness = Freshness()
        self._opened_at = trio.current_time()

    # ----------------------------------------------------------------- public, read-only view

    @property
    def state(self) -> State:
        """The engine's state: its socket's, or for several sockets the least advanced of
        those still running (``LIVE`` only when all are live; ``STOPPED`` when all stopped)."""
        running = [shard.state for shard in self.sockets if shard.state is not State.STOPPED]
        if not running:
            return State.STOPPED
        return min(running, key=_PROGRESS.__getitem__)

    @property
    def transitions(self) -> tuple[TransitionRecord, ...]:
        """The latest transitions of every socket and of the penalty region, oldest first
        (at most ``transition_log_size``; ``audit_file`` keeps them all)."""
        return tuple(self._records)

    @property
    def generation(self) -> int:
        """How many connection attempts have started, over all sockets."""
        return sum(shard.generation for shard in self.sockets)

    @property
    def stop_reason(self) -> str | None:
        """Why the engine stopped (the first socket that stopped), once it has."""
        for shard in self.sockets:
            if shard.stop_reason is not None:
                return shard.stop_reason
        return None

    @property
    def token_status(self) -> TokenStatus:
        """Renewals, logins and the expiry of the held token (no secret in it)."""
        keeper = self._keeper
        held = keeper.token
        return TokenStatus(keeper.renewals, keeper.logins, held.expiration if held else None)

    @property
    def stop_error(self) -> TradovateError | None:
        """The typed error that stopped the engine by policy, if one did."""
        for shard in self.sockets:
            if shard.stop_error is not None:
                return shard.stop_error
        return None

    def events(self) -> ChangeStream:
        """A new subscription to the entity changes: each call gets a stream of its own.

        It starts with what the store holds now (``Created``, ``recovered=True``; nothing
        before the first snapshot), then every later change. Applying every change received,
        in order, rebuilds exactly the store's state. The latest ``event_buffer`` changes wait
        as they came; behind them, a consumer that falls behind gets changes coalesced per
        entity (``coalesced=True``) instead of an ever-growing backlog, and neither the reader
        nor the other subscriptions ever wait for it. ``receive_batch()`` takes everything
        waiting at once. Close it (``async with``, ``close()``) or drop it when done: it then
        costs nothing (see ``docs/state-recovery.md``).
        """
        return self._changes.subscribe()

    def watch_transitions(self, buffer: int = 256) -> trio.MemoryReceiveChannel[TransitionRecord]:
        """A channel that receives every later transition record.

        The supervisor never waits for a watcher: if this buffer is full, records are dropped
        for this watcher (their ``seq`` numbers show the gap). A watcher the application
        closed or dropped is forgotten.
        """
        send, receive = trio.open_memory_channel[TransitionRecord](buffer)
        self._watchers.append((send, weakref.ref(receive)))
        return receive

    @property
    def watcher_count(self) -> int:
        """How many transition watchers are still open (closed and dropped ones are pruned)."""
        return sum(1 for _, receive in self._watchers if receive() is not None)

    async def wait_for(self, *states: State) -> TransitionRecord:
        """Wait until the engine is in one of ``states``; return the latest transition record.

        Raises:
            EngineStopped: the engine stopped (and ``STOPPED`` was not asked for).
        """
        while True:
            if self.state in states and self._records:
                return self._records[-1]
            if self.state is State.STOPPED:
                error = self.stop_error
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
            raise EngineStopped(self.stop_reason or "stopped", self.stop_error)
        if not wait and self.state is not State.LIVE:
            raise self._pipeline.not_live_error(endpoint)
        request = Request(endpoint, query, body, priority or classify(endpoint))
        return await self._pipeline.call(request, limit)

    # ------------------------------------------------------------------ shared machinery

    def _wall_stamp(self) -> str:
        return self.config.wall_clock().isoformat()

    def _on_record(self, record: TransitionRecord) -> None:
        """Every chart reports its records here (one merged, ordered log)."""
        self._records.append(record)
        self.orders.on_transition(record)
        if self._audit is not None:
            self._audit.write(orjson.dumps(record.as_dict()) + b"\n")
            self._audit.flush()
        self._state_changed.set()
        self._state_changed = trio.Event()
        kept = []
        for send, receive in self._watchers:
            if receive() is None:  # the application dropped it
                send.close()
                continue
            try:
                send.send_nowait(record)
            except trio.WouldBlock:
                self.counters["transition_records_dropped"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue
            kept.append((send, receive))
        self._watchers = kept

    async def _pace_rest(self, endpoint: str) -> None:
        """Wait for ``endpoint``'s REST budget (P-RL), shared with every other request."""
        wait = self._scheduler.governor.reserve(endpoint, trio.current_time())
        if wait > 0:
            logger.warning("%s waits %.0f s for its rate budget", endpoint, wait)
            await trio.sleep(wait)

    async def _supervise(self) -> None:
        try:
            async with trio.open_nursery() as shared:
                shared.start_soon(self._keeper.run)
                shared.start_soon(self._penalty.run)
                async with trio.open_nursery() as sockets:
                    for shard in self.sockets:
                        sockets.start_soon(self._run_shard, shard)
                shared.cancel_scope.cancel()
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        """The one shutdown, synchronous so it runs however the engine is left."""
        error = self.stop_error
        self._pipeline.stop(EngineStopped(self.stop_reason or "stopped", error))
        self._changes.end()  # ends every subscription; saves the fill checkpoint
        if self.market_data is not None:
            self.market_data.stop(EngineStopped(self.stop_reason or "stopped", error))
        for send, _ in self._watchers:
            send.close()
        self._watchers.clear()
        if self._audit is not None:
            self._audit.close()

    async def _run_shard(self, shard: SocketSupervisor) -> None:
        await shard.run()
        if shard.stop_error is not None:
            # A policy stopped one socket (bad credentials, retry budget): the merged store
            # would silently miss that socket's accounts, so the others stop with it.
            for other in self.sockets:
                if other is not shard:
                    other.close(f"shard {shard.index} stopped: {shard.stop_reason}")

    def _close(self) -> None:
        for shard in self.sockets:
            shard.close("application closed the engine")

    def snapshot_metrics(self) -> EngineSnapshot:
        """Everything metrics, health checks and the console show, at this instant (see
        :mod:`trio_tradovate.health` and ``docs/operations.md``). Cheap: no I/O."""
        now = trio.current_time()
        records = self._records  # read in place: a copy of up to transition_log_size is waste
        sockets = tuple(
            SocketSnapshot(
                index=shard.index,
                state=shard.state,
                node=shard.node.value,
                generation=shard.generation,
                time_in_state=time_in_state(records, shard.index, now, self._opened_at),
                failed_attempts=shard.failed_attempts,
                last_frame_age=None if shard.last_frame_at is None else now - shard.last_frame_at,
                stop_reason=shard.stop_reason,
            )
            for shard in self.shards
        )
        staleness = {
            f"socket:{s.index}": s.last_frame_age for s in sockets if s.last_frame_age is not None
        }
        staleness.update(self.freshness.ages(now))
        token = self.token_status
        wall = self.config.wall_clock()
        penalty = self._scheduler.penalty
        locked = self._scheduler.locked_out(now)
        return EngineSnapshot(
            taken_at=now,
            wall_time=wall.isoformat(),
            state=self.state,
            sockets=sockets,
            counters=dict(self.counters),
            delivery=self.delivery,
            queued_requests=len(self._scheduler),
            locked_out=locked,
            lockout_seconds_left=max(0.0, penalty.lockout_until - now) if locked else 0.0,
            token_renewals=token.renewals,
            token_logins=token.logins,
            token_seconds_left=(
                None if token.expires_at is None else (token.expires_at - wall).total_seconds()
            ),
            staleness=staleness,
            recent=tuple(islice(reversed(records), RECENT_TRANSITIONS))[::-1],
            stop_reason=self.stop_reason,
            pause_seconds_left=max(0.0, penalty.paused_until - now),
            penalties=penalty.penalties,
            lockouts=penalty.lockouts,
        )

    @property
    def delivery(self) -> dict[str, int]:
        """How the change feeds are coping, over every ``events()`` subscription: open
        subscriptions, changes waiting now, the most ever waiting in one, changes merged while
        a consumer was behind, no-op changes dropped, repeated fills suppressed (see
        :mod:`trio_tradovate.feed`)."""
        return self._changes.statistics()


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
