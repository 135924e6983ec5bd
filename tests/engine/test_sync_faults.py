"""Faults around the one syncrequest per socket, and the remaining fault kinds."""

from __future__ import annotations

import orjson
import pytest
import trio

from trio_tradovate import State, SyncOptions, open_engine
from trio_tradovate.sim import Simulator

from ..conftest import config_for


async def test_a_penalised_sync_is_resent_on_the_next_socket_with_its_ticket(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    sim.penalize_requests(endpoint="user/syncrequest", p_time=12)
    async with open_engine(config_for(sim)) as engine:
        lost = await engine.wait_for(State.BACKOFF)
        assert lost.reason.startswith("sync_penalized")
        retry = await engine.wait_for(State.CONNECTING)
        assert retry.time - lost.time >= 12
        await engine.wait_for(State.LIVE)
    first, second = sim.sockets
    assert first.syncrequest_count <= 1
    assert second.syncrequest_count == 1
    [penalty] = first.penalties
    [resend] = [r for r in second.requests if r.endpoint == "user/syncrequest"]
    assert orjson.loads(resend.body)["p-ticket"] == penalty.ticket
    assert second.retries[0].accepted


async def test_a_rate_limited_sync_waits_out_the_lockout(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    sim.rate_limit_429(endpoint="user/syncrequest")
    async with open_engine(config_for(sim, lockout_seconds=1800)) as engine:
        lost = await engine.wait_for(State.BACKOFF)
        assert lost.reason.startswith("sync_rate_limited")
        retry = await engine.wait_for(State.CONNECTING)
        assert retry.time - lost.time >= 1800  # requests during a 429 lockout extend it
        await engine.wait_for(State.LIVE)
    assert len(sim.sockets) == 2


async def test_a_frame_over_max_message_size_is_a_protocol_error(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim, max_message_size=4096)) as engine:
        lost = await engine.wait_for(State.BACKOFF)  # the snapshot alone is bigger
    assert lost.reason.startswith("protocol_error")
    assert "1009" in lost.reason


async def test_an_unknown_shutdown_reason_reconnects_by_the_backoff(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await sim.shutdown("SomethingNew")
        lost = await engine.wait_for(State.BACKOFF)
        retry = await engine.wait_for(State.CONNECTING)
    assert lost.reason.startswith("shutdown: server shutdown: SomethingNew")
    assert retry.time - lost.time <= 10.0


async def test_a_rejected_websocket_upgrade_is_named(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_for(sim, ws_url="wss://demo.tradovateapi.com/v1/not-the-websocket")
    async with open_engine(config) as engine:
        failed = await engine.wait_for(State.BACKOFF)
    assert failed.reason.startswith("handshake_rejected")
    assert "404" in failed.reason


@pytest.mark.parametrize("reason_code", ["ConnectionQuotaReached", "IPQuotaReached"])
async def test_quota_shutdowns_are_told_through_the_transition_log(
    reason_code: str, sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        watcher = engine.watch_transitions()
        await sim.shutdown(reason_code)
        record = await watcher.receive()
    assert record.dest is State.BACKOFF
    assert reason_code in record.reason


@pytest.mark.parametrize(("split", "lockout"), [(True, True), (False, False)])
async def test_a_late_429_to_the_sync_locks_out_and_keeps_the_socket(
    split: bool, lockout: bool, sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """After the snapshot, a 429 with the syncrequest's id keeps the socket up (the table
    ignores it there). On a split-sync socket it is an answer to our request, so the lockout
    starts; on another it is a second answer nobody asked for, and changes nothing."""
    config = config_for(sim, sync=SyncOptions(split_responses=split))
    async with open_engine(config) as engine:
        await engine.wait_for(State.LIVE)
        sim.inject_frame('a[{"i":1,"s":429}]')  # the sync is the socket's second request
        await trio.sleep(2)
        assert engine.state is State.LIVE
        assert engine.generation == 1
        began = [r for r in engine.transitions if r.trigger == "lockout_began"]
        assert bool(began) is lockout
        assert engine.counters["fault.sync_rate_limited"] == int(lockout)
