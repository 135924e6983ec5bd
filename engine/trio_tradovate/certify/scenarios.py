"""The Stage 2 scenarios: each provokes one test step and judges its criteria.

Each :class:`Scenario` states its steps and criteria as data (``test-plan.md`` is generated
from them, so the plan and the run cannot drift apart) and has one ``run`` function that
provokes the step against the target and calls :meth:`Context.judge` with the figures it
measured. A criterion the function never judged (because a step failed or hung) is a FAIL
with the reason: a scenario cannot pass by saying nothing.

Virtual time: on the simulator every scenario but ``heartbeats_load`` runs under a
``MockClock`` on in-memory streams, so a 61-second stable connection or an hour's lockout
costs milliseconds and the figures are exact protocol time. ``heartbeats_load`` runs on the
real clock, because only real time shows whether heavy traffic delays the heartbeat timer or
message processing.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from ..config import SyncOptions
from ..engine import Engine
from ..errors import (
    AuthenticationError,
    CaptchaRequired,
    EngineStopped,
    RateLimited,
    RequestError,
)
from ..sim import MALFORMED_KINDS, SimConfig
from ..statechart import State
from .context import Context, wait_state
from .measure import auth_times, connect_times, heartbeat_gaps, percentile, sync_counts
from .model import (
    HEARTBEAT_SLACK_REAL,
    STAGE2_AUTH,
    STAGE2_CONNECT,
    STAGE2_HEARTBEAT,
    STAGE2_PROCESSING,
    STAGE2_RECONNECT,
    CriterionSpec,
    Figure,
    Section,
)

#: Generous bound on reaching a state, for a step that should take a few seconds.
STEP = 120.0


@dataclass(frozen=True)
class Scenario:
    """One scenario of the test plan."""

    id: str
    title: str
    section: Section
    steps: tuple[str, ...]
    measures: str
    criteria: tuple[CriterionSpec, ...]
    run: Callable[[Context], Awaitable[None]]
    #: Runs against a real server (through the proxy); otherwise "simulator only".
    remote: bool = True
    #: ``"virtual"`` (MockClock, in-memory streams) or ``"real"`` on the simulator.
    clock: str = "virtual"
    sim_config: Callable[[int], SimConfig] | None = None
    #: Wall-clock bound of the whole scenario, seconds (on its own clock).
    limit: float = 7200.0


def _c(
    id: str, section: Section, text: str, passes_when: str, remote: bool = True
) -> CriterionSpec:
    return CriterionSpec(id, section, text, passes_when, remote)


def _engine_heartbeat(ctx: Context, engine: Engine) -> float:
    slack = 0.0 if ctx.target.is_sim and _virtual(ctx) else HEARTBEAT_SLACK_REAL
    return engine.config.heartbeat_interval + slack


def _virtual(ctx: Context) -> bool:
    return SCENARIOS_BY_ID[ctx.scenario].clock == "virtual"


def _truth_matches(ctx: Context, engine: Engine) -> bool:
    assert ctx.sim is not None
    return engine.store.as_dict() == ctx.sim.truth()


async def _settle(ctx: Context) -> None:
    if ctx.sim is not None:
        ctx.sim.pause_activity()
    await trio.sleep(1.0)


def _auth_answers(ctx: Context, connection: int) -> list[str]:
    """Inbound frames that answer the ``authorize`` of ``connection`` (request id 0)."""
    return [
        e.text
        for e in ctx.wire.entries
        if e.connection == connection and e.direction == "in" and '"i":0' in e.text
    ]


class Consumer:
    """Rebuilds state from ``engine.events()`` alone and notes every change that should
    not have come (a duplicate); with ``arrivals``, measures message-processing latency."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.state: dict[tuple[str, int], Any] = {}
        self.problems: list[str] = []
        self.seen = 0

    async def run(self, engine: Engine) -> None:
        arrivals = self.ctx.wire.arrivals
        changes = engine.events()
        while True:
            batch = await changes.receive_batch()
            now = time.perf_counter()
            for change in batch:
                key = (change.entity_type, change.entity_id)
                if arrivals is not None and not change.recovered:
                    arrived = arrivals.pop(key, None)
                    if arrived is not None:
                        self.ctx.latencies.append(now - arrived)
                before = self.state.get(key)
                if change.event_type == "Deleted":
                    if before is None:
                        self.problems.append(f"Deleted of absent {key}")
                    self.state.pop(key, None)
                else:
                    if change.event_type == "Created" and before is not None:
                        self.problems.append(f"Created of present {key}")
                    if change.event_type == "Updated" and before is None:
                        self.problems.append(f"Updated of absent {key}")
                    if before is not None and dict(before) == dict(change.entity):
                        self.problems.append(f"change that changes nothing: {key}")
                    self.state[key] = dict(change.entity)
                self.seen += 1


# ------------------------------------------------------------------------------- login

LOGIN = (
    _c(
        "login.connect",
        Section.LOGIN,
        "Websocket connection establishes successfully",
        "the server's 'o' arrives; connection time <= 5 s (Stage 2) and <= connect_timeout",
    ),
    _c(
        "login.valid",
        Section.LOGIN,
        "Authentication succeeds with valid token",
        "authorize with a REST-issued token is answered s=200 within 2 s (Stage 2)",
    ),
    _c(
        "login.stable",
        Section.LOGIN,
        "Connection remains stable after authentication",
        "live for the whole window (60 s virtual, --duration on a server): one connection, "
        "no transition out of live",
    ),
    _c(
        "login.logoff",
        Section.LOGIN,
        "Log-off: the connection is closed cleanly when the application stops",
        "leaving open_engine sends a websocket close 1000 and the server's close reply "
        "arrives within 1 s (the engine's close bound); the last record is close to stopped",
    ),
)


#: Seconds past the window at which the login scenario leaves the engine.
LEAVE_OFFSET = 0.0


async def run_login(ctx: Context) -> None:
    async with ctx.engine() as engine:
        live = await wait_state(engine, State.LIVE, STEP)
        window = ctx.window(60.0)
        # leave at a heartbeat instant (in virtual time 60 s is exactly one): the hardest
        # moment for the close handshake, a write in flight (tests/certify/test_logoff.py)
        await trio.sleep(window + LEAVE_OFFSET)
        records = [r for r in engine.transitions if r.region == "connection"]
        left = [r for r in records if r.seq > live.seq]
        connects = connect_times(ctx.wire)
        auths = auth_times(records)
        config = engine.config
        ctx.judge(
            "login.connect",
            [
                Figure(
                    "connection time",
                    connects[0] if connects else math.inf,
                    stage2=STAGE2_CONNECT,
                    engine=config.connect_timeout,
                )
            ],
            [("the server's 'o' arrived", ctx.wire.opened(0) is not None)],
        )
        ctx.judge(
            "login.valid",
            [Figure("authorization time", auths[0] if auths else math.inf, stage2=STAGE2_AUTH)],
            [("authorize answered s=200", any('"s":200' in t for t in _auth_answers(ctx, 0)))],
        )
        ctx.judge(
            "login.stable",
            [
                Figure(
                    "seconds live without a reconnect",
                    trio.current_time() - live.time,
                    stage2=None,
                    engine=window,
                    lower=True,
                )
            ],
            [
                ("still live", engine.state is State.LIVE),
                ("one connection", engine.generation == 1),
                ("no transition after live", not left),
            ],
        )
    closes = [e for e in ctx.wire.entries if e.connection == 0 and e.kind == "close"]
    sent = [e for e in closes if e.direction == "out"]
    answered = [e for e in closes if e.direction == "in"]
    last = engine.transitions[-1]
    ctx.judge(
        "login.logoff",
        [
            Figure(
                "close handshake",
                answered[0].time - sent[0].time if sent and answered else math.inf,
                engine=1.0,
            )
        ],
        [
            ("close 1000 sent", bool(sent) and sent[0].text.startswith("1000")),
            ("server answered the close", bool(answered)),
            (
                "last record: close to stopped",
                (last.trigger, last.dest) == ("close", State.STOPPED),
            ),
        ],
    )


