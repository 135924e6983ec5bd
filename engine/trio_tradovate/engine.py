"""The Trio engine: one supervisor task drives the statechart; per-connection child tasks do I/O.

Theory of operation
-------------------
:func:`open_engine` starts one **supervisor** task. It is the only code that fires statechart
triggers. For every connection attempt (a *generation*) it opens a child nursery holding:

- the **reader**: websocket messages -> :func:`protocol.parse_frame` -> store / pending requests
  / reports;
- the **heartbeat** sender: ``[]`` every ``heartbeat_interval`` on a fixed schedule, never
  queued behind requests;
- the **watchdog**: no frame at all for ``server_silence_timeout`` means a half-open socket;
- the **sender**: once the connection is live, sends application requests from the engine's
  request queue (``pipeline.py``, ``scheduler.py``) in priority order, paced and penalty-aware.

Children never change the state. They put :class:`_Report` objects (``_Opened``,
``_Answered``, ``_Fault``) into the connection's report channel; the supervisor reads them,
sends ``authorize`` and ``user/syncrequest`` at the right moments, applies the snapshot, fires
the matching trigger, and on the first fault leaves the connection: the websocket is closed,
the stream is closed (we own it), the nursery is cancelled, and the backoff begins.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import trio
import trio_websocket

from . import auth
from .config import EngineConfig
from .errors import (
    AuthenticationError,
    AuthenticationTimeout,
    CaptchaRequired,
    ClosedByServer,
    ConfigError,
    ConnectError,
    ConnectTimeout,
    DNSError,
    EngineStopped,
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
    classify_connect_error,
    excerpt,
)
from .feed import ChangeFeed, FillLedger
from .pipeline import Outbound, Request, RequestPipeline
from .protocol import (
    HEARTBEAT_FRAME,
    Close,
    Heartbeat,
    Malformed,
    Open,
    Push,
    Response,
    ServerEvent,
    encode_request,
    parse_entity_event,
    parse_frame,
)
from .scheduler import PENALTY_MARGIN, Priority, RateGovernor, RequestScheduler, classify
from .statechart import State, Statechart, TransitionRecord
from .store import EntityChange, EntityStore
from .transport import Connector, TcpConnector

logger = logging.getLogger("trio_tradovate.engine")

#: A token received this recently (s) and rejected at once was never good.
_JUST_MINTED = 60.0

#: Websocket close codes that mean the bytes were bad, not that the peer went away.
_PROTOCOL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1009})


# --- reports from child tasks to the supervisor -----------------------------------------------


@dataclass(frozen=True)
class _Opened:
    pass


@dataclass(frozen=True)
class _Answered:
    purpose: str  # "authorize" or "sync"
    response: Response


@dataclass(frozen=True)
class _Fault:
    """Why a connection ended. ``trigger`` is the statechart trigger it leads to."""

    trigger: str  # "lost", "connect_failed" or "fail"
    kind: str  # e.g. "dropped", "stalled": the fault kind in transition reasons
    error: TradovateError
    #: The backoff waits at least this long (a sync penalty's p-time).
    min_delay: float = 0.0

    def describe(self) -> str:
        return f"{self.kind}: {self.error}"


@dataclass(frozen=True)
class _Lockout:
    reason: str  # "captcha" or "429"


_Report = _Opened | _Answered | _Fault | _Lockout


class _Connection:
    """Everything that lives and dies with one websocket (one generation)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, generation: int) -> None:
        self.ws = ws
        self.generation = generation
        self.outbound = Outbound()
        #: Set once the snapshot is applied: application requests may go out from then on.
        self.live = trio.Event()
        #: Cancelled first when the connection ends, so no request is taken off the queue
        #: for a socket that is going away.
        self.sender_scope = trio.CancelScope()
        self.started_at = trio.current_time()
        self.last_frame_at = self.started_at
        self.opened = False
        self.authorize_id: int | None = None
        self.sync_id: int | None = None
        #: props events that arrived before the snapshot was applied.
        self.early_props: list[Any] = []
        self.reports_send, self.reports = trio.open_memory_channel[_Report](64)
        #: The fault that ended this connection, once the supervisor has it.
        self.fault: _Fault | None = None

    def report(self, report: _Report) -> None:
        """Children call this; when the supervisor has already left, reports are dropped."""
        try:
            self.reports_send.send_nowait(report)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            logger.debug("report dropped after the connection ended: %r", report)


