"""One websocket's lifecycle: a statechart, its supervisor loop and the connection's tasks.

Theory of operation
-------------------
An :class:`~trio_tradovate.engine.Engine` runs one :class:`Shard` per socket (one, unless
``shards=N`` spreads the sync stream over N sockets). Each shard's :meth:`Shard.run` is the
**supervisor** of that socket: the only code that fires its statechart's triggers. For every
connection attempt (a *generation*) it opens a child nursery holding:

- the **reader**: websocket messages -> :func:`protocol.parse_frame` -> store / requests /
  reports;
- the **heartbeat** sender: ``[]`` every ``heartbeat_interval`` on a fixed schedule, never
  queued behind requests;
- the **watchdog**: no frame at all for ``server_silence_timeout`` means a half-open socket;
- the **sender**: once the connection is live, sends application requests from the engine's
  request queue (``pipeline.py``, ``scheduler.py``) in priority order, paced and penalty-aware.

Children never change the state. They put :class:`_Report` objects (``_Opened``,
``_Answered``, ``_Fault``, ``_Lockout``) into the connection's report channel; the supervisor
reads them, sends ``authorize`` and ``user/syncrequest`` at the right moments, applies the
snapshot, fires the matching trigger, and on the first fault fires the transition at once,
then leaves the connection: the websocket is closed, the stream is closed (we own it), the
nursery is cancelled, and the backoff begins.

What all shards share (token, store, change feed, request queue, counters) lives in the
engine; a shard reaches it through ``self._engine``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from . import auth
from .boundary import classify_connect_error
from .config import SyncOptions
from .errors import (
    AuthenticationError,
    AuthenticationTimeout,
    CaptchaRequired,
    ClosedByServer,
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
    excerpt,
)
from .pipeline import Outbound
from .protocol import (
    HEARTBEAT_FRAME,
    PUSH_KINDS,
    Close,
    EntityEvent,
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
from .scheduler import PENALTY_MARGIN
from .statechart import State, Statechart, TransitionRecord
from .store import singular

logger = logging.getLogger("trio_tradovate.engine")


if TYPE_CHECKING:
    from .engine import Engine

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


def _assemble(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """One snapshot from the parts of a split sync: collections concatenated by name."""
    snapshot: dict[str, Any] = {}
    for part in parts:
        for name, values in part.items():
            if isinstance(values, list):
                snapshot.setdefault(name, []).extend(values)
            else:
                snapshot.setdefault(name, values)
    return snapshot


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


class Shard:
    """One socket of an engine: its statechart, supervisor and connection tasks."""

    def __init__(self, engine: Engine, index: int, sync: SyncOptions) -> None:
        self._engine = engine
        self.index = index
        self.config = engine.config
        self._sync = sync
        seed = None if self.config.seed is None else self.config.seed + index
        self._rng = random.Random(seed)
        self._chart = Statechart(
            clock=trio.current_time, policy=self, on_record=engine._on_record, shard=index
        )
        self._generation = 0
        self._failed_attempts = 0
        self._live_since: float | None = None
        self._was_live = False  # whether the connection that just ended had been live
        self._fault_at = 0.0  # when the last fault was known
        self._sync_ticket: str | None = None  # p-ticket earned by a penalised syncrequest
        self._auth_rejections = 0  # consecutive refusals of just-minted tokens
        self._conn: _Connection | None = None
        self.run_scope = trio.CancelScope()
        self._close_reason = "application closed the engine"
        self.stop_reason: str | None = None
        self.stop_error: TradovateError | None = None

    @property
    def state(self) -> State:
        """This socket's statechart state."""
        return self._chart.state

    @property
    def generation(self) -> int:
        """How many connection attempts this socket has started."""
        return self._generation

    @property
    def live_connection(self) -> _Connection | None:
        """The connection, while it is live and not ending."""
        conn = self._conn
        if self.state is State.LIVE and conn is not None and conn.fault is None:
            return conn
        return None

    def lockout_notice(self, reason: str) -> None:
        """A penalty lockout began: the supervisor records it as a ``penalized`` transition."""
        conn = self.live_connection
        if conn is not None:
            conn.report(_Lockout(reason))

    def close(self, reason: str) -> None:
        """Make :meth:`run` end, recording ``reason`` in the ``close`` transition."""
        self._close_reason = reason
        self.run_scope.cancel()

    async def run(self) -> None:
        """Supervise this socket until the engine closes or a policy stops it."""
        with self.run_scope:
            await self._run()
        if self.state is not State.STOPPED:
            self.stop_error = None
            self._fire("close", self._close_reason)

    def retry_budget_exhausted(self) -> bool:
        """Statechart guard: the configured number of consecutive failed attempts is used up."""
        budget = self.config.backoff.retry_budget
        return budget is not None and self._failed_attempts >= budget

    def _fire(self, trigger: str, reason: str) -> TransitionRecord:
        return self._chart.fire(trigger, reason=reason, generation=self._generation)

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
            self._engine.counters["reconnects"] += 1
            self._fire("retry", f"waited {delay:.3f} s (attempt {self._failed_attempts}, {why})")

    def _conclude(self, fault: _Fault) -> _Fault:
        """Fire the transition a fault leads to, the moment it is known (before any cleanup,
        so the record's time is when the engine knew, not when the socket finished closing)."""
        self._engine.counters[f"fault.{fault.kind}"] += 1
        self._fault_at = trio.current_time()
        self.stop_error = fault.error  # kept only if this fault ends up stopping us
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
        token = await self._engine._keeper.get()
        if self._engine._user_id is None:
            if token.user_id is None:
                await self._engine._pace_rest("auth/me")
            self._engine._user_id = token.user_id or await auth.fetch_user_id(
                self._engine._http, self.config.rest_url, token
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
                        stream = await self._engine._connector(host, port, tls=tls)
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
                    self._engine._pipeline.connection_lost(conn.outbound, conn.fault.error)
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
        """React to the connection's reports until the first fault; fire the triggers.

        Three timers: the current phase's deadline; when the syncrequest may go (its rate
        budget); and, for a split snapshot, when the parts are deemed complete.
        """
        deadline = conn.started_at + self.config.connect_timeout
        sync_due: float | None = None
        parts: list[Mapping[str, Any]] = []
        parts_due: float | None = None
        while True:
            wake = min(t for t in (deadline, sync_due, parts_due) if t is not None)
            report: _Report | None = None
            with trio.move_on_at(wake):
                report = await conn.reports.receive()
            if report is None:
                now = trio.current_time()
                if sync_due is not None and now >= sync_due:
                    sync_due = None
                    await self._send_sync(conn)
                    deadline = trio.current_time() + self.config.sync_timeout
                elif parts_due is not None and now >= parts_due:
                    parts_due = None
                    self._go_live(conn, _assemble(parts))
                    deadline = float("inf")
                else:
                    return self._phase_timeout()
            elif isinstance(report, _Fault):
                return report
            elif isinstance(report, _Lockout):
                if self.state is not State.LIVE:
                    continue  # only a live socket records lockouts (the table says LIVE -> LIVE)
                self._fire(
                    "penalized",
                    f"{report.reason}: only cancellations and liquidations go out for "
                    f"{self.config.lockout_seconds:g} s",
                )
            elif isinstance(report, _Opened):
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
                pace = self._engine._scheduler.governor.delay("user/syncrequest", now)
                self._fire(
                    "authorized",
                    "authorize answered s=200: sending user/syncrequest"
                    + (f" in {pace:.1f} s (rate budget)" if pace > 0 else ""),
                )
                sync_due = now + pace
            elif self.state is not State.SYNCING:
                self._apply_late_part(conn, report.response)
            else:
                fault = self._sync_fault(report.response)
                if fault is not None:
                    return fault
                if self._sync.split_responses:
                    # No end marker is documented (§6, §13.7): the snapshot is complete once
                    # split_quiet seconds pass without another part.
                    parts.append(report.response.data)
                    parts_due = trio.current_time() + self._sync.split_quiet
                else:
                    self._go_live(conn, report.response.data)
                    deadline = float("inf")

    def _apply_late_part(self, conn: _Connection, response: Response) -> None:
        """A split-snapshot part that came after the quiet period: upsert what it holds (its
        entities may have looked deleted meanwhile; a late part never deletes anything)."""
        self._engine.counters["late_sync_parts"] += 1
        if response.status != 200 or not isinstance(response.data, dict):
            return
        for collection, values in response.data.items():
            if not isinstance(values, list):
                continue
            entity_type = singular(collection)
            for raw in values:
                if isinstance(raw, dict) and isinstance(raw.get("id"), int):
                    event = EntityEvent(entity_type, "Updated", (raw,))
                    for change in self._engine.store.apply_event(
                        event, conn.generation, owner=self.index
                    ):
                        self._engine._emit(replace(change, recovered=True))

    def _sync_fault(self, response: Response) -> _Fault | None:
        penalty = _penalty_of(response, self.config.lockout_seconds)
        if penalty is not None:
            fault, self._sync_ticket = penalty
            if isinstance(fault.error, RateLimited | CaptchaRequired):
                self._engine._scheduler.on_lockout(fault.kind, trio.current_time())
                self._engine._save_penalty()
            return fault
        if response.status != 200 or not isinstance(response.data, dict):
            text = response.data if isinstance(response.data, str) else "not an object"
            error = RequestError("user/syncrequest", response.status, text)
            return _Fault("lost", "sync_failed", error)
        return None

    def _go_live(self, conn: _Connection, snapshot: Mapping[str, Any]) -> None:
        """Apply the snapshot and the events that raced it, then fire ``synced``: one step."""
        self._apply_snapshot(conn, snapshot)
        self._live_since = trio.current_time()
        self._auth_rejections = 0
        self._fire("synced", f"snapshot applied: {len(self._engine.store)} entities")
        conn.live.set()
        scheduler = self._engine._scheduler
        if not self._engine._lockout_announced and scheduler.locked_out(trio.current_time()):
            self._engine._lockout_announced = True
            self._fire(
                "penalized",
                f"{scheduler.penalty.lockout_reason}: a lockout saved by an earlier run is "
                "still running; only cancellations go out",
            )

    async def _send_sync(self, conn: _Connection) -> None:
        conn.sync_id = next(conn.outbound.ids)
        self._engine._scheduler.governor.record("user/syncrequest", trio.current_time())
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
        self._engine._keeper.reject(token)
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
        body = self._sync.body(self._engine._user_id)
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
        for change in self._engine.store.apply_snapshot(
            snapshot, conn.generation, entity_types=self._engine._entity_types, owner=self.index
        ):
            self._engine._emit(change)
        for data in conn.early_props:
            self._apply_props(conn, data)
        conn.early_props.clear()

    async def _reader(self, conn: _Connection) -> None:
        try:
            while True:
                message = await conn.ws.get_message()
                conn.last_frame_at = trio.current_time()
                self._engine.counters["frames_received"] += 1
                if not isinstance(message, str):
                    self._engine._malformed(RemoteProtocolError("binary frame", message))
                    continue
                try:
                    events = parse_frame(message)
                except RemoteProtocolError as exc:
                    self._engine._malformed(exc)
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
            self._engine.counters["server_heartbeats"] += 1
        elif isinstance(event, Push):
            await self._on_push(conn, event)
        elif isinstance(event, Response):
            self._on_response(conn, event)
        elif isinstance(event, Open):
            if conn.opened:
                self._engine._malformed(RemoteProtocolError("second 'o' frame on one socket"))
            else:
                conn.opened = True
                conn.report(_Opened())
        elif isinstance(event, Close):
            conn.report(
                _Fault("lost", "closed_by_server", ClosedByServer(event.code, event.reason))
            )
        elif isinstance(event, Malformed):
            self._engine._malformed(event.error)

    def _on_response(self, conn: _Connection, response: Response) -> None:
        if response.request_id == conn.authorize_id:
            conn.report(_Answered("authorize", response))
        elif response.request_id == conn.sync_id:
            conn.report(_Answered("sync", response))
        elif not self._engine._pipeline.on_response(conn.outbound, response):
            logger.debug("reply to unknown request %d dropped", response.request_id)
            self._engine.counters["late_replies"] += 1

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
        elif push.kind in PUSH_KINDS:  # md, chart, clock: not this socket's business
            self._engine.counters[f"push.{push.kind}"] += 1
        else:
            self._engine.counters["unknown_events"] += 1
            logger.warning("unknown event kind %s ignored", excerpt(push.kind, 40))

    def _apply_props(self, conn: _Connection, data: Any) -> None:
        try:
            event = parse_entity_event(data)
        except RemoteProtocolError as exc:
            self._engine._malformed(exc)
            return
        self._engine.counters["props_events"] += 1
        if (
            self._engine._entity_types is not None
            and event.entity_type not in self._engine._entity_types
        ):
            self._engine.counters["props_filtered"] += 1
            return
        for change in self._engine.store.apply_event(event, conn.generation, owner=self.index):
            self._engine._emit(change)

    async def _heartbeat(self, conn: _Connection) -> None:
        interval = self.config.heartbeat_interval
        next_at = conn.started_at + interval
        try:
            while True:
                await trio.sleep_until(next_at)
                await conn.ws.send_message(HEARTBEAT_FRAME)
                self._engine.counters["heartbeats_sent"] += 1
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
            await self._engine._pipeline.run_sender(conn.outbound, conn.ws.send_message, conn.live)