LOGIN_INVALID = (
    _c(
        "login.invalid",
        Section.LOGIN,
        "Authentication fails with invalid token",
        "authorize with a made-up token is answered s=401; the engine stops with "
        "AuthenticationError after one authorize (it cannot get another token), no sync sent",
    ),
)


async def run_login_invalid(ctx: Context) -> None:
    token = f"certify-invalid-token-{ctx.seed}"
    user_id = ctx.sim.user_id if ctx.sim is not None else 1
    config = ctx.config(credentials=None, access_token=token, user_id=user_id)
    async with ctx.engine(config) as engine:
        with suppress(EngineStopped):
            await wait_state(engine, State.LIVE, STEP)
        records = [r for r in engine.transitions if r.region == "connection"]
    opened = [r.time for r in records if r.trigger == "opened"]
    rejected = [r.time for r in records if r.trigger == "auth_rejected"]
    sent = [endpoint for _, endpoint, _ in ctx.wire.out_requests()]
    ctx.judge(
        "login.invalid",
        [
            Figure(
                "time to the rejection",
                rejected[0] - opened[0] if rejected and opened else math.inf,
                stage2=STAGE2_AUTH,
            )
        ],
        [
            ("authorize answered s=401", any('"s":401' in t for t in _auth_answers(ctx, 0))),
            ("engine stopped", engine.state is State.STOPPED),
            (
                "stop error is AuthenticationError",
                isinstance(engine.stop_error, AuthenticationError),
            ),
            ("exactly one authorize sent", sent.count("authorize") == 1),
            ("no syncrequest sent", "user/syncrequest" not in sent),
        ],
        detail=f"stop reason: {engine.stop_reason}",
    )


LOGIN_EXPIRED = (
    _c(
        "login.expired",
        Section.LOGIN,
        "Authentication fails with an expired token",
        "authorize with a token the server has expired is answered s=401 and the engine "
        "stops (a caller-given token cannot be renewed)",
        remote=False,
    ),
    _c(
        "errors.expired_during",
        Section.ERRORS,
        "Authentication errors: expired tokens during connection",
        "after the server expires every token the live socket stays up (Tradovate keeps it); "
        "after a drop the engine gets a new token, re-authorizes (s=200) and is live again",
        remote=False,
    ),
)


