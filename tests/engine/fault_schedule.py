"""Seeded fault schedules: random faults interleaved with normal activity, invariants checked
after every step. Used by the quick profile in ``make test`` and by ``make soak``.

A schedule is a pure function of its seed: the simulator, the engine's jitter, the fault
sequence and the slow-consumer pauses all draw from seeded generators, and everything runs in
virtual time, so a failing seed replays exactly (``run_schedule(seed)``).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from trio_tradovate import Engine, EntityChange, State, TradovateError, open_engine
from trio_tradovate.sim import MALFORMED_KINDS, SimConfig, Simulator, open_simulator
from trio_tradovate.testing import ScriptedConnector

from ..conftest import config_for

HEARTBEAT = 2.5
TOLERANCE = 0.05
RECONNECT_WITHIN = 10.0
#: BackoffPolicy.stable_after: the 10 s promise is for losing a connection this old.
STABLE_AFTER = 60.0


class InvariantViolation(AssertionError):
    """An invariant failed; the message names the seed and step so the run can be replayed."""


@dataclass
class ScheduleReport:
    seed: int
    faults: Counter[str] = field(default_factory=Counter)
    changes_seen: int = 0
    sockets: int = 0


@dataclass
class Consumer:
    """Rebuilds state from the change stream alone and proves no change arrives twice."""

    state: dict[tuple[str, int], Mapping[str, Any]] = field(default_factory=dict)
    seen: int = 0
    paused_until: float = 0.0
    resume: trio.Event = field(default_factory=trio.Event)
    problems: list[str] = field(default_factory=list)

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)
        if self.resume.is_set():
            self.resume = trio.Event()

    def unpause(self) -> None:
        self.paused_until = 0.0
        self.resume.set()

    def apply(self, change: EntityChange) -> None:
        key = (change.entity_type, change.entity_id)
        before = self.state.get(key)
        if change.event_type == "Deleted":
            if before is None:
                self.problems.append(f"Deleted of absent {key}")
            self.state.pop(key, None)
        else:
            if before is not None and dict(before) == dict(change.entity):
                self.problems.append(f"{change.event_type} that changes nothing: {key}")
            if change.event_type == "Created" and before is not None:
                self.problems.append(f"Created of present {key}")
            if change.event_type == "Updated" and before is None:
                self.problems.append(f"Updated of absent {key}")
            self.state[key] = change.entity
        self.seen += 1

    async def run(self, engine: Engine) -> None:
        async for change in engine.events():
            while trio.current_time() < self.paused_until:  # a slow consumer
                with trio.move_on_at(self.paused_until):
                    await self.resume.wait()
            self.apply(change)


def check_invariants(sim: Simulator, engine: Engine, consumer: Consumer, where: str) -> None:
    def fail(message: str) -> None:
        raise InvariantViolation(f"{where}: {message}")

    for audit in sim.sockets:
        if audit.syncrequest_count > 1:
            fail(f"socket {audit.index} got {audit.syncrequest_count} syncrequests")
        authorized = audit.authorized_at
        early = [
            r.endpoint
            for r in audit.requests
            if (authorized is None or r.time < authorized) and r.endpoint != "authorize"
        ]
        if early:
            fail(f"socket {audit.index} got {early} before authorization")
        beats = audit.client_heartbeats
        for a, b in itertools.pairwise(beats):
            if b - a > HEARTBEAT + TOLERANCE:
                fail(f"socket {audit.index}: heartbeat gap {b - a:.3f} s at {a:.3f}")
        if beats and beats[0] - audit.opened_at > HEARTBEAT + TOLERANCE:
            fail(f"socket {audit.index}: first heartbeat {beats[0] - audit.opened_at:.3f} s late")
    records = [r for r in engine.transitions if r.region == "connection"]
    live_since: dict[int, float] = {}
    for lost, after in itertools.pairwise(records):
        if lost.dest is State.LIVE:
            live_since[lost.shard] = lost.time
        stable = lost.time - live_since.get(lost.shard, lost.time) >= STABLE_AFTER
        if lost.source is State.LIVE and lost.dest is State.BACKOFF and after.trigger == "retry":
            if "Quota" in lost.reason or lost.reason.startswith(("sync_", "shutdown")):
                continue  # quota shutdowns and penalties wait longer on purpose
            if stable and after.time - lost.time > RECONNECT_WITHIN:
                fail(f"reconnect {after.time - lost.time:.2f} s after losing a stable connection")
    if consumer.problems:
        fail(f"consumer saw duplicates: {consumer.problems[:3]}")


@dataclass
class Ctx:
    """What a schedule step may touch."""

    sim: Simulator
    engine: Engine
    connector: ScriptedConnector
    consumer: Consumer
    rng: random.Random
    nursery: trio.Nursery
    requests_done: int = 0
    requests_failed: Counter[str] = field(default_factory=Counter)


Step = Callable[[Ctx], Awaitable[None]]


async def _drop(ctx: Ctx) -> None:
    await ctx.sim.drop_connections()


async def _stall(ctx: Ctx) -> None:
    ctx.sim.stall()
    await trio.sleep(ctx.rng.uniform(3, 25))
    ctx.sim.stall(False)


async def _close(ctx: Ctx) -> None:
    await ctx.sim.close_connections(ctx.rng.choice([1000, 1011, 3000, 4000]), "Go away!")


def _shutdown(code: str) -> Step:
    async def step(ctx: Ctx) -> None:
        await ctx.sim.shutdown(code, f"{code} (scheduled)")

    return step


async def _refuse(ctx: Ctx) -> None:
    ctx.sim.refuse_connections(until=trio.current_time() + ctx.rng.uniform(5, 90))
    await ctx.sim.drop_connections()


async def _ignore_auth(ctx: Ctx) -> None:
    ctx.sim.ignore_authorize()
    await ctx.sim.drop_connections()
    await trio.sleep(ctx.rng.uniform(5, 30))
    ctx.sim.ignore_authorize(False)


async def _expire(ctx: Ctx) -> None:
    ctx.sim.expire_tokens()
    await ctx.sim.drop_connections()


async def _expire_renewal_refused(ctx: Ctx) -> None:
    ctx.sim.fail_renewals()
    ctx.sim.expire_tokens()
    await ctx.sim.drop_connections()
    await trio.sleep(ctx.rng.uniform(5, 30))
    ctx.sim.fail_renewals(False)


async def _login_penalised(ctx: Ctx) -> None:
    ctx.sim.penalize_auth(ctx.rng.uniform(1, 20))
    ctx.sim.fail_renewals()
    ctx.sim.expire_tokens()
    await ctx.sim.drop_connections()
    await trio.sleep(ctx.rng.uniform(25, 40))
    ctx.sim.fail_renewals(False)


def _connect_fault(kind: str) -> Step:
    async def step(ctx: Ctx) -> None:
        ctx.connector.fail_next(kind, times=ctx.rng.randint(1, 3))
        await ctx.sim.drop_connections()

    return step


def _malformed(kind: str) -> Step:
    async def step(ctx: Ctx) -> None:
        def skipped() -> int:
            return ctx.engine.counters["malformed"] + ctx.engine.counters["ignored.push"]

        generation, before = ctx.engine.generation, skipped()
        live = ctx.engine.state is State.LIVE
        ctx.sim.inject_malformed(kind)
        await trio.sleep(0.5)
        # counted and skipped; the connection stays up (checked when nothing else moved)
        if live and ctx.engine.generation == generation and skipped() <= before:
            raise InvariantViolation(f"malformed {kind} was not counted")
        if live and ctx.engine.generation != generation:
            raise InvariantViolation(f"malformed {kind} cost the connection")

    return step


async def _duplicate(ctx: Ctx) -> None:
    ctx.sim.duplicate_props()
    await trio.sleep(ctx.rng.uniform(3, 30))
    ctx.sim.duplicate_props(False)


async def _replay(ctx: Ctx) -> None:
    ctx.sim.replay_props(ctx.rng.randint(1, 30))


async def _split(ctx: Ctx) -> None:
    ctx.sim.split_frames(ctx.rng.randint(1, 64))
    await trio.sleep(ctx.rng.uniform(3, 20))
    ctx.sim.split_frames(None)


async def _requests(ctx: Ctx) -> None:
    """Read-only requests in the background: answered, or a typed error; never a hang."""

    async def one() -> None:
        try:
            await ctx.engine.request("account/list", timeout=120)
        except TradovateError as exc:
            ctx.requests_failed[type(exc).__name__] += 1
        else:
            ctx.requests_done += 1

    for _ in range(ctx.rng.randint(1, 20)):
        ctx.nursery.start_soon(one)


async def _penalised_requests(ctx: Ctx) -> None:
    ctx.sim.penalize_requests(endpoint="account/list", p_time=ctx.rng.uniform(1, 10))
    await _requests(ctx)


async def _request_captcha(ctx: Ctx) -> None:
    ctx.sim.penalize_requests(endpoint="account/list", captcha=True)
    await _requests(ctx)


async def _request_429(ctx: Ctx) -> None:
    ctx.sim.rate_limit_429(endpoint="account/list")
    await _requests(ctx)


async def _sync_penalised(ctx: Ctx) -> None:
    ctx.sim.penalize_requests(endpoint="user/syncrequest", p_time=ctx.rng.uniform(1, 20))
    await ctx.sim.drop_connections()


async def _sync_429(ctx: Ctx) -> None:
    ctx.sim.rate_limit_429(endpoint="user/syncrequest")
    await ctx.sim.drop_connections()


async def _slow_consumer(ctx: Ctx) -> None:
    ctx.consumer.pause(trio.current_time() + ctx.rng.uniform(5, 60))


async def _quiet(ctx: Ctx) -> None:
    return


#: Fault kinds and their weights in a schedule.
STEPS: dict[str, tuple[Step, int]] = {
    "drop": (_drop, 6),
    "stall": (_stall, 4),
    "close_frame": (_close, 4),
    "shutdown_maintenance": (_shutdown("Maintenance"), 2),
    "shutdown_connection_quota": (_shutdown("ConnectionQuotaReached"), 1),
    "shutdown_ip_quota": (_shutdown("IPQuotaReached"), 1),
    "refuse": (_refuse, 3),
    "authorize_unanswered": (_ignore_auth, 2),
    "token_expired": (_expire, 2),
    "token_expired_renewal_refused": (_expire_renewal_refused, 1),
    "login_penalised": (_login_penalised, 1),
    "dns_failure": (_connect_fault("dns"), 1),
    "tls_failure": (_connect_fault("tls"), 1),
    "connect_timeout": (_connect_fault("timeout"), 1),
    "connect_refused": (_connect_fault("refused"), 1),
    "connect_reset": (_connect_fault("reset"), 1),
    "request_captcha": (_request_captcha, 1),
    "request_429": (_request_429, 1),
    "sync_penalised": (_sync_penalised, 1),
    "sync_429": (_sync_429, 1),
    "duplicate_props": (_duplicate, 3),
    "replay_props": (_replay, 3),
    "split_frames": (_split, 2),
    "requests": (_requests, 3),
    "penalised_requests": (_penalised_requests, 2),
    "slow_consumer": (_slow_consumer, 3),
    "quiet": (_quiet, 4),
    **{f"malformed_{kind}": (_malformed(kind), 1) for kind in MALFORMED_KINDS},
}


async def run_schedule(seed: int, sequence: list[str] | None = None) -> ScheduleReport:
    """Run one seeded schedule and check the invariants after every step.

    ``sequence`` forces the fault kinds in order; otherwise 6 to 14 are drawn by weight.
    """
    rng = random.Random(seed)
    report = ScheduleReport(seed)
    names = sorted(STEPS)
    weights = [STEPS[name][1] for name in names]
    count = len(sequence) if sequence is not None else rng.randint(6, 14)
    async with open_simulator(
        SimConfig(seed=seed, activity_interval=rng.choice([0.5, 1, 3]))
    ) as sim:
        connector = ScriptedConnector(sim.connector())
        consumer = Consumer()
        config = config_for(sim, connector=connector, seed=seed)
        async with open_engine(config) as engine, trio.open_nursery() as nursery:
            nursery.start_soon(consumer.run, engine)
            ctx = Ctx(sim, engine, connector, consumer, rng, nursery)
            await engine.wait_for(State.LIVE)
            for index in range(count):
                name = sequence[index] if sequence else rng.choices(names, weights)[0]
                report.faults[name] += 1
                await STEPS[name][0](ctx)
                await trio.sleep(rng.uniform(0.5, 40))
                check_invariants(sim, engine, consumer, f"seed {seed} step {index} ({name})")
            # Recovery: every fault lifted; the engine must get back to the truth by itself.
            sim.stall(False)
            sim.ignore_authorize(False)
            sim.refuse_connections(None)
            sim.duplicate_props(False)
            sim.split_frames(None)
            sim.fail_renewals(False)
            consumer.unpause()
            sim.pause_activity()
            with trio.fail_after(3 * 3600):
                while True:  # settled: live, and still the same connection 5 s later
                    await engine.wait_for(State.LIVE)
                    generation = engine.generation
                    await trio.sleep(5)
                    if engine.generation == generation and engine.state is State.LIVE:
                        break
            check_invariants(sim, engine, consumer, f"seed {seed} end")
            truth = sim.truth()
            if engine.store.as_dict() != truth:
                raise InvariantViolation(f"seed {seed}: store differs from the simulator's truth")
            rebuilt = {key: dict(value) for key, value in consumer.state.items()}
            if rebuilt != truth:
                raise InvariantViolation(f"seed {seed}: consumer's rebuilt state differs")
            nursery.cancel_scope.cancel()
        report.changes_seen = consumer.seen
        report.sockets = len(sim.sockets)
    return report