def _penalty_of(response: Response, lockout: float) -> tuple[_Fault, str | None] | None:
    """A penalised or rate-limited ``user/syncrequest``: the fault, and the ticket if any.

    It is not resent on the same socket: the one-sync-per-socket rule (Stage 2) outranks the
    resend, so the connection is left; the next socket syncs after ``p-time`` at the earliest,
    presenting the ticket (§8). A 429 means a lockout whose window restarts with every
    request made during it (P-ERR), so the next attempt waits the whole lockout.
    """
    data = response.data
    error: Penalized
    if response.status == 429:
        error = RateLimited(f"user/syncrequest answered 429: waiting {lockout:g} s")
        return _Fault("lost", "sync_rate_limited", error, min_delay=lockout), None
    if response.status == 200 and isinstance(data, dict) and "p-ticket" in data:
        if data.get("p-captcha"):
            error = CaptchaRequired(f"user/syncrequest needs a captcha: waiting {lockout:g} s")
            return _Fault("lost", "sync_penalized", error, min_delay=lockout), None
        p_time = data.get("p-time")
        wait = float(p_time) if isinstance(p_time, int | float) else 0.0
        error = Penalized(f"user/syncrequest penalised for {wait:g} s")
        fault = _Fault("lost", "sync_penalized", error, min_delay=wait + PENALTY_MARGIN)
        return fault, str(data["p-ticket"])
    return None


def _fault_kind(error: TradovateError) -> str:
    kinds: list[tuple[type[TradovateError], str]] = [
        (DNSError, "dns"),
        (TLSError, "tls"),
        (ConnectTimeout, "connect_timeout"),
        (HandshakeRejected, "handshake_rejected"),
        (ConnectError, "refused"),
    ]
    for cls, kind in kinds:
        if isinstance(error, cls):
            return kind
    return type(error).__name__