async def run_login_expired(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    token = sim.issue_token()
    ctx.redactor.add(token)
    sim.expire_tokens()
    config = ctx.config(credentials=None, access_token=token, user_id=sim.user_id)
    async with ctx.engine(config) as engine:
        with suppress(EngineStopped):
            await wait_state(engine, State.LIVE, STEP)
    ctx.judge(
        "login.expired",
        checks=[
            ("authorize answered s=401", any('"s":401' in t for t in _auth_answers(ctx, 0))),
            ("engine stopped", engine.state is State.STOPPED),
            (
                "stop error is AuthenticationError",
                isinstance(engine.stop_error, AuthenticationError),
            ),
        ],
        detail=f"stop reason: {engine.stop_reason}",
    )
    first = ctx.wire.connections
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        sim.expire_tokens()
        await trio.sleep(30.0)
        stayed = engine.state is State.LIVE and engine.generation == 1
        await ctx.faults.drop()
        await wait_state(engine, State.BACKOFF, STEP)
        back = await wait_state(engine, State.LIVE, STEP)
        last = ctx.wire.connections - 1
        ctx.judge(
            "errors.expired_during",
            checks=[
                ("live socket kept for 30 s after the expiry", stayed),
                ("live again after the drop", back.dest is State.LIVE),
                (
                    "new connection authorized s=200",
                    last > first and any('"s":200' in t for t in _auth_answers(ctx, last)),
                ),
                (
                    "a new token was fetched over REST after the expiry",
                    sum(1 for e in ctx.rest if e.path.endswith("accesstokenrequest")) >= 2
                    or any(
                        e.path.endswith("renewaccesstoken") and e.status == 200 for e in ctx.rest
                    ),
                ),
            ],
        )


AUTH_TIMEOUT = (
    _c(
        "errors.auth_timeout",
        Section.ERRORS,
        "Authentication errors: authentication timeout",
        "an authorize the server never answers ends the attempt after auth_timeout "
        "(reason auth_timeout), then the engine backs off and is live once the server answers",
        remote=False,
    ),
)


async def run_auth_timeout(ctx: Context) -> None:
    assert ctx.sim is not None
    ctx.sim.ignore_authorize()
    async with ctx.engine() as engine:
        sent = await wait_state(engine, State.AUTHENTICATING, STEP)
        ended = await wait_state(engine, State.BACKOFF, STEP)
        ctx.sim.ignore_authorize(False)
        back = await wait_state(engine, State.LIVE, STEP)
        ctx.judge(
            "errors.auth_timeout",
            [
                Figure(
                    "time to give up on authorize",
                    ended.time - sent.time,
                    engine=engine.config.auth_timeout + 0.5,
                )
            ],
            [
                ("reason is auth_timeout", ended.reason.startswith("auth_timeout")),
                ("live after the server answers", back.dest is State.LIVE),
            ],
            detail=ended.reason,
        )


# -------------------------------------------------------------------------- heartbeats

HEARTBEATS = (
    _c(
        "heartbeats.interval",
        Section.HEARTBEATS,
        "Heartbeats are sent at regular intervals",
        "every gap between the engine's [] frames, and the first after 'o', is <= 30 s "
        "(Stage 2) and <= heartbeat_interval; at least window/interval - 1 of them",
    ),
    _c(
        "heartbeats.responses",
        Section.HEARTBEATS,
        "Verify heartbeat responses are received",
        "the server's h frames arrive while the socket is idle (at least one; a real server "
        "that streams data all the window sends none: INCONCLUSIVE, never a pass)",
    ),
)


async def run_heartbeats(ctx: Context) -> None:
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        if ctx.sim is not None:
            ctx.sim.pause_activity()  # the server sends h only while idle
        window = ctx.window(120.0)
        await trio.sleep(window)
        largest, first, count = heartbeat_gaps(ctx.wire, 0)
        limit = _engine_heartbeat(ctx, engine)
        expected = max(1, int(window / engine.config.heartbeat_interval) - 1)
        ctx.judge(
            "heartbeats.interval",
            [
                Figure(
                    "largest gap between heartbeats", largest, stage2=STAGE2_HEARTBEAT, engine=limit
                ),
                Figure("first heartbeat after 'o'", first, stage2=STAGE2_HEARTBEAT, engine=limit),
                Figure("heartbeats sent", count, unit="", engine=expected, lower=True),
            ],
        )
        received = sum(
            1
            for e in ctx.wire.entries
            if e.connection == 0 and e.direction == "in" and e.text == "h"
        )
        figure = Figure("server h frames received", received, unit="", engine=1, lower=True)
        if received == 0 and not ctx.target.is_sim:
            # Tradovate sends h only while it has nothing else to send (a busy account)
            ctx.inconclusive(
                "heartbeats.responses",
                "no h arrived: the server sends h only while idle; rerun on a quiet account",
                [figure],
            )
        else:
            ctx.judge("heartbeats.responses", [figure])


HEARTBEATS_LOAD = (
    _c(
        "heartbeats.load",
        Section.HEARTBEATS,
        "Heartbeat mechanism works during high message volume",
        "on the real clock, while the server pushes >= 1,000 props messages a second for the "
        "window, every heartbeat gap is <= 30 s and <= heartbeat_interval + 0.25 s",
        remote=False,
    ),
    _c(
        "events.processing",
        Section.EVENTS,
        "Message processing performance meets requirements",
        "from the read that brings a props message to the consumer holding its change: "
        "p99 and p99.9 <= 100 ms (Stage 2), measured on the real clock under that load; the "
        "max is reported beside them",
        remote=False,
    ),
)

LOAD_SECONDS = 8.0
LOAD_FRAME = 20  # messages per frame
LOAD_EVERY = 0.01  # a frame every 10 ms: 2,000 messages a second
LOAD_ORDERS = 2_000


async def run_heartbeats_load(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    ctx.wire.arrivals = {}
    consumer = Consumer(ctx)
    async with ctx.engine() as engine, trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run, engine)
        await wait_state(engine, State.LIVE, 30.0)
        accounts = [key[1] for key in sim.truth() if key[0] == "account"]
        sent = 0
        started = trio.current_time()
        tick = 0
        # LOAD_ORDERS working orders updated in turn, as a busy account's orders are: each
        # message changes its order (a new price), so each is one change for the
        # application, and an order comes round again only after the last change was taken
        while trio.current_time() - started < LOAD_SECONDS:
            batch = []
            for _ in range(LOAD_FRAME):
                order = 10_000_000 + sent % LOAD_ORDERS
                batch.append(
                    {
                        "e": "props",
                        "d": {
                            "entityType": "order",
                            "eventType": "Updated",
                            "entity": {
                                "id": order,
                                "accountId": accounts[0],
                                "ordStatus": "Working",
                                "action": "Buy",
                                "price": 5000 + sent * 0.25,
                            },
                        },
                    }
                )
                sent += 1
            sim.inject_frame("a" + orjson.dumps(batch).decode())
            tick += 1  # absolute deadlines: the rate holds even when a frame takes a while
            await trio.sleep_until(started + tick * LOAD_EVERY)
        elapsed = trio.current_time() - started
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
        largest, _, count = heartbeat_gaps(ctx.wire, 0)
        rate = sent / elapsed if elapsed > 0 else 0.0
        ctx.judge(
            "heartbeats.load",
            [
                Figure(
                    "largest gap between heartbeats",
                    largest,
                    stage2=STAGE2_HEARTBEAT,
                    engine=_engine_heartbeat(ctx, engine),
                ),
                Figure(
                    "props messages pushed a second",
                    round(rate),
                    unit="msg/s",
                    engine=1000,
                    lower=True,
                ),
                Figure("heartbeats sent", count, unit="", engine=2, lower=True),
            ],
            [("live throughout", engine.generation == 1 and engine.state is State.LIVE)],
        )
        lat = ctx.latencies
        ctx.judge(
            "events.processing",
            [
                Figure("messages measured", len(lat), unit="", engine=sent // 2, lower=True),
                Figure("p50 processing time", percentile(lat, 0.5) * 1000, unit="ms"),
                Figure(
                    "p99 processing time",
                    percentile(lat, 0.99) * 1000,
                    unit="ms",
                    stage2=STAGE2_PROCESSING * 1000,
                ),
                Figure(
                    "p99.9 processing time",
                    percentile(lat, 0.999) * 1000,
                    unit="ms",
                    stage2=STAGE2_PROCESSING * 1000,
                ),
                # reported, not binding: one pause of the host (a collection, another
                # process on a shared machine) would otherwise decide alone
                Figure("max processing time", max(lat, default=math.inf) * 1000, unit="ms"),
            ],
        )


HEARTBEAT_TIMEOUT = (
    _c(
        "heartbeats.timeout",
        Section.HEARTBEATS,
        "Test heartbeat timeout scenarios",
        "when the network goes silent (half-open: nothing from the server), the engine gives "
        "the connection up as stalled within server_silence_timeout + 0.5 s",
    ),
    _c(
        "heartbeats.recovery",
        Section.HEARTBEATS,
        "Verify connection recovery after missed heartbeats",
        "a reconnection attempt within 10 s of giving up (Stage 2), a new socket authorized "
        "and synced once, live again; on the simulator the store equals the server's state",
    ),
)


async def run_heartbeat_timeout(ctx: Context) -> None:
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(ctx.window(61.0) if ctx.target.is_sim else min(2.0, ctx.target.duration))
        silent_at = trio.current_time()
        ctx.faults.silence(True)
        lost = await wait_state(engine, State.BACKOFF, STEP)
        ctx.faults.silence(False)
        retry = await wait_state(engine, State.CONNECTING, STEP)
        back = await wait_state(engine, State.LIVE, STEP)
        await _settle(ctx)
        syncs = sync_counts(ctx.wire)
        ctx.judge(
            "heartbeats.timeout",
            [
                Figure(
                    "silence before giving up",
                    lost.time - silent_at,
                    engine=engine.config.server_silence_timeout + 0.5,
                )
            ],
            [("reason is stalled", lost.reason.startswith("stalled"))],
            detail=lost.reason,
        )
        checks = [
            ("live again", back.dest is State.LIVE),
            ("one syncrequest on the new socket", syncs.get(ctx.wire.connections - 1) == 1),
        ]
        if ctx.sim is not None:
            checks.append(("store equals the server's state", _truth_matches(ctx, engine)))
        ctx.judge(
            "heartbeats.recovery",
            [
                Figure(
                    "reconnection attempt after giving up",
                    retry.time - lost.time,
                    stage2=STAGE2_RECONNECT,
                    engine=engine.config.backoff.after_live_cap,
                )
            ],
            checks,
        )


# ---------------------------------------------------------------------------- events

EVENTS = (
    _c(
        "events.syncrequest",
        Section.EVENTS,
        "Syncrequest is sent correctly",
        "user/syncrequest goes out after authorize is answered, with the body the "
        'configuration asks for (default {"users": [userId]})',
    ),
    _c(
        "events.received",
        Section.EVENTS,
        "Real-time events are received",
        "props events reach the application through engine.events() during the window "
        "(a quiet real account makes this INCONCLUSIVE, never a pass)",
    ),
    _c(
        "events.state",
        Section.EVENTS,
        "Process incoming events (state kept)",
        "simulator: the store equals the server's state after the window; server: the "
        "snapshot was applied",
    ),
)


async def run_sync_events(ctx: Context) -> None:
    consumer = Consumer(ctx)
    ctx.wire.arrivals = {}
    async with ctx.engine() as engine, trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run, engine)
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(ctx.window(30.0))
        await _settle(ctx)
        records = [r for r in engine.transitions if r.region == "connection"]
        authorized = [r.time for r in records if r.trigger == "authorized"]
        syncs = [
            e
            for e in ctx.wire.entries
            if e.direction == "out" and e.text.lower().startswith("user/syncrequest\n")
        ]
        body: object = None
        if syncs:
            with suppress(orjson.JSONDecodeError, IndexError):
                body = orjson.loads(syncs[0].text.split("\n", 3)[3])
        user_id = ctx.sim.user_id if ctx.sim is not None else None
        expected = engine.config.sync.body(user_id) if user_id is not None else None
        checks = [
            ("one syncrequest", len(syncs) == 1),
            (
                "sent after authorize was answered",
                bool(syncs and authorized and syncs[0].time >= authorized[0]),
            ),
            ("body is a JSON object", isinstance(body, dict)),
        ]
        if expected is not None:
            checks.append(("body is what the configuration asks for", body == expected))
        ctx.judge("events.syncrequest", checks=checks, detail=f"body sent: {body}")
        props = engine.counters["props_events"]
        figure = Figure("props events received", props, unit="", engine=1, lower=True)
        if props == 0 and not ctx.target.is_sim:
            ctx.inconclusive("events.received", "no event arrived in the window", [figure])
        else:
            ctx.judge(
                "events.received",
                [
                    figure,
                    Figure(
                        "changes delivered to the application",
                        consumer.seen,
                        unit="",
                        engine=1,
                        lower=True,
                    ),
                ],
            )
        if ctx.sim is not None:
            state = [
                ("store equals the server's state", _truth_matches(ctx, engine)),
                (
                    "application's rebuilt state equals the server's",
                    consumer.state == {k: dict(v) for k, v in ctx.sim.truth().items()},
                ),
            ]
        else:
            state = [("snapshot applied (store not empty)", len(engine.store) > 0)]
        ctx.judge("events.state", checks=state)
        nursery.cancel_scope.cancel()


ENTITY_TYPES = (
    _c(
        "events.entity_types",
        Section.EVENTS,
        "Entity types are subscribed to correctly",
        "a sync with accounts and entityTypes sends exactly those types; the store holds only "
        "those types and equals the server's entities of those types",
        remote=False,
    ),
)

_TYPES = ("account", "position", "order", "fill", "cashBalance")


async def run_entity_types(ctx: Context) -> None:
    assert ctx.sim is not None
    accounts = tuple(sorted(key[1] for key in ctx.sim.truth() if key[0] == "account"))
    config = ctx.config(sync=SyncOptions(accounts=accounts, entity_types=_TYPES))
    async with ctx.engine(config) as engine:
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(20.0)
        await _settle(ctx)
        bodies = [orjson.loads(b) for _, e, b in ctx.wire.out_requests() if e == "user/syncrequest"]
        held = {key[0] for key in engine.store.as_dict()}
        truth = {k: v for k, v in ctx.sim.truth().items() if k[0] in _TYPES}
        ctx.judge(
            "events.entity_types",
            checks=[
                (
                    "syncrequest names the entity types",
                    bool(bodies) and bodies[0].get("entityTypes") == list(_TYPES),
                ),
                ("store holds only the asked types", held <= set(_TYPES)),
                (
                    "store equals the server's entities of those types",
                    engine.store.as_dict() == truth,
                ),
            ],
            detail=f"types held: {sorted(held)}",
        )


SHARDING = (
    _c(
        "events.sharding",
        Section.EVENTS,
        "Sharding is implemented correctly",
        "shards=2 opens two sockets, each with one syncrequest carrying shardingExpression "
        "{modAccountId, 2, remainder 0 or 1}; their union equals the server's state; dropping "
        "one shard's socket leaves the other live and the union converges again",
        remote=False,
    ),
)


async def run_sharding(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    async with ctx.engine(ctx.config(shards=2)) as engine:
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(10.0)
        await _settle(ctx)
        union_ok = _truth_matches(ctx, engine)
        bodies = [orjson.loads(b) for _, e, b in ctx.wire.out_requests() if e == "user/syncrequest"]
        remainders = sorted(b.get("shardingExpression", {}).get("remainder", -1) for b in bodies)
        sim.resume_activity()

        def shard_zero(audit: Any) -> bool:
            for request in audit.requests:
                if request.endpoint == "user/syncrequest":
                    return bool(orjson.loads(request.body)["shardingExpression"]["remainder"] == 0)
            return False

        before = engine.shards[1].generation
        await sim.drop_connections(where=shard_zero)
        await trio.sleep(0.5)
        other_live = engine.shards[1].state is State.LIVE
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(5.0)
        await _settle(ctx)
        ctx.judge(
            "events.sharding",
            checks=[
                ("two syncrequests, remainders 0 and 1", remainders == [0, 1]),
                (
                    "each with modAccountId, divisor 2",
                    all(
                        b.get("shardingExpression", {}).get("expressionType") == "modAccountId"
                        and b["shardingExpression"].get("divisor") == 2
                        for b in bodies
                    ),
                ),
                ("union of the shards equals the server's state", union_ok),
                (
                    "the other shard stayed live",
                    other_live and engine.shards[1].generation == before,
                ),
                ("converged again after the drop", _truth_matches(ctx, engine)),
            ],
        )


IDEMPOTENCY = (
    _c(
        "events.idempotency",
        Section.EVENTS,
        "Idempotency is maintained",
        "with every props frame sent twice and 30 messages replayed, the store and the "
        "application's state rebuilt from engine.events() equal the server's, and the "
        "application never got a duplicate (Created of a present entity, a no-op change)",
        remote=False,
    ),
)


async def run_idempotency(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    consumer = Consumer(ctx)
    async with ctx.engine() as engine, trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run, engine)
        await wait_state(engine, State.LIVE, STEP)
        sim.duplicate_props(True)
        await trio.sleep(20.0)
        sim.replay_props(30)
        await trio.sleep(5.0)
        sim.duplicate_props(False)
        await _settle(ctx)
        await trio.sleep(1.0)
        truth = {k: dict(v) for k, v in sim.truth().items()}
        ctx.judge(
            "events.idempotency",
            [
                Figure(
                    "duplicates the application received", len(consumer.problems), unit="", engine=0
                )
            ],
            [
                ("store equals the server's state", _truth_matches(ctx, engine)),
                ("rebuilt state equals the server's", consumer.state == truth),
                (
                    "faults were injected",
                    sim.injected["duplicate_props"] >= 1 and sim.injected["replay_props"] >= 1,
                ),
            ],
            detail="; ".join(consumer.problems[:5]),
        )
        nursery.cancel_scope.cancel()


MALFORMED = (
    _c(
        "events.malformed",
        Section.EVENTS,
        "Event handlers are robust and don't crash on malformed data",
        "each of the simulator's malformed kinds is sent to a live socket; the connection "
        "stays up (one generation), bad input is counted, and the store equals the server's",
        remote=False,
    ),
    _c(
        "errors.malformed_json",
        Section.ERRORS,
        "Message errors: malformed JSON messages",
        "a truncated JSON frame is counted as malformed and skipped, connection kept",
        remote=False,
    ),
    _c(
        "errors.unknown_message",
        Section.ERRORS,
        "Message errors: unknown message types",
        "an unknown frame type and an unknown event kind are counted and skipped, connection kept",
        remote=False,
    ),
)


async def run_malformed(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        seen: dict[str, tuple[int, int, bool]] = {}
        for kind in MALFORMED_KINDS:
            before = engine.counters["malformed"] + engine.counters["ignored.push"]
            sim.inject_malformed(kind)
            await trio.sleep(1.0)
            after = engine.counters["malformed"] + engine.counters["ignored.push"]
            seen[kind] = (before, after, engine.state is State.LIVE)
        await _settle(ctx)
        kept = engine.generation == 1 and engine.state is State.LIVE
        counted = {kind: after > before for kind, (before, after, _) in seen.items()}
        ctx.judge(
            "events.malformed",
            [
                Figure(
                    "malformed inputs counted",
                    engine.counters["malformed"],
                    unit="",
                    engine=1,
                    lower=True,
                )
            ],
            [
                ("connection kept (one generation, live)", kept),
                ("live after every kind", all(live for _, _, live in seen.values())),
                ("store equals the server's state", _truth_matches(ctx, engine)),
            ],
            detail=", ".join(
                f"{k}: {'counted' if v else 'NOT counted'}" for k, v in counted.items()
            ),
        )
        ctx.judge(
            "errors.malformed_json",
            checks=[("invalid_json counted", counted["invalid_json"]), ("connection kept", kept)],
        )
        ctx.judge(
            "errors.unknown_message",
            checks=[
                ("unknown frame type counted", counted["unknown_frame"]),
                ("unknown event kind counted", counted["unknown_event"]),
                ("connection kept", kept),
            ],
        )


REQUEST_ERRORS = (
    _c(
        "errors.invalid_parameters",
        Section.ERRORS,
        "Message errors: invalid message parameters",
        "a request with an invalid parameter and one to an unknown endpoint each fail with "
        "RequestError carrying the server's status (400/404); the connection stays up; on "
        "the simulator, props with wrong types are counted as malformed too",
    ),
)


async def run_request_errors(ctx: Context) -> None:
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        statuses: list[int | None] = []
        for endpoint, query in (
            ("account/item", {"id": "not-a-number"}),
            ("certify/nosuchendpoint", None),
        ):
            try:
                await engine.request(endpoint, query=query, timeout=30)
                statuses.append(None)
            except RequestError as exc:
                statuses.append(exc.status)
        checks = [
            (
                "invalid parameter refused (4xx)",
                statuses[0] is not None and 400 <= statuses[0] < 500,
            ),
            (
                "unknown endpoint refused (4xx)",
                statuses[1] is not None and 400 <= statuses[1] < 500,
            ),
            ("connection kept", engine.generation == 1 and engine.state is State.LIVE),
        ]
        if ctx.sim is not None:
            before = engine.counters["malformed"]
            ctx.sim.inject_malformed("props_wrong_types")
            await trio.sleep(1.0)
            checks.append(("props with wrong types counted", engine.counters["malformed"] > before))
            checks.append(("still live", engine.state is State.LIVE and engine.generation == 1))
        ctx.judge("errors.invalid_parameters", checks=checks, detail=f"statuses {statuses}")


# ------------------------------------------------------------------------- rate limits

P_TICKET = (
    _c(
        "rate.p_ticket",
        Section.RATE_LIMITS,
        "P-Ticket system is implemented correctly",
        "a request answered with p-ticket/p-time is resent after p-time with the ticket and a "
        "new id and succeeds in the caller's one await; a penalised syncrequest is sent on the "
        "next socket with its ticket, after p-time",
        remote=False,
    ),
)


async def run_p_ticket(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        sim.penalize_requests(endpoint="contract/find", p_time=6)
        start = trio.current_time()
        found = await engine.request("contract/find", query={"name": "MESZ6"}, timeout=120)
        waited = trio.current_time() - start
        audit = sim.sockets[-1]
        penalties, retries = list(audit.penalties), list(audit.retries)
        sim.penalize_requests(endpoint="user/syncrequest", p_time=12)
        await ctx.faults.drop()
        await wait_state(engine, State.BACKOFF, STEP)
        await wait_state(engine, State.CONNECTING, STEP)
        await wait_state(engine, State.BACKOFF, STEP)
        penalised = [r for r in engine.transitions if r.reason.startswith("sync_penalized")]
        await wait_state(engine, State.LIVE, STEP)
        retried = [r for r in engine.transitions if r.trigger == "retry"]
        sync_audits = [a for a in sim.sockets if a.syncrequest_count]
        last = sync_audits[-1]
        resend = [r for r in last.requests if r.endpoint == "user/syncrequest"]
        ticket = orjson.loads(resend[0].body).get("p-ticket") if resend else None
        gap = retried[-1].time - penalised[0].time if penalised and retried else math.inf
        ctx.judge(
            "rate.p_ticket",
            [
                Figure("request wait before its resend", waited, engine=6.0, lower=True),
                Figure("sync wait before the next socket", gap, engine=12.0, lower=True),
            ],
            [
                ("request succeeded", isinstance(found, dict) and found.get("name") == "MESZ6"),
                (
                    "resend presented the ticket and was accepted",
                    bool(retries)
                    and retries[0].accepted
                    and bool(penalties)
                    and retries[0].ticket == penalties[0].ticket,
                ),
                (
                    "resend used a new request id",
                    bool(retries and penalties) and retries[0].id != penalties[0].id,
                ),
                ("penalised sync ended that attempt", bool(penalised)),
                ("next socket's sync carried the ticket", ticket is not None),
                ("next socket's sync accepted", bool(last.retries) and last.retries[0].accepted),
            ],
        )


RATE_LIMIT = (
    _c(
        "rate.429",
        Section.RATE_LIMITS,
        "Rate limiting responses are properly handled",
        "a 429 fails the request with RateLimited and starts a recorded lockout "
        "(lockout_began); no ordinary request goes out during it; lockout_ended after "
        "lockout_seconds and requests flow again; a captcha fails with CaptchaRequired",
        remote=False,
    ),
    _c(
        "rate.priorities",
        Section.RATE_LIMITS,
        "Test priority handling for different request types",
        "during the lockout a cancellation (Priority.CANCEL) goes out and is answered while a "
        "list request waits; queued behind 200 list requests, a cancellation goes out first",
        remote=False,
    ),
)


async def run_rate_limit(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        sim.rate_limit_429(endpoint="account/list")
        limited = False
        try:
            await engine.request("account/list", timeout=60)
        except RateLimited:
            limited = True
        began = [r for r in engine.transitions if r.trigger == "lockout_began"]
        waited_out = False
        try:
            with trio.fail_after(600):
                await engine.request("account/list", timeout=3000)
        except trio.TooSlowError:
            waited_out = True
        cancelled = False
        with suppress(RequestError):
            await engine.request("order/cancelorder", body={"orderId": 1}, timeout=60)
            cancelled = True
        sent_during = [r.endpoint for r in sim.sockets[-1].requests]
        await trio.sleep(engine.config.lockout_seconds)
        after = await engine.request("account/list", timeout=60)
        ended = [r for r in engine.transitions if r.trigger == "lockout_ended"]
        sim.penalize_requests(endpoint="contract/find", captcha=True)
        captcha = False
        try:
            await engine.request("contract/find", query="name=MESZ6", timeout=60)
        except CaptchaRequired:
            captcha = True
        duration = ended[0].time - began[0].time if began and ended else math.inf
        ctx.judge(
            "rate.429",
            [
                Figure(
                    "lockout length",
                    duration,
                    stage2=None,
                    engine=engine.config.lockout_seconds,
                    lower=True,
                )
            ],
            [
                ("request failed with RateLimited", limited),
                ("lockout_began recorded", bool(began)),
                (
                    "a list request did not go out during the lockout",
                    waited_out and sent_during.count("account/list") == 1,
                ),
                ("lockout_ended recorded; requests flow again", bool(ended) and bool(after)),
                ("captcha fails with CaptchaRequired", captcha),
            ],
        )
        cancel_during = "order/cancelorder" in sent_during
    # queue order: 200 list requests queued while the server refuses, then a cancellation
    sim.refuse_connections(until=trio.current_time() + 30)
    async with ctx.engine() as engine:

        async def call(endpoint: str, body: object = None) -> None:
            with suppress(RequestError):
                await engine.request(endpoint, body=body, timeout=600)

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(call, "account/list")
            await trio.sleep(1.0)
            nursery.start_soon(call, "order/cancelorder", {"orderId": 42})
    sent = [r.endpoint for r in sim.sockets[-1].requests]
    ctx.judge(
        "rate.priorities",
        checks=[
            ("cancellation went out during the lockout", cancel_during and cancelled),
            (
                "cancellation first after authorize and sync",
                sent[:3] == ["authorize", "user/syncrequest", "order/cancelorder"],
            ),
            ("every queued list request went out after it", sent.count("account/list") == 200),
        ],
    )


# ------------------------------------------------------------------------ reconnection

RECONNECT = (
    _c(
        "reconnect.automatic",
        Section.RECONNECTION,
        "Automatic reconnection works after connection loss",
        "after an abrupt network drop of a stable connection the engine's next attempt "
        "comes within 10 s (Stage 2) and within backoff.after_live_cap, and it is live again",
    ),
    _c(
        "reconnect.reauth",
        Section.RECONNECTION,
        "Re-authentication occurs after reconnection",
        "the new socket sends authorize first and it is answered s=200 within 2 s",
    ),
    _c(
        "reconnect.state",
        Section.RECONNECTION,
        "State is properly recovered after reconnection",
        "one syncrequest on the new socket; simulator: store and the application's rebuilt "
        "state equal the server's (changes made while down arrive as recovered changes); "
        "server: the new snapshot was applied",
    ),
)


async def run_reconnect(ctx: Context) -> None:
    consumer = Consumer(ctx)
    async with ctx.engine() as engine, trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run, engine)
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(ctx.window(61.0) if ctx.target.is_sim else min(2.0, ctx.target.duration))
        dropped_at = trio.current_time()
        await ctx.faults.drop()
        lost = await wait_state(engine, State.BACKOFF, STEP)
        retry = await wait_state(engine, State.CONNECTING, STEP)
        back = await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(ctx.window(5.0) if ctx.target.is_sim else 1.0)
        await _settle(ctx)
        await trio.sleep(1.0)
        new = ctx.wire.connections - 1
        first_out = [e for _, e, _ in ctx.wire.out_requests(new)][:1]
        auths = auth_times(engine.transitions)
        ctx.judge(
            "reconnect.automatic",
            [
                Figure("loss detected after the drop", lost.time - dropped_at),
                Figure(
                    "reconnection attempt after the loss",
                    retry.time - lost.time,
                    stage2=STAGE2_RECONNECT,
                    engine=engine.config.backoff.after_live_cap,
                ),
            ],
            [
                ("reason is dropped", lost.reason.startswith("dropped")),
                ("live again", back.dest is State.LIVE),
            ],
            detail=f"{lost.reason}; {retry.reason}",
        )
        ctx.judge(
            "reconnect.reauth",
            [
                Figure(
                    "authorization time on the new socket",
                    auths[-1] if len(auths) >= 2 else math.inf,
                    stage2=STAGE2_AUTH,
                )
            ],
            [
                ("authorize is the new socket's first request", first_out == ["authorize"]),
                ("answered s=200", any('"s":200' in t for t in _auth_answers(ctx, new))),
            ],
        )
        syncs = sync_counts(ctx.wire)
        checks = [("one syncrequest on the new socket", syncs.get(new) == 1)]
        if ctx.sim is not None:
            truth = {k: dict(v) for k, v in ctx.sim.truth().items()}
            checks += [
                ("store equals the server's state", _truth_matches(ctx, engine)),
                ("rebuilt state equals the server's", consumer.state == truth),
                ("no duplicate reached the application", not consumer.problems),
            ]
        else:
            checks.append(("snapshot applied", len(engine.store) > 0))
        ctx.judge("reconnect.state", checks=checks, detail="; ".join(consumer.problems[:5]))
        nursery.cancel_scope.cancel()


SERVER_CLOSE = (
    _c(
        "reconnect.server_close",
        Section.RECONNECTION,
        "Simulate connection drops: server close frame and shutdown",
        'after c[3000,"Go away!"] and after a Maintenance shutdown event, each on a '
        "stable connection, the next attempt comes within 10 s and the engine is live again",
        remote=False,
    ),
)


async def run_server_close(ctx: Context) -> None:
    assert ctx.sim is not None
    sim = ctx.sim
    figures: list[Figure] = []
    checks: list[tuple[str, bool]] = []
    faults: tuple[tuple[str, Callable[[], Awaitable[None]]], ...] = (
        ("close frame", lambda: sim.close_connections(3000, "Go away!")),
        ("Maintenance shutdown", lambda: sim.shutdown("Maintenance", "certification")),
    )
    async with ctx.engine() as engine:
        for name, fault in faults:
            await wait_state(engine, State.LIVE, STEP)
            await trio.sleep(61.0)
            await fault()
            lost = await wait_state(engine, State.BACKOFF, STEP)
            retry = await wait_state(engine, State.CONNECTING, STEP)
            back = await wait_state(engine, State.LIVE, STEP)
            figures.append(
                Figure(
                    f"attempt after the {name}",
                    retry.time - lost.time,
                    stage2=STAGE2_RECONNECT,
                    engine=engine.config.backoff.after_live_cap,
                )
            )
            checks.append((f"live again after the {name}", back.dest is State.LIVE))
    ctx.judge("reconnect.server_close", figures, checks)


# ----------------------------------------------------------------------- network, errors

DELAY = (
    _c(
        "perf.slow_network",
        Section.PERFORMANCE,
        "Connection and authorization within limits over a slow network",
        "with --delay seconds (0.4 by default) added each way by the proxy, connection <= 5 s "
        "and authorization <= 2 s (Stage 2), heartbeats still within their interval",
    ),
)


async def run_network_delay(ctx: Context) -> None:
    ctx.faults.delay(ctx.delay)
    async with ctx.engine() as engine:
        await wait_state(engine, State.LIVE, STEP)
        await trio.sleep(ctx.window(20.0))
        connects = connect_times(ctx.wire)
        auths = auth_times(engine.transitions)
        largest, _, _ = heartbeat_gaps(ctx.wire, 0)
        ctx.judge(
            "perf.slow_network",
            [
                Figure("one-way delay injected", ctx.delay),
                Figure(
                    "connection time",
                    connects[0] if connects else math.inf,
                    stage2=STAGE2_CONNECT,
                    engine=engine.config.connect_timeout,
                ),
                Figure("authorization time", auths[0] if auths else math.inf, stage2=STAGE2_AUTH),
                Figure(
                    "largest gap between heartbeats",
                    largest,
                    stage2=STAGE2_HEARTBEAT,
                    engine=_engine_heartbeat(ctx, engine),
                ),
            ],
            [("live", engine.state is State.LIVE)],
        )
    ctx.faults.delay(0.0)


CONNECTION_ERRORS = (
    _c(
        "errors.network_timeout",
        Section.ERRORS,
        "Connection errors: network timeouts",
        "a connect that never completes is given up after connect_timeout (reason "
        "connect_timeout), then retried",
    ),
    _c(
        "errors.dns",
        Section.ERRORS,
        "Connection errors: DNS resolution failures",
        "a name that does not resolve is named as such (reason dns) and retried with backoff",
    ),
    _c(
        "errors.tls",
        Section.ERRORS,
        "Connection errors: SSL/TLS handshake failures",
        "a failed certificate check is named as such (reason tls) and retried with backoff",
    ),
    _c(
        "errors.unavailable",
        Section.ERRORS,
        "Connection errors: server unavailable errors",
        "a refused connection is named as such (reason refused) and retried; the engine is "
        "live once the server is reachable, with attempts no closer than the backoff allows",
    ),
)


async def run_connection_errors(ctx: Context) -> None:
    config = ctx.config()
    assert ctx.scripted is not None
    for kind in ("timeout", "dns", "tls", "refused"):
        ctx.scripted.fail_next(kind)
    async with ctx.engine(config) as engine:
        await wait_state(engine, State.LIVE, STEP * 2)
        records = [r for r in engine.transitions if r.region == "connection"]
    ended = [r for r in records if r.dest is State.BACKOFF]
    starts = [r for r in records if r.dest is State.CONNECTING]
    reasons = [r.reason for r in ended]

    def named(prefix: str) -> bool:
        return any(reason.startswith(prefix) for reason in reasons)

    timeout = [
        b.time - a.time
        for a, b in itertools.pairwise(records)
        if a.dest is State.CONNECTING and b.reason.startswith("connect_timeout")
    ]
    gaps = [b.time - a.time for a, b in itertools.pairwise(starts)]
    live = engine.state is State.STOPPED and any(r.dest is State.LIVE for r in records)
    ctx.judge(
        "errors.network_timeout",
        [
            Figure(
                "connect given up after",
                timeout[0] if timeout else math.inf,
                engine=config.connect_timeout + 0.5,
            )
        ],
        [("reason is connect_timeout", named("connect_timeout"))],
    )
    ctx.judge("errors.dns", checks=[("reason is dns", named("dns")), ("live after", live)])
    ctx.judge("errors.tls", checks=[("reason is tls", named("tls")), ("live after", live)])
    ctx.judge(
        "errors.unavailable",
        [
            Figure(
                "smallest gap between attempts",
                min(gaps, default=math.inf),
                engine=config.backoff.initial / 2,
                lower=True,
            )
        ],
        [("reason is refused", named("refused")), ("live after", live)],
        detail="; ".join(reasons),
    )


# ----------------------------------------------------------------------------- the plan

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "login",
        "Login with a valid token, then hold the connection",
        Section.LOGIN,
        (
            "log in over REST (accesstokenrequest)",
            "open the websocket, wait for 'o'",
            "send authorize with the token",
            "sync, go live, hold for the window",
        ),
        "connection time, authorization time, time live without a reconnect",
        LOGIN,
        run_login,
    ),
    Scenario(
        "login_invalid",
        "Login with an invalid token",
        Section.LOGIN,
        ("open the websocket with a made-up access token", "send authorize"),
        "the server's answer, what the engine does next, time to the rejection",
        LOGIN_INVALID,
        run_login_invalid,
    ),
    Scenario(
        "login_expired",
        "Login with an expired token; token expiring during a connection",
        Section.LOGIN,
        (
            "authorize with a token the server has expired",
            "then, on a live connection, expire "
            "every token, hold 30 s, drop the network, let the engine reconnect",
        ),
        "the server's answers; whether the live socket stayed; the re-authorization",
        LOGIN_EXPIRED,
        run_login_expired,
        remote=False,
    ),
    Scenario(
        "auth_timeout",
        "The server never answers authorize",
        Section.ERRORS,
        ("the simulator ignores authorize", "wait for the engine to give up", "answer again"),
        "time to give up, the reason, recovery",
        AUTH_TIMEOUT,
        run_auth_timeout,
        remote=False,
        sim_config=lambda seed: SimConfig(seed=seed, auth_timeout=60.0),
    ),
    Scenario(
        "heartbeats",
        "Heartbeats on an idle connection",
        Section.HEARTBEATS,
        (
            "go live",
            "pause the server's activity so it sends h",
            "observe for the window (120 s virtual)",
        ),
        "every gap between the engine's [] frames, the first after 'o', the server's h count",
        HEARTBEATS,
        run_heartbeats,
    ),
    Scenario(
        "heartbeats_load",
        "Heartbeats and processing under high message volume (real clock)",
        Section.HEARTBEATS,
        (
            f"go live; push {int(LOAD_FRAME / LOAD_EVERY)} props messages a second for "
            f"{LOAD_SECONDS:g} s ({LOAD_FRAME} per frame), each an update of one of "
            f"{LOAD_ORDERS:,} working orders in turn",
            "the application consumes every change",
        ),
        "heartbeat gaps on the real clock; per message, read to consumer latency",
        HEARTBEATS_LOAD,
        run_heartbeats_load,
        remote=False,
        clock="real",
        limit=60.0,
        sim_config=lambda seed: SimConfig(seed=seed, activity_interval=None),
    ),
    Scenario(
        "heartbeat_timeout",
        "Missed heartbeats: half-open network silence",
        Section.HEARTBEATS,
        (
            "go live, hold 61 s (a stable connection)",
            "the proxy holds every byte from the server (the engine's bytes still pass)",
            "when the engine gives up, lift the silence",
        ),
        "silence before giving up, reconnection attempt delay, recovery",
        HEARTBEAT_TIMEOUT,
        run_heartbeat_timeout,
    ),
    Scenario(
        "sync_events",
        "user/syncrequest and real-time events",
        Section.EVENTS,
        ("go live", "the application consumes engine.events() for the window (30 s virtual)"),
        "the syncrequest frame and its body, props events received, state",
        EVENTS,
        run_sync_events,
    ),
    Scenario(
        "entity_types",
        "Sync with accounts and entityTypes",
        Section.EVENTS,
        (
            "sync with accounts=<all> and entityTypes account, position, order, fill, cashBalance",
            "hold 20 s",
        ),
        "the body sent, the types held, the store against the server's",
        ENTITY_TYPES,
        run_entity_types,
        remote=False,
    ),
    Scenario(
        "sharding",
        "Socket sharding over two sockets",
        Section.EVENTS,
        (
            "shards=2: two sockets, each syncs with its shardingExpression",
            "drop shard 0's socket at the server",
            "wait for it to recover",
        ),
        "the two sync bodies, the union of the shards, the other shard's generation",
        SHARDING,
        run_sharding,
        remote=False,
    ),
    Scenario(
        "idempotency",
        "Duplicated and replayed events",
        Section.EVENTS,
        ("go live; every props frame is sent twice for 20 s", "30 messages replayed"),
        "duplicates reaching the application; store and rebuilt state against the server's",
        IDEMPOTENCY,
        run_idempotency,
        remote=False,
    ),
    Scenario(
        "malformed",
        "Malformed frames on a live socket",
        Section.EVENTS,
        tuple(f"send a {kind} frame" for kind in MALFORMED_KINDS),
        "the malformed counter per kind, the generation, the store against the server's",
        MALFORMED,
        run_malformed,
        remote=False,
    ),
    Scenario(
        "request_errors",
        "Requests with invalid parameters and unknown endpoints",
        Section.ERRORS,
        (
            "account/item?id=not-a-number",
            "certify/nosuchendpoint",
            "simulator: props with wrong types",
        ),
        "the status each request fails with; the connection",
        REQUEST_ERRORS,
        run_request_errors,
    ),
    Scenario(
        "p_ticket",
        "P-ticket on a request and on the syncrequest",
        Section.RATE_LIMITS,
        (
            "penalise contract/find with p-time 6 s; request it",
            "penalise the next user/syncrequest with p-time 12 s; drop the network",
        ),
        "the waits, the resends' tickets and ids, the next socket's sync",
        P_TICKET,
        run_p_ticket,
        remote=False,
    ),
    Scenario(
        "rate_limit",
        "429 lockout, captcha and request priorities",
        Section.RATE_LIMITS,
        (
            "429 on account/list",
            "during the lockout: list request and a cancellation",
            "wait lockout_seconds (virtual)",
            "captcha on contract/find",
            "queue 200 list requests and a cancellation while the server refuses",
        ),
        "the lockout's records and length, what went out during it, the send order",
        RATE_LIMIT,
        run_rate_limit,
        remote=False,
    ),
    Scenario(
        "reconnect",
        "Network drop of a stable connection",
        Section.RECONNECTION,
        (
            "go live, hold 61 s",
            "the proxy cuts the connection (no close frame)",
            "the engine reconnects, re-authorizes, resyncs",
        ),
        "detection, attempt delay, authorization on the new socket, state",
        RECONNECT,
        run_reconnect,
    ),
    Scenario(
        "server_close",
        "Server close frame and Maintenance shutdown",
        Section.RECONNECTION,
        ('on a stable connection: c[3000,"Go away!"]', "again: shutdown Maintenance"),
        "attempt delay after each",
        SERVER_CLOSE,
        run_server_close,
        remote=False,
    ),
    Scenario(
        "network_delay",
        "Slow network",
        Section.PERFORMANCE,
        ("the proxy delays every chunk each way by --delay", "connect, authorize, go live, hold"),
        "connection and authorization time with the delay; heartbeat gaps",
        DELAY,
        run_network_delay,
    ),
    Scenario(
        "connection_errors",
        "Connect timeout, DNS, TLS, refused",
        Section.ERRORS,
        (
            "the next four attempts: connect hangs, name does not resolve, certificate check "
            "fails, connection refused",
            "then the server is reachable",
        ),
        "the reason of each failure, time to give up a hung connect, gaps between attempts",
        CONNECTION_ERRORS,
        run_connection_errors,
    ),
)

SCENARIOS_BY_ID = {scenario.id: scenario for scenario in SCENARIOS}

#: Criteria judged over the whole run (every connection of every scenario that ran).
RUN_WIDE: tuple[CriterionSpec, ...] = (
    _c(
        "events.one_sync",
        Section.EVENTS,
        "Only one syncrequest is sent per socket lifecycle",
        "over every connection of the run: at most one user/syncrequest each (the engine's "
        "frames), and the simulator recorded no protocol violation on any socket",
    ),
    _c(
        "perf.connect",
        Section.PERFORMANCE,
        "Connection Time: establish connection within 5 seconds",
        "the worst connection time over every connection of the run (without injected "
        "delay) <= 5 s and <= connect_timeout",
    ),
    _c(
        "perf.auth",
        Section.PERFORMANCE,
        "Authentication: complete authentication within 2 seconds",
        "the worst authorization time over every authorized connection (without injected "
        "delay) <= 2 s",
    ),
    _c(
        "perf.heartbeat",
        Section.PERFORMANCE,
        "Heartbeat: send heartbeats every 30 seconds",
        "the worst gap between heartbeats on any connection of the run <= 30 s and <= "
        "heartbeat_interval",
    ),
    _c(
        "perf.reconnect",
        Section.PERFORMANCE,
        "Reconnection: attempt reconnection within 10 seconds of disconnection",
        "every loss of a live connection (quota shutdowns and server-ordered waits excepted) "
        "was followed by an attempt within 10 s and within backoff.after_live_cap",
    ),
    _c(
        "perf.processing",
        Section.PERFORMANCE,
        "Message Processing: process messages within 100ms",
        "the 99.9th percentile of every processing time measured in the run (heartbeats_load, "
        "sync_events) <= 100 ms; the worst is reported beside it",
    ),
)


def all_criteria(scenarios: Sequence[Scenario] = SCENARIOS) -> list[CriterionSpec]:
    return [spec for scenario in scenarios for spec in scenario.criteria] + list(RUN_WIDE)
