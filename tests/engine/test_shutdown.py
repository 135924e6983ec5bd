"""Leaving the engine by an exception runs the same shutdown as a normal exit; bounded memory
of the transition log and of watchers over long runs."""

from __future__ import annotations

import gc
import io
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from trio_tradovate import (
    Credentials,
    Engine,
    EngineStopped,
    EntityChange,
    State,
    open_engine,
)
from trio_tradovate.cli import run_stream
from trio_tradovate.pipeline import Outbound
from trio_tradovate.session import SyncSession
from trio_tradovate.sim import SimConfig, Simulator, open_simulator
from trio_tradovate.statechart import TransitionRecord
from trio_tradovate.transport import WebSocketLink

from ..conftest import config_for


class Boom(Exception):
    """The application's own error."""


async def test_an_exception_in_the_block_runs_the_normal_shutdown(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "fills.json"
    async with open_simulator(SimConfig(seed=12, activity_interval=0.5)) as sim:
        taken: list[EntityChange] = []
        opened: list[tuple[Engine, Any, Any]] = []

        async def consume_until_a_fill() -> None:
            async with open_engine(config_for(sim, checkpoint_file=checkpoint)) as engine:
                opened.append((engine, engine.watch_transitions(), engine.events()))
                await engine.wait_for(State.LIVE)
                async for change in opened[0][2]:
                    if change.entity_type == "fill" and change.event_type == "Created":
                        taken.append(change)
                        raise Boom("the consumer fails after taking a fill")

        with pytest.raises(Boom):  # as itself, not wrapped in an ExceptionGroup
            await consume_until_a_fill()
        [fill] = taken
        [(engine, watcher, changes)] = opened
        assert engine.state is State.STOPPED
        last = engine.transitions[-1]
        assert (last.trigger, last.dest) == ("close", State.STOPPED)
        assert fill.entity_id in orjson.loads(checkpoint.read_bytes())["fills"]
        with trio.fail_after(1):  # both channels were closed: reading them ends
            leftover = [change async for change in changes]
            seen = [record async for record in watcher]
        assert all(c.entity_id != fill.entity_id for c in leftover if c.entity_type == "fill")
        assert seen[-1].trigger == "close"
        # a restarted process with the same checkpoint never announces that fill again
        again: list[int] = []
        async with open_engine(config_for(sim, checkpoint_file=checkpoint)) as restarted:
            await restarted.wait_for(State.LIVE)
            with trio.move_on_after(5):
                async for change in restarted.events():
                    if change.entity_type == "fill" and change.event_type == "Created":
                        again.append(change.entity_id)
        assert fill.entity_id not in again


async def test_a_queued_request_fails_with_engine_stopped_when_the_block_raises(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    errors: list[BaseException] = []

    async def request(engine: Engine) -> None:
        try:
            await engine.request("account/list", timeout=1000)
        except EngineStopped as exc:
            errors.append(exc)

    engines: list[Engine] = []

    async def leave_with_a_request_queued(outer: trio.Nursery) -> None:
        async with open_engine(config_for(sim)) as engine:
            engines.append(engine)
            await engine.wait_for(State.LIVE)
            sim.refuse_connections(until=trio.current_time() + 3600)
            await sim.drop_connections()
            await engine.wait_for(State.BACKOFF)
            outer.start_soon(request, engine)  # queued: the engine is not live
            await trio.sleep(1)
            raise Boom("leaving with a request queued")

    async with trio.open_nursery() as outer:
        with pytest.raises(Boom):
            await leave_with_a_request_queued(outer)
    [engine] = engines
    [error] = errors
    assert isinstance(error, EngineStopped)
    assert engine.transitions[-1].trigger == "close"


async def test_stream_exits_non_zero_with_one_line_when_the_engine_stops_by_policy(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    out, err = io.StringIO(), io.StringIO()
    config = config_for(sim, credentials=Credentials(sim.config.username, "wrong"))
    with trio.fail_after(60):  # it does not wait for a signal forever
        code = await run_stream(config, out, err=err)
    assert code == 1
    [line] = err.getvalue().splitlines()
    assert line.startswith("trio-tradovate: the engine stopped: credentials_rejected")
    assert "wrong" not in err.getvalue() + out.getvalue()


async def test_the_transition_log_is_bounded_and_the_audit_file_keeps_everything(
    sim: Simulator, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = config_for(sim, transition_log_size=8, audit_file=audit)
    async with open_engine(config) as engine:
        for _ in range(5):
            await engine.wait_for(State.LIVE)
            await sim.drop_connections()
            await engine.wait_for(State.BACKOFF)
        await engine.wait_for(State.LIVE)
        assert len(engine.transitions) == 8
    lines = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    assert len(lines) > 8
    assert [r["seq"] for r in lines if r["region"] == "connection"] == list(
        range(1, 1 + sum(1 for r in lines if r["region"] == "connection"))
    )
    assert lines[-1]["trigger"] == "close"
    assert all(r["wall_time"] for r in lines)  # lined up with other logs by wall clock


async def test_watchers_the_application_dropped_are_pruned(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        kept = engine.watch_transitions()
        for _ in range(50):
            engine.watch_transitions()  # dropped at once
        closed = engine.watch_transitions()
        closed.close()
        gc.collect()
        await engine.wait_for(State.LIVE)
        assert engine.watcher_count == 1
        assert kept.statistics().current_buffer_used > 0


async def test_memory_stays_bounded_over_reconnect_cycles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await reconnect_cycles(warm_up=20, measured=60)


@pytest.mark.soak
async def test_memory_stays_bounded_over_ten_thousand_reconnect_cycles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await reconnect_cycles(warm_up=100, measured=10_000)


#: What one connection creates: none of it may outlive its connection.
PER_CONNECTION = (SyncSession, WebSocketLink, Outbound, TransitionRecord, trio.lowlevel.Task)


def live_objects() -> Counter[str]:
    """Live objects of the kinds a connection creates; tasks only the engine's own (the
    simulator's come and go with trio's scheduling order, which is randomised)."""
    gc.collect()
    found: Counter[str] = Counter()
    for item in gc.get_objects():
        if not isinstance(item, PER_CONNECTION):
            continue
        if isinstance(item, trio.lowlevel.Task) and (
            not item.name.startswith("trio_tradovate.") or ".sim." in item.name
        ):
            continue
        found[type(item).__name__] += 1
    return found


async def reconnect_cycles(*, warm_up: int, measured: int) -> None:
    """Drops of a live, stable connection: nothing a connection creates outlives it, and the
    log stays at ``transition_log_size`` (docs/faults.md, "Bounded memory")."""
    async with open_simulator(SimConfig(seed=3, activity_interval=1000)) as sim:
        config = config_for(sim, transition_log_size=20)
        async with open_engine(config) as engine:

            async def cycle() -> None:
                await engine.wait_for(State.LIVE)
                await trio.sleep(61)  # stable, so the backoff stays short
                await sim.drop_connections()
                await engine.wait_for(State.BACKOFF)

            for _ in range(warm_up):
                await cycle()
            before = live_objects()
            for _ in range(measured):
                await cycle()
            after = live_objects()
            assert len(engine.transitions) == 20
            assert engine.generation == warm_up + measured
        assert after == before, (before, after)
        assert after["SyncSession"] <= 1  # at most the connection that just ended