class Engine:
    """A running connection engine. Get one from :func:`open_engine`.

    Read :attr:`state`, :attr:`store` and :attr:`transitions` at any time; consume entity
    changes from :meth:`events`; send requests with :meth:`request`.
    """

    def __init__(self, config: EngineConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self._http = http
        self._connector: Connector = config.connector or TcpConnector()
        self._rng = random.Random(config.seed)
        self._chart = Statechart(
            clock=trio.current_time, policy=self, on_record=self._after_transition
        )
        self.store = EntityStore()
        #: Counts of what happened: frames, malformed input, faults by kind, reconnects.
        self.counters: Counter[str] = Counter()
        self._generation = 0
        self._failed_attempts = 0
        self._live_since: float | None = None
        self._was_live = False  # whether the connection that just ended had been live
        self._fault_at = 0.0  # when the last fault was known
        self._sync_ticket: str | None = None  # p-ticket earned by a penalised syncrequest
        self._lockout_announced = False
        self._keeper = auth.TokenKeeper(
            http,
            config.rest_url,
            config.credentials,
            auth.AccessToken(config.access_token, fresh=False) if config.access_token else None,
            wall_clock=config.wall_clock,
            margin=config.token_refresh_margin,
        )
        self._auth_rejections = 0  # consecutive refusals of just-minted tokens
        self._user_id = config.user_id
        self._conn: _Connection | None = None
        self._state_changed = trio.Event()
        self._events_send, self._events_recv = trio.open_memory_channel[EntityChange](
            config.event_buffer
        )
        self._feed = ChangeFeed(FillLedger(config.checkpoint_file))
        self._feed_wake = trio.Event()
        self._watchers: list[trio.MemorySendChannel[TransitionRecord]] = []
        self._run_scope = trio.CancelScope()
        self._stop_reason: str | None = None
        self._stop_error: TradovateError | None = None
        self._entity_types = _entity_types_of(config.sync_body)
        self._scheduler = RequestScheduler(
            RateGovernor(config.rate_limits), lockout=config.lockout_seconds
        )
        self._pipeline = RequestPipeline(
            self._scheduler, on_lockout=self._lockout_notice, on_penalty_state=self._save_penalty
        )
        self._load_penalty()

    # ----------------------------------------------------------------- public, read-only view

    @property
    def state(self) -> State:
        """The current statechart state."""
        return self._chart.state

    @property
    def transitions(self) -> tuple[TransitionRecord, ...]:
        """Every transition so far, oldest first."""
        return tuple(self._chart.records)

    @property
    def generation(self) -> int:
        """How many connection attempts have started (the current one's number)."""
        return self._generation

    @property
    def stop_reason(self) -> str | None:
        """Why the engine stopped, once it has."""
        return self._stop_reason

    def retry_budget_exhausted(self) -> bool:
        """Statechart guard: the configured number of consecutive failed attempts is used up."""
        budget = self.config.backoff.retry_budget
        return budget is not None and self._failed_attempts >= budget

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
        """Wait until the engine is in one of ``states``; return the record that put it there.

        Raises:
            EngineStopped: the engine stopped (and ``STOPPED`` was not asked for).
        """
        while True:
            if self.state in states and self._chart.records:
                return self._chart.records[-1]
            if self.state is State.STOPPED:
                raise EngineStopped(self._stop_reason or "stopped", self._stop_error) from (
                    self._stop_error
                )
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
            raise EngineStopped(self._stop_reason or "stopped", self._stop_error)
        if not wait and self.state is not State.LIVE:
            raise self._pipeline.not_live_error(endpoint)
        request = Request(endpoint, query, body, priority or classify(endpoint))
        return await self._pipeline.call(endpoint, query, body, request, limit)

    def _lockout_notice(self, reason: str) -> None:
        self._lockout_announced = True
        conn = self._conn
        if conn is not None:
            conn.report(_Lockout(reason))

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

    def _fire(self, trigger: str, reason: str) -> TransitionRecord:
        return self._chart.fire(trigger, reason=reason, generation=self._generation)

    def _after_transition(self, record: TransitionRecord) -> None:
        if record.dest is State.STOPPED:
            self._stop_reason = record.reason
        self._state_changed.set()
        self._state_changed = trio.Event()
        for watcher in list(self._watchers):
            try:
                watcher.send_nowait(record)
            except trio.WouldBlock:
                self.counters["transition_records_dropped"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._watchers.remove(watcher)

    async def _supervise(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keeper.run)
            nursery.start_soon(self._deliver)
            with self._run_scope:
                await self._run()
            nursery.cancel_scope.cancel()
        self._feed.ledger.save()
        if self.state is not State.STOPPED:
            self._stop_error = None
            self._fire("close", "application closed the engine")
        self._pipeline.stop(EngineStopped(self._stop_reason or "stopped", self._stop_error))
        self._events_send.close()
        for watcher in self._watchers:
            watcher.close()

    async def _run(self) -> None:
        self._fire("start", "application opened the engine")
        while True:
            self._generation += 1
            fault = await self._connection_cycle()  # its transition has been fired already
            if self.state is State.STOPPED:
                return
            delay, why = self._backoff_delay(fault, self._was_live)
            log = logger.error if isinstance(fault.error, ServerShutdown) else logger.warning
            log(
                "%s; reconnecting in %.2f s (attempt %d, %s)",
                fault.describe(),
                delay,
                self._failed_attempts,
                why,
            )
            # Measured from when the fault was known, not from when cleanup finished.
            await trio.sleep_until(self._fault_at + delay)
            self.counters["reconnects"] += 1
            self._fire("retry", f"waited {delay:.3f} s (attempt {self._failed_attempts}, {why})")

    def _conclude(self, fault: _Fault) -> _Fault:
        """Fire the transition a fault leads to, the moment it is known (before any cleanup,
        so the record's time is when the engine knew, not when the socket finished closing)."""
        self.counters[f"fault.{fault.kind}"] += 1
        self._fault_at = trio.current_time()
        self._stop_error = fault.error  # kept only if this fault ends up stopping us
        if fault.trigger == "fail":
            logger.error("%s; the engine stops (nothing to retry with)", fault.describe())
            self._fire("fail", fault.describe())
            return fault
        self._was_live = self._live_since is not None
        if self._live_since is not None:
            stable = trio.current_time() - self._live_since >= self.config.backoff.stable_after
            if stable:
                self._failed_attempts = 0
        self._live_since = None
        self._failed_attempts += 1
        record = self._fire(fault.trigger, fault.describe())
        if record.dest is State.STOPPED:
            logger.error(
                "%s; retry budget of %s attempts used up, the engine stops",
                fault.describe(),
                self.config.backoff.retry_budget,
            )
        return fault

    def _backoff_delay(self, fault: _Fault, was_live: bool) -> tuple[float, str]:
        """How long to wait before the next attempt, and the policy that decided it."""
        policy = self.config.backoff
        if isinstance(fault.error, ServerShutdown):
            code = fault.error.reason_code
            base = policy.shutdown_delay(code)
            if code in ("ConnectionQuotaReached", "IPQuotaReached"):
                logger.error(
                    "Tradovate reports %s: another connection would evict one of this user's "
                    "sessions; waiting %.0f s before reconnecting",
                    code,
                    base,
                )
            return base + self._rng.uniform(0, base * 0.25), f"shutdown policy {code}"
        ceiling = policy.ceiling(self._failed_attempts - 1)
        if fault.min_delay > 0:
            return fault.min_delay + self._rng.uniform(0, ceiling), "penalty p-time"
        if was_live:
            ceiling = min(ceiling, policy.after_live_cap)
            return self._rng.uniform(0, ceiling), "live connection lost"
        return self._rng.uniform(0, ceiling), "exponential backoff"

    async def _ensure_token(self) -> auth.AccessToken:
        token = await self._keeper.get()
        if self._user_id is None:
            self._user_id = token.user_id or await auth.fetch_user_id(
                self._http, self.config.rest_url, token
            )
        return token

    async def _connection_cycle(self) -> _Fault:
        """One connection attempt, from token to the first fault."""
        try:
            token = await self._ensure_token()
        except AuthenticationError as exc:  # includes CaptchaRequired: no program can go on
            return self._conclude(_Fault("fail", "credentials_rejected", exc))
        except Penalized as exc:
            return self._conclude(_Fault("connect_failed", "login_penalized", exc))
        except ConnectError as exc:
            return self._conclude(_Fault("connect_failed", _fault_kind(exc), exc))
        url = urlsplit(self.config.websocket_url)
        host = url.hostname or ""
        tls = url.scheme == "wss"
        port = url.port or (443 if tls else 80)
        resource = url.path + (f"?{url.query}" if url.query else "")
        stream: trio.abc.Stream | None = None
        rejected: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(self.config.connect_timeout):
                        stream = await self._connector(host, port, tls=tls)
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            cast(trio.SocketStream, stream),
                            host,
                            resource,
                            message_queue_size=self.config.message_queue_size,
                            max_message_size=self.config.max_message_size,
                            receive_buffer_size=self.config.receive_buffer_size,
                        )
                except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                    nursery.cancel_scope.cancel()
                    error = classify_connect_error(exc)
                    return self._conclude(_Fault("connect_failed", _fault_kind(error), error))
                except trio_websocket.HandshakeError as exc:
                    nursery.cancel_scope.cancel()
                    error = classify_connect_error(exc)
                    return self._conclude(_Fault("connect_failed", _fault_kind(error), error))
                conn = _Connection(ws, self._generation)
                self._conn = conn
                nursery.start_soon(self._reader, conn)
                nursery.start_soon(self._heartbeat, conn)
                nursery.start_soon(self._watchdog, conn)
                nursery.start_soon(self._sender, conn)
                try:
                    conn.fault = self._conclude(await self._drive(conn, token))
                    return conn.fault
                finally:
                    if conn.fault is None:  # cancelled: the application is closing
                        conn.fault = _Fault("close", "closed", EngineStopped("closing"))
                    self._conn = None
                    conn.sender_scope.cancel()
                    self._pipeline.connection_lost(conn.outbound, conn.fault.error)
                    conn.reports_send.close()
                    await self._close_websocket(ws)
                    nursery.cancel_scope.cancel()
        except* trio_websocket.HandshakeError as group:
            # trio-websocket raises a rejected upgrade (HTTP 404, 401, ...) from its own reader
            # task, so it arrives here wrapped by the nursery rather than from the call above.
            rejected = group.exceptions[0]
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)
        assert rejected is not None  # every other path returned inside the nursery
        error = classify_connect_error(rejected)
        return self._conclude(_Fault("connect_failed", _fault_kind(error), error))

    async def _close_websocket(self, ws: trio_websocket.WebSocketConnection) -> None:
        """A polite close when the socket is still up; bounded, and done even when cancelled."""
        if ws.closed is not None:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 1.0
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await ws.aclose(1000, "Client initiated disconnect.")

    async def _drive(self, conn: _Connection, token: auth.AccessToken) -> _Fault:
        """React to the connection's reports until the first fault; fire the triggers."""
        deadline = conn.started_at + self.config.connect_timeout
        sync_due: float | None = None  # the syncrequest waits for its rate budget (300/h)
        while True:
            report: _Report | None = None
            with trio.move_on_at(deadline if sync_due is None else sync_due):
                report = await conn.reports.receive()
            if report is None and sync_due is not None:
                sync_due = None
                await self._send_sync(conn)
                deadline = trio.current_time() + self.config.sync_timeout
                continue
            if report is None:
                return self._phase_timeout()
            if isinstance(report, _Fault):
                return report
            if isinstance(report, _Lockout):
                self._fire(
                    "penalized",
                    f"{report.reason}: only cancellations and liquidations go out for "
                    f"{self.config.lockout_seconds:g} s",
                )
                continue
            if isinstance(report, _Opened):
                self._fire("opened", "'o' received: sending authorize")
                conn.authorize_id = next(conn.outbound.ids)
                await self._send_control(
                    conn, encode_request("authorize", conn.authorize_id, None, token.token)
                )
                deadline = trio.current_time() + self.config.auth_timeout
            elif report.purpose == "authorize":
                fault = self._authorization_fault(report.response, token)
                if fault is not None:
                    return fault
                now = trio.current_time()
                pace = self._scheduler.governor.delay("user/syncrequest", now)
                self._fire(
                    "authorized",
                    "authorize answered s=200: sending user/syncrequest"
                    + (f" in {pace:.1f} s (rate budget)" if pace > 0 else ""),
                )
                sync_due = now + pace
            else:
                response = report.response
                penalty = _penalty_of(response, self.config.lockout_seconds)
                if penalty is not None:
                    fault, self._sync_ticket = penalty
                    if isinstance(fault.error, RateLimited | CaptchaRequired):
                        self._scheduler.on_lockout(fault.kind, trio.current_time())
                        self._save_penalty()
                    return fault
                if response.status != 200 or not isinstance(response.data, dict):
                    text = response.data if isinstance(response.data, str) else "not an object"
                    return _Fault(
                        "lost",
                        "sync_failed",
                        RequestError("user/syncrequest", response.status, text),
                    )
                self._apply_snapshot(conn, response.data)
                self._live_since = trio.current_time()
                self._auth_rejections = 0
                self._fire(
                    "synced",
                    f"snapshot applied: {len(self.store)} entities",
                )
                conn.live.set()
                if not self._lockout_announced and self._scheduler.locked_out(trio.current_time()):
                    self._lockout_announced = True
                    self._fire(
                        "penalized",
                        f"{self._scheduler.penalty.lockout_reason}: a lockout saved by an "
                        "earlier run is still running; only cancellations go out",
                    )
                deadline = float("inf")

    async def _send_sync(self, conn: _Connection) -> None:
        conn.sync_id = next(conn.outbound.ids)
        self._scheduler.governor.record("user/syncrequest", trio.current_time())
        frame = encode_request("user/syncrequest", conn.sync_id, None, self._sync_body())
        await self._send_control(conn, frame)

    def _phase_timeout(self) -> _Fault:
        state = self.state
        if state is State.AUTHENTICATING:
            limit = self.config.auth_timeout
            return _Fault(
                "lost",
                "auth_timeout",
                AuthenticationTimeout(f"authorize unanswered after {limit:g} s"),
            )
        if state is State.SYNCING:
            limit = self.config.sync_timeout
            return _Fault(
                "lost",
                "sync_timeout",
                SyncTimeout(f"user/syncrequest unanswered after {limit:g} s"),
            )
        return _Fault(
            "connect_failed",
            "connect_timeout",
            ConnectTimeout(f"no 'o' frame within {self.config.connect_timeout:g} s"),
        )

    def _authorization_fault(self, response: Response, token: auth.AccessToken) -> _Fault | None:
        if response.status == 200:
            return None
        detail = response.data
        if isinstance(detail, dict):
            detail = detail.get("errorText", detail)
        error = AuthenticationError(
            f"authorize rejected with status {response.status}: {detail!s}",
            status=response.status,
            retryable=self.config.credentials is not None,
        )
        self._keeper.reject(token)
        if self.config.credentials is None:
            return _Fault("fail", "auth_rejected", error)
        # A token that was used a while can have expired or been revoked: get another. One
        # minted for this very attempt and refused anyway, twice in a row, means the server
        # will not take our tokens: more logins would only spend session and rate budgets.
        minted = token.minted_at
        just_minted = minted is not None and trio.current_time() - minted <= _JUST_MINTED
        self._auth_rejections = self._auth_rejections + 1 if just_minted else 0
        if self._auth_rejections >= 2:
            return _Fault("fail", "auth_rejected", error)
        return _Fault("lost", "auth_rejected", error)

    def _sync_body(self) -> Mapping[str, Any]:
        body = self.config.sync_body if self.config.sync_body is not None else {}
        if not body:
            body = {"users": [self._user_id]}
        if self._sync_ticket is not None:  # the resend of a penalised sync carries its ticket
            body = {**body, "p-ticket": self._sync_ticket}
            self._sync_ticket = None
        return body

    async def _send_control(self, conn: _Connection, frame: str) -> None:
        # On a closed socket the reader reports why; the supervisor reads that report next.
        with suppress(trio_websocket.ConnectionClosed):
            await conn.ws.send_message(frame)

    def _apply_snapshot(self, conn: _Connection, snapshot: Mapping[str, Any]) -> None:
        # Synchronous from here to the ``synced`` transition: no props event can slip between
        # the snapshot and the events buffered while it was on its way.
        for change in self.store.apply_snapshot(
            snapshot, conn.generation, entity_types=self._entity_types
        ):
            self._emit(change)
        for data in conn.early_props:
            self._apply_props(conn, data)
        conn.early_props.clear()

    # --------------------------------------------------------------------------- child tasks

    async def _reader(self, conn: _Connection) -> None:
        try:
            while True:
                message = await conn.ws.get_message()
                conn.last_frame_at = trio.current_time()
                self.counters["frames_received"] += 1
                if not isinstance(message, str):
                    self._malformed(RemoteProtocolError("binary frame", message))
                    continue
                try:
                    events = parse_frame(message)
                except RemoteProtocolError as exc:
                    self._malformed(exc)
                    continue
                for event in events:
                    await self._dispatch(conn, event)
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code if exc.reason else 1006
            reason = (exc.reason.reason or exc.reason.name) if exc.reason else "no close reason"
            if code in _PROTOCOL_CLOSE_CODES:
                kind = "protocol_error"
            elif code == 1006:
                kind = "dropped"
            else:
                kind = "closed_by_server"
            conn.report(_Fault("lost", kind, ClosedByServer(code, reason)))

    async def _dispatch(self, conn: _Connection, event: ServerEvent) -> None:
        if isinstance(event, Heartbeat):
            self.counters["server_heartbeats"] += 1
        elif isinstance(event, Push):
            await self._on_push(conn, event)
        elif isinstance(event, Response):
            self._on_response(conn, event)
        elif isinstance(event, Open):
            if conn.opened:
                self._malformed(RemoteProtocolError("second 'o' frame on one socket"))
            else:
                conn.opened = True
                conn.report(_Opened())
        elif isinstance(event, Close):
            conn.report(
                _Fault("lost", "closed_by_server", ClosedByServer(event.code, event.reason))
            )
        elif isinstance(event, Malformed):
            self._malformed(event.error)

    def _on_response(self, conn: _Connection, response: Response) -> None:
        if response.request_id == conn.authorize_id:
            conn.report(_Answered("authorize", response))
        elif response.request_id == conn.sync_id:
            conn.report(_Answered("sync", response))
        elif not self._pipeline.on_response(conn.outbound, response):
            logger.debug("reply to unknown request %d dropped", response.request_id)
            self.counters["late_replies"] += 1

    async def _on_push(self, conn: _Connection, push: Push) -> None:
        if push.kind == "props":
            if self.state is State.LIVE:
                self._apply_props(conn, push.data)
            else:
                conn.early_props.append(push.data)
        elif push.kind == "shutdown":
            data = push.data if isinstance(push.data, dict) else {}
            code = data.get("reasonCode")
            text = data.get("reason")
            error = ServerShutdown(
                code if isinstance(code, str) else "Unknown",
                text if isinstance(text, str) else None,
            )
            conn.report(_Fault("lost", "shutdown", error))
        elif push.kind in ("md", "chart", "clock"):
            self.counters[f"push.{push.kind}"] += 1
        else:
            self.counters["unknown_events"] += 1
            logger.warning("unknown event kind %s ignored", excerpt(push.kind, 40))

    def _apply_props(self, conn: _Connection, data: Any) -> None:
        try:
            event = parse_entity_event(data)
        except RemoteProtocolError as exc:
            self._malformed(exc)
            return
        self.counters["props_events"] += 1
        if self._entity_types is not None and event.entity_type not in self._entity_types:
            self.counters["props_filtered"] += 1
            return
        for change in self.store.apply_event(event, conn.generation):
            self._emit(change)

    def _emit(self, change: EntityChange) -> None:
        """Hand a change to the feed; never blocks (see :mod:`trio_tradovate.feed`)."""
        self._feed.push(change)
        self._feed_wake.set()

    async def _deliver(self) -> None:
        """Move changes from the feed to the consumer channel, at the consumer's pace."""
        saved_at = trio.current_time()
        while True:
            change = self._feed.pop()
            if change is None:
                if trio.current_time() - saved_at >= 1.0:  # checkpoint at most once a second
                    self._feed.ledger.save()
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

    async def _heartbeat(self, conn: _Connection) -> None:
        interval = self.config.heartbeat_interval
        next_at = conn.started_at + interval
        try:
            while True:
                await trio.sleep_until(next_at)
                await conn.ws.send_message(HEARTBEAT_FRAME)
                self.counters["heartbeats_sent"] += 1
                # A fixed schedule: a slow send does not push every later heartbeat back.
                next_at = max(next_at + interval, trio.current_time())
        except trio_websocket.ConnectionClosed:
            return  # the reader reports why

    async def _watchdog(self, conn: _Connection) -> None:
        # The reader never waits for the application (see feed.py), so silence here is the
        # server's or the network's, never our own consumer's.
        limit = self.config.server_silence_timeout
        while True:
            await trio.sleep_until(conn.last_frame_at + limit)
            if trio.current_time() - conn.last_frame_at >= limit:
                conn.report(_Fault("lost", "stalled", Stalled(limit)))
                return

    async def _sender(self, conn: _Connection) -> None:
        # A closed socket ends the sender; requests it had in flight are handled by
        # RequestPipeline.connection_lost when the supervisor leaves the connection.
        with conn.sender_scope, suppress(trio_websocket.ConnectionClosed):
            await self._pipeline.run_sender(conn.outbound, conn.ws.send_message, conn.live)


def _entity_types_of(sync_body: Mapping[str, Any] | None) -> frozenset[str] | None:
    if sync_body is None:
        return None
    types = sync_body.get("entityTypes")
    if types is None:
        return None
    return frozenset(str(t) for t in types)


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
                    engine._run_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
