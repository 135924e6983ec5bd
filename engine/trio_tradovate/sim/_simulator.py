"""The trio layer of the simulator: sockets, the activity task, fault controls.

Each websocket runs a reader task (client text -> :meth:`SimSession.receive`) and a writer task
(drains the session's outbox, sleeps until its next timer). Both live in a nursery owned by
:meth:`Simulator.serve_stream`, which itself runs in the nursery of :func:`open_simulator` (for
the in-process connector) or of the loopback server.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Final

import httpx
import orjson
import trio
import trio.testing
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_server_stream

from ..config import Credentials, EngineConfig
from ._audit import MdRecord, RestRecord, SocketAudit
from ._config import SimConfig
from ._core import CloseSocket, SendFrame, SimCore, SimSession
from ._inject import MALFORMED_KINDS

__all__ = ["Simulator", "open_simulator", "socket_role"]

logger = logging.getLogger("trio_tradovate.sim")

_WS_RESOURCE = "/v1/websocket"  # docs/protocol.md §1
#: Loopback paths of the other sockets (one port serves all three; see ``socket_role``).
_ROLE_PATHS: Final = {"/md/v1/websocket": "md", "/replay/v1/websocket": "replay"}


def socket_role(path: str, host: str | None) -> str | None:
    """Which socket a websocket handshake asks for: ``"user"``, ``"md"``, ``"replay"``, or
    ``None`` (no such resource: the handshake is refused with 404).

    §1: the three sockets are ``/v1/websocket`` on three hosts (``demo``/``live``, ``md``,
    ``replay``, and the partner staging ``md-api``/``replay.staging`` names), so
    ``/v1/websocket`` is routed by host. The loopback server has a single host, so it also
    serves ``/md/v1/websocket`` and ``/replay/v1/websocket``.
    """
    resource = path.split("?", 1)[0]
    if resource in _ROLE_PATHS:
        return _ROLE_PATHS[resource]
    if resource != _WS_RESOURCE:
        return None
    name = (host or "").rsplit(":", 1)[0].lower() if host and not host.startswith("[") else ""
    if name.startswith(("md.", "md-api.")):
        return "md"
    if name.startswith("replay."):
        return "replay"
    return "user"


_IO_ERRORS = (ConnectionClosed, HandshakeError, trio.BrokenResourceError, trio.ClosedResourceError)


class _SimStream(trio.abc.Stream):
    """Wraps a server-side stream: replays already-read bytes first, and while the simulator
    is stalled *holds* every write, so the socket is silent at the TCP level (even WS pongs).
    Held bytes go out, in order, when the stall ends: that is what TCP does when a path
    recovers (retransmission), and it means a short stall delays data but never loses it. A
    client that gives up on the socket meanwhile simply never reads them. Under
    ``split_frames`` every write goes out in small pieces with a checkpoint between them, so
    websocket frames straddle reads."""

    def __init__(
        self,
        inner: trio.abc.Stream,
        core: SimCore,
        resumed: Callable[[], trio.Event],
        prefix: bytes = b"",
    ) -> None:
        self._inner = inner
        self._core = core
        self._resumed = resumed
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        while self._core.stalled:
            await self._resumed().wait()
        piece = self._core.split_max_bytes
        if piece is None or len(data) <= piece:
            await self._inner.send_all(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), piece):
            await self._inner.send_all(view[start : start + piece])
            await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return chunk
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(eq=False)
class _Conn:
    session: SimSession
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    wake: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


class SimConnector:
    """A :class:`trio_tradovate.transport.Connector` backed by in-memory streams.

    Host, port and TLS are ignored: every call is one fresh connection to the simulator.
    """

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    def __repr__(self) -> str:
        return "<SimConnector>"

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self._sim.refusing():
            raise ConnectionRefusedError(f"simulator refuses connections to {host}:{port}")
        client, server = trio.testing.memory_stream_pair()
        # The host picks the socket (md., replay. or the user socket), as on Tradovate (§1).
        self._sim.nursery.start_soon(partial(self._sim.serve_stream, server, host=host))
        return client


class Simulator:
    """A Tradovate-compatible demo server: REST auth, the user websocket, seeded activity."""

    def __init__(self, config: SimConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.nursery = nursery
        self._core = SimCore(config, trio.current_time())
        self._resumed = trio.Event()  # replaced each time a stall ends
        self._conns: list[_Conn] = []
        self._refuse_until: float | None = None
        self._md_wanted = trio.Event()  # set while some socket has a subscription
        #: One-shot ``drop_on_request`` trap: (lower-case endpoint, process the request first).
        self._drop_trap: tuple[str, bool] | None = None

    def __repr__(self) -> str:
        return f"<Simulator seed={self.config.seed} live={len(self._conns)}>"

    # -- queries --------------------------------------------------------------------------

    @property
    def sockets(self) -> Sequence[SocketAudit]:
        """One audit per websocket ever accepted, in order of opening."""
        return tuple(self._core.audits)

    @property
    def user_id(self) -> int:
        """The demo user's id (what ``{"users":[userId]}`` must name)."""
        return self._core.world.user_id

    @property
    def injected(self) -> Counter[str]:
        """How many faults of each kind were injected (``"drop"``, ``"malformed:oversized"``,
        ``"penalize_requests"``, ...); switching a fault off is not counted."""
        return self._core.injected

    @property
    def rest_log(self) -> Sequence[RestRecord]:
        """Every REST request answered, in order (no bodies, headers or tokens)."""
        return tuple(self._core.rest_log)

    @property
    def md_requests(self) -> Sequence[MdRecord]:
        """Every market-data request (subscribe, unsubscribe, ``getChart``, ``cancelChart``)
        on every socket, in arrival order; each record names its socket (``.socket``, the
        index into :attr:`sockets`). ``sockets[i].md_requests`` holds one socket's."""
        return tuple(self._core.md_log)

    def contract_id(self, symbol: str) -> int:
        """The id of the contract named ``symbol`` (case-insensitive); ``KeyError`` if none."""
        found = self._core.market.resolve(symbol)
        if found is None:
            raise KeyError(symbol)
        return found.contract_id

    def live_subscriptions(self) -> dict[int, frozenset[tuple[str, str]]]:
        """What each open market-data (or replay) socket is subscribed to right now:
        socket index -> ``{(kind, contract name)}``, kind ``"quote"``, ``"dom"``,
        ``"histogram"`` or ``"chart"``. After a reconnect this is what was restored."""
        return self._core.live_subscriptions()

    def wall_clock(self) -> datetime:
        """The simulated UTC time now (``expirationTime`` and timestamps are on this clock).

        Give it to ``EngineConfig(wall_clock=sim.wall_clock)`` so token expiry is judged on
        the simulator's clock, which runs in trio (possibly virtual) time.
        """
        return self._core.clock.at(trio.current_time())

    def engine_config(self, **overrides: Any) -> EngineConfig:
        """An :class:`~trio_tradovate.EngineConfig` that reaches this simulator in memory.

        REST goes through :meth:`rest_transport`, the websocket through :meth:`connector`,
        token expiry is judged on :meth:`wall_clock`, and the demo user's credentials are
        filled in; ``overrides`` replace any field (e.g. ``heartbeat_interval=1.5``).
        """
        settings: dict[str, Any] = {
            "credentials": Credentials(self.config.username, self.config.password),
            "connector": self.connector(),
            "http_transport": self.rest_transport(),
            "wall_clock": self.wall_clock,
            "seed": 1,
        }
        settings.update(overrides)
        return EngineConfig(**settings)

    def truth(self) -> dict[tuple[str, int], dict[str, Any]]:
        """The server's entities keyed ``(entityType, id)`` (deep copies)."""
        return self._core.world.truth()

    def issue_token(self) -> str:
        """Mint a valid access token without the REST login (uncounted session)."""
        return self._core.issue_token(trio.current_time())

    def connector(self) -> SimConnector:
        """A connector whose connections are served by this simulator in memory."""
        return SimConnector(self)

    def refusing(self) -> bool:
        """Whether new connections are currently refused."""
        until = self._refuse_until
        return until is not None and trio.current_time() < until

    # -- fault controls -------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far is expired (authorize and REST answer 401)."""
        self._core.injected["expire_tokens"] += 1
        self._core.auth.expire_all()

    async def drop_connections(self, where: Callable[[SocketAudit], bool] | None = None) -> None:
        """Abrupt TCP drop: close server streams, no ``c`` frame, no WS close.

        ``where`` picks the sockets to drop by their audit (e.g. one shard's); default all.
        """
        self._core.injected["drop"] += 1
        conns = [c for c in self._conns if where is None or where(c.session.audit)]
        for conn in conns:
            conn.session.finished("dropped", trio.current_time())
            conn.cancel_scope.cancel()
        for conn in conns:
            await conn.done.wait()

    def stall(self, on: bool = True) -> None:
        """Half-open silence: while on, no socket writes anything (it still reads); what would
        have been written is held and delivered, in order, when the stall ends."""
        if on:
            self._core.injected["stall"] += 1
        self._core.stalled = on
        if not on:
            self._resumed.set()
            self._resumed = trio.Event()
        self._kick()

    async def close_connections(self, code: int = 3000, reason: str = "Go away!") -> None:
        """Send ``c[code,"reason"]`` then WS close 1000 on every live socket; wait for them."""
        self._core.injected["close"] += 1
        self._core.close_all("close frame", trio.current_time(), code=code, reason=reason)
        await self._kick_and_wait()

    async def shutdown(self, reason_code: str = "Maintenance", reason: str | None = None) -> None:
        """§7: ``shutdown`` event, then close; waits until the sockets are gone."""
        self._core.injected["shutdown"] += 1
        self._core.shutdown_all(trio.current_time(), reason_code, reason)
        await self._kick_and_wait()

    def refuse_connections(self, until: float | None) -> None:
        """Refuse new connections until trio time ``until`` (``None`` stops refusing)."""
        if until is not None:
            self._core.injected["refuse"] += 1
        self._refuse_until = until

    def ignore_authorize(self, on: bool = True) -> None:
        """While on, ``authorize`` requests are never answered."""
        if on:
            self._core.injected["ignore_authorize"] += 1
        self._core.ignore_authorize = on

    def inject_frame(self, text: str) -> None:
        """Send ``text`` as is, as one websocket text message, to every live socket."""
        self._core.injected["frame"] += 1
        self._core.inject_frame(text, trio.current_time())
        self._kick()

    def inject_malformed(self, kind: str) -> None:
        """Send one malformed frame to every live socket; ``kind`` is one of
        :data:`MALFORMED_KINDS`. Only ``bad_batch`` changes :meth:`truth` (its two valid
        events are real mutations); the others never do."""
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
        self._core.injected[f"malformed:{kind}"] += 1
        self._core.inject_malformed(kind, trio.current_time())
        self._kick()

    def duplicate_props(self, on: bool = True) -> None:
        """While on, every props frame is sent twice in a row (truth is unaffected)."""
        if on:
            self._core.injected["duplicate_props"] += 1
        self._core.duplicate_props = on

    def replay_props(self, count: int) -> None:
        """Every socket re-sends the last ``count`` props messages it was sent, in order, in
        one frame; an idempotent (upserting) client stays equal to :meth:`truth`."""
        self._core.injected["replay_props"] += 1
        self._core.replay_props(count, trio.current_time())
        self._kick()

    # -- market-data faults ------------------------------------------------------------------

    def freeze_subscription(
        self, symbol: str | int, kind: str = "quote", *, until_resubscribed: bool = True
    ) -> None:
        """Stop the updates of one subscription (``kind`` ``"quote"``, ``"dom"``,
        ``"histogram"`` or ``"chart"`` of ``symbol``) on every socket, while the others keep
        streaming and the socket stays up. With ``until_resubscribed`` the next subscribe to
        it (any socket) ends the freeze, as a real re-subscribe would; otherwise only
        :meth:`unfreeze_subscriptions` does."""
        if kind not in ("quote", "dom", "histogram", "chart"):
            raise ValueError("kind must be quote, dom, histogram or chart")
        found = self._core.market.resolve(symbol)
        if found is None:
            raise ValueError(f"unknown symbol {symbol!r}")
        self._core.injected["freeze_subscription"] += 1
        self._core.feed_faults.frozen[(kind, found.contract_id)] = until_resubscribed

    def unfreeze_subscriptions(self) -> None:
        """End every :meth:`freeze_subscription`."""
        self._core.feed_faults.frozen.clear()

    def conflate_market(self, every: int | None) -> None:
        """Throttled, conflated market data: quote, DOM and histogram updates go out only on
        every ``every``-th market step, the ones in between discarded (what Tradovate does for
        slow clients); ``None`` sends every step again. Values sent are always current."""
        if every is not None:
            if every < 1:
                raise ValueError("every must be >= 1")
            self._core.injected["conflate_market"] += 1
        self._core.feed_faults.conflate_every = every

    def chart_gap(self, count: int) -> None:
        """Every open chart discards its next ``count`` realtime steps, as the server does with
        out-of-date data: a tick chart skips ``count`` tick ids; a bar chart skips the bars
        that fall wholly in the gap (``count`` >= the bar length in steps), which shows as a
        jump in bar timestamps. Charts opened later are not affected."""
        if count < 1:
            raise ValueError("count must be >= 1")
        self._core.injected["chart_gap"] += 1
        for session in self._core.sessions:
            if session.feed is not None:
                session.feed.add_gap(count)

    def silence_market(self, on: bool = True) -> None:
        """While on, market-data and replay sockets send nothing at all, neither data nor
        ``h``, though they stay open, keep reading and still answer requests: a feed that
        froze while the socket looks connected. User sockets are not affected."""
        if on:
            self._core.injected["silence_market"] += 1
        self._core.feed_faults.silent = on
        self._kick()

    def throttle_replay(self) -> None:
        """Every initialized replay clock stops: speed 0, the "throttled" state, announced
        in a ``clock`` event with ``"s":0``; ``replay/changeSpeed`` restarts it."""
        self._core.injected["throttle_replay"] += 1
        for session in self._core.sessions:
            session.throttle_replay(trio.current_time())
        self._kick()

    def quiet_market(self, on: bool = True) -> None:
        """While on, the market is quiet: no updates, so an idle md socket sends ``h`` (§2)."""
        if on:
            self._core.injected["quiet_market"] += 1
        self._core.feed_faults.quiet = on

    def split_frames(self, max_bytes: int | None) -> None:
        """While set, every server write goes out in pieces of at most ``max_bytes`` bytes
        with a checkpoint between pieces; ``None`` restores whole writes."""
        if max_bytes is not None:
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
            self._core.injected["split_frames"] += 1
        self._core.split_max_bytes = max_bytes

    def fail_renewals(self, on: bool = True) -> None:
        """While on, ``GET /auth/renewaccesstoken`` answers 401."""
        if on:
            self._core.injected["fail_renewals"] += 1
        self._core.fail_renewals = on

    def penalize_auth(self, p_time: float, *, captcha: bool = False, times: int = 1) -> None:
        """The next ``times`` ``POST /auth/accesstokenrequest`` get HTTP 200
        ``{"p-ticket", "p-time"[, "p-captcha"]}`` instead of a token (§8). A resend with the
        right ``p-ticket`` in its body after ``p_time`` seconds is handled normally; an early
        or wrong one, or any captcha ticket, earns another penalty. See :attr:`rest_log`."""
        self._core.injected["penalize_auth"] += 1
        self._core.gate.add_penalty(
            endpoint="auth/accesstokenrequest",
            nth=None,
            times=times,
            p_time=p_time,
            captcha=captcha,
            channels=frozenset({"rest"}),
        )

    def penalize_requests(
        self,
        *,
        endpoint: str | None = None,
        nth: int | None = None,
        p_time: float = 5.0,
        captcha: bool = False,
        times: int = 1,
    ) -> None:
        """Answer matching websocket requests with ``{"i", "s":200, "d":{"p-ticket",
        "p-time"[, "p-captcha"]}}`` and do not execute them (§8).

        ``endpoint`` (case-insensitive) limits the script to one endpoint; ``nth`` picks the
        Nth matching request from now (default: the next); ``times`` consecutive matching
        requests are hit from there. A resend with the ticket after ``p_time`` (new id, §3)
        runs normally. Each socket's audit records ``penalties`` and ``retries``.
        """
        self._core.injected["penalize_requests"] += 1
        self._core.gate.add_penalty(
            endpoint=endpoint,
            nth=nth,
            times=times,
            p_time=p_time,
            captcha=captcha,
            channels=frozenset({"ws"}),
        )

    def rate_limit_429(self, *, endpoint: str | None = None, times: int = 1) -> None:
        """Refuse the next ``times`` matching requests: ``{"s":429,"i":id}`` (no ``d``) on the
        websocket, HTTP 429 with an empty body on REST (§8, P-RL-old)."""
        self._core.injected["rate_limit_429"] += 1
        self._core.gate.add_429(endpoint=endpoint, times=times)

    def drop_on_request(self, endpoint: str, *, processed: bool) -> None:
        """Drop the socket (as :meth:`drop_connections`) when the next ``endpoint`` request
        arrives: with ``processed`` the server acts on it first and its answer is lost with
        the connection; without, it never reads it. Either way the client cannot tell which
        happened, which is what an order placed into a dying connection looks like."""
        self._core.injected["drop_on_request"] += 1
        self._drop_trap = (endpoint.strip().lower(), processed)

    def _trapped(self, conn: _Conn, message: str) -> bool:
        """Spring the ``drop_on_request`` trap if ``message`` is its request."""
        trap = self._drop_trap
        if trap is None or message.split("\n", 1)[0].strip().lower() != trap[0]:
            return False
        self._drop_trap = None
        now = trio.current_time()
        if trap[1]:
            conn.session.receive(message, now)
        conn.session.finished("dropped", now)
        conn.cancel_scope.cancel()
        self._kick()  # the other sockets send what the request changed
        return True

    def market_price(self, symbol: str) -> float:
        """The simulated market price of a contract (by name); orders whose price it has
        reached fill when placed or modified."""
        contract = self._core.world.find_contract(symbol)
        if contract is None:
            raise KeyError(symbol)
        return self._core.world.price(int(contract["id"]))

    def fill_order(self, order_id: int) -> None:
        """Fill a working order now, at the market price (the market traded through it):
        its ``props`` go out as for any fill, and an OSO entry's brackets start working."""
        now = trio.current_time()
        self._core.broadcast(self._core.world.fill_order(now, order_id), now)
        self._kick()

    def pause_activity(self) -> None:
        """Stop generating account events (mutations through requests still happen)."""
        self._core.activity_paused = True

    def resume_activity(self) -> None:
        """Resume the activity generator at its next tick."""
        self._core.activity_paused = False

    def _kick(self) -> None:
        for conn in self._conns:
            conn.wake.set()
        if not self._md_wanted.is_set() and self._core.market_active():
            self._md_wanted.set()

    async def _kick_and_wait(self) -> None:
        conns = list(self._conns)
        self._kick()
        for conn in conns:
            await conn.done.wait()

    # -- REST -----------------------------------------------------------------------------

    def rest_transport(self) -> httpx.AsyncBaseTransport:
        """An in-process transport for ``httpx.AsyncClient(transport=...)``."""
        return httpx.MockTransport(self.handle_http)

    async def handle_http(self, request: httpx.Request) -> httpx.Response:
        """Answer one REST request (used by both the mock transport and the TCP server)."""
        await trio.lowlevel.checkpoint()
        body = await request.aread()
        status, data = self._core.handle_rest(
            request.method,
            request.url.path,
            request.url.query.decode(),
            request.headers.get("authorization"),
            body,
            trio.current_time(),
        )
        self._kick()
        logger.debug("REST %s %s -> %d", request.method, request.url.path, status)
        if isinstance(data, str) and status != 200:
            return httpx.Response(status, text=data)
        return httpx.Response(
            status, content=orjson.dumps(data), headers={"content-type": "application/json"}
        )

    # -- websocket ------------------------------------------------------------------------

    async def serve_stream(
        self, stream: trio.abc.Stream, prefix: bytes = b"", host: str | None = None
    ) -> None:
        """Serve one websocket over ``stream`` (handshake included); never raises.

        ``prefix`` holds bytes a caller already read off the stream (the HTTP request head
        when REST and websocket share one port); ``host`` is the host the client asked for,
        which picks the socket with the path (:func:`socket_role`). The stream is closed on
        return.
        """
        try:
            await self._serve(_SimStream(stream, self._core, lambda: self._resumed, prefix), host)
        except _IO_ERRORS as exc:
            logger.debug("websocket ended: %r", exc)
        except ExceptionGroup as group:
            # A client that goes away mid-handshake surfaces here wrapped by the nursery.
            _, rest = group.split(_IO_ERRORS)
            if rest is not None:
                logger.exception("simulator websocket handler failed", exc_info=rest)
            else:
                logger.debug("websocket ended: %r", group)
        except Exception:
            # An exception escaping would crash the owning nursery (docs/protocol.md §15).
            logger.exception("simulator websocket handler failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream, host: str | None) -> None:
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(
                nursery, stream, max_message_size=self.config.max_message_size
            )
            role = socket_role(request.path, host)
            if role is None:
                logger.info("rejecting websocket resource %r", request.path)
                await request.reject(404, body=b"Not found")
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            session = self._core.open_session(trio.current_time(), role)
            conn = _Conn(session)
            self._conns.append(conn)
            try:
                with conn.cancel_scope:
                    async with trio.open_nursery() as tasks:
                        tasks.start_soon(self._reader, conn, ws, tasks.cancel_scope)
                        tasks.start_soon(self._writer, conn, ws, tasks.cancel_scope)
            finally:
                session.finished("simulator stopped", trio.current_time())
                self._conns.remove(conn)
                conn.done.set()
                nursery.cancel_scope.cancel()

    async def _reader(self, conn: _Conn, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        session = conn.session
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    session.audit.violations.append("binary frame")
                    message = message.decode("utf-8", errors="replace")
                if self._trapped(conn, message):
                    return
                session.receive(message, trio.current_time())
                self._kick()
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else 1006
            why = "client dropped" if code == 1006 else "client closed"
            session.finished(why, trio.current_time())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            session.finished("client dropped", trio.current_time())
        scope.cancel()

    async def _writer(self, conn: _Conn, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        session = conn.session
        audit = session.audit
        try:
            while True:
                while session.outbox:
                    action = session.outbox.popleft()
                    if isinstance(action, SendFrame):
                        # During a stall this blocks in _SimStream until the stall ends.
                        await ws.send_message(action.text)
                        audit.frames_sent[action.kind] += 1
                        continue
                    await self._close(ws, action, audit)
                    session.finished("close frame", trio.current_time())
                    scope.cancel()
                    return
                with trio.move_on_at(session.next_deadline()):
                    await conn.wake.wait()
                conn.wake = trio.Event()
                session.tick(trio.current_time())
        except _IO_ERRORS:
            session.finished("client dropped", trio.current_time())
            scope.cancel()

    async def _close(
        self, ws: WebSocketConnection, action: CloseSocket, audit: SocketAudit
    ) -> None:
        with trio.move_on_after(self.config.close_timeout):
            await ws.send_message("c" + orjson.dumps([action.code, action.reason]).decode())
            audit.frames_sent["c"] += 1
            await ws.aclose(1000)

    async def _activity(self) -> None:
        interval = self.config.activity_interval
        if interval is None:
            return
        next_at = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_at)
            next_at += interval
            self._core.activity(trio.current_time())
            self._kick()

    async def _market(self) -> None:
        """Step the market on its grid while any socket has a subscription."""
        core = self._core
        interval = self.config.md_step_interval
        while True:
            if not core.market_active():
                self._md_wanted = trio.Event()
                await self._md_wanted.wait()
            now = trio.current_time()
            wall = core.wall(now)
            # Wake just after the next grid step (wall time and trio time run together).
            step_wall = core.market.step_time(core.market.step_at(wall) + 1)
            await trio.sleep_until(now + (step_wall - wall) + interval * 1e-6)
            core.market_tick(trio.current_time())
            self._kick()


@asynccontextmanager
async def open_simulator(config: SimConfig | None = None) -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the block; all its tasks are cancelled on exit."""
    async with trio.open_nursery() as nursery:
        sim = Simulator(config or SimConfig(), nursery)
        nursery.start_soon(sim._activity)
        nursery.start_soon(sim._market)
        try:
            yield sim
        finally:
            nursery.cancel_scope.cancel()
