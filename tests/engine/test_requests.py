"""Requests end to end: penalties, lockouts, priorities, pacing, reconnects."""

from __future__ import annotations

import itertools
from contextlib import suppress
from pathlib import Path

import orjson
import pytest
import trio

from trio_tradovate import (
    CaptchaRequired,
    ConnectionLost,
    Engine,
    RateLimited,
    RequestError,
    State,
    Window,
    open_engine,
)
from trio_tradovate.sim import SimConfig, Simulator, open_simulator

from ..conftest import config_for


async def test_p_ticket_is_waited_out_and_resent_with_its_ticket(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        sim.penalize_requests(endpoint="contract/find", p_time=6)
        start = trio.current_time()
        contract = await engine.request("contract/find", query={"name": "MESZ6"}, timeout=60)
        assert contract["name"] == "MESZ6"
        assert trio.current_time() - start >= 6
    [audit] = sim.sockets
    [penalty] = audit.penalties
    [retry] = audit.retries
    assert retry.accepted
    assert retry.ticket == penalty.ticket
    assert retry.id != penalty.id  # a new request id for the resend (docs/protocol.md §8)
    assert retry.elapsed is not None
    assert 6 <= retry.elapsed < 7
    finds = [r for r in audit.requests if r.endpoint == "contract/find"]
    assert [r.query for r in finds] == ["name=MESZ6", "name=MESZ6"]


async def test_penalty_pauses_requests_but_never_heartbeats(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        sim.penalize_requests(endpoint="contract/find", p_time=20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: engine.request("contract/find", query="name=MESZ6", timeout=60)
            )
            await trio.sleep(1)  # the penalty arrives; the pause begins
            penalised_at = trio.current_time()
            accounts = await engine.request("account/list", timeout=60)
            assert accounts
            assert trio.current_time() - penalised_at >= 18  # waited behind the pause
    beats = sim.sockets[0].client_heartbeats
    assert max(b - a for a, b in itertools.pairwise(beats)) <= 2.5 + 1e-6


async def test_captcha_fails_the_request_and_locks_out_non_essential_requests(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        watcher = engine.watch_transitions()
        sim.penalize_requests(endpoint="contract/find", captcha=True)
        with pytest.raises(CaptchaRequired):
            await engine.request("contract/find", query="name=MESZ6")
        record = await watcher.receive()
        assert (record.region, record.trigger) == ("penalty", "lockout_began")
        assert (record.source_node, record.dest_node) == ("clear", "locked_out")
        assert record.reason.startswith("captcha")
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(600):
                await engine.request("account/list", timeout=3000)
        # a cancellation is essential: it goes out (and is answered) during the lockout
        with suppress(RequestError):
            await engine.request("order/cancelorder", body={"orderId": 1}, timeout=60)
    sent = [r.endpoint for r in sim.sockets[0].requests]
    assert "order/cancelorder" in sent
    assert "account/list" not in sent


async def test_429_locks_out_and_the_lockout_survives_a_restart(
    sim: Simulator, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    state_file = tmp_path / "penalty.json"
    config = config_for(sim, penalty_state_file=state_file, lockout_seconds=3600)
    async with open_engine(config) as engine:
        await engine.wait_for(State.LIVE)
        sim.rate_limit_429(endpoint="account/list")
        with pytest.raises(RateLimited):
            await engine.request("account/list")
    saved = orjson.loads(state_file.read_bytes())
    assert saved["lockout_reason"] == "429"
    await trio.sleep(600)
    async with open_engine(config) as restarted:  # a new process would read the same file
        await restarted.wait_for(State.LIVE)
        [began] = [r for r in restarted.transitions if r.trigger == "lockout_began"]
        assert began.time == trio.current_time() or began.time < 700  # told when it starts
        assert "earlier run" in began.reason
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(1000):
                await restarted.request("account/list", timeout=5000)
        await trio.sleep(3600)
        assert await restarted.request("account/list")  # the lockout ended ~1 h after the 429
        [ended] = [r for r in restarted.transitions if r.trigger == "lockout_ended"]
        assert (ended.source_node, ended.dest_node) == ("locked_out", "clear")
        assert 3600 <= ended.time <= 3600 + 60  # its end is recorded too
    lists = [r for a in sim.sockets for r in a.requests if r.endpoint == "account/list"]
    assert len(lists) == 2  # the 429'd one and the one after the lockout


async def test_cancel_goes_out_before_a_thousand_queued_queries(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async def call(engine: Engine, endpoint: str, body: object = None) -> None:
        with suppress(RequestError):  # cancelling an unknown order is refused: fine here
            await engine.request(endpoint, body=body, timeout=600)

    sim.refuse_connections(until=trio.current_time() + 30)
    async with open_engine(config_for(sim)) as engine:
        async with trio.open_nursery() as nursery:
            # queued while the engine cannot connect: nothing can go out yet
            for _ in range(1000):
                nursery.start_soon(call, engine, "account/list")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, engine, "order/cancelorder", {"orderId": 42})
        assert engine.generation > 1
    sent = [r.endpoint for r in sim.sockets[-1].requests]
    assert sent[:3] == ["authorize", "user/syncrequest", "order/cancelorder"]
    assert sent.count("account/list") == 1000


async def test_a_burst_of_500_completes_without_a_penalty(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    results: list[object] = []
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)

        async def one() -> None:
            results.append(await engine.request("account/list", timeout=120))

        async with trio.open_nursery() as nursery:
            for _ in range(500):
                nursery.start_soon(one)
    assert len(results) == 500
    assert sim.sockets[0].penalties == []
    assert sim.sockets[0].refused_429 == []


async def test_read_only_request_is_resent_on_the_next_socket(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        sim.stall()  # the request is sent into a half-open socket

        async def unstall_later() -> None:
            await trio.sleep(15)
            sim.stall(False)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(unstall_later)
            accounts = await engine.request("account/list", timeout=120)
        assert accounts
        assert engine.generation >= 2
    first, *rest = sim.sockets
    assert "account/list" in [r.endpoint for r in first.requests]
    assert any("account/list" in [r.endpoint for r in a.requests] for a in rest)


async def test_wait_false_fails_fast_when_not_live(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    sim.refuse_connections(until=trio.current_time() + 60)
    async with open_engine(config_for(sim)) as engine:
        start = trio.current_time()
        with pytest.raises(ConnectionLost, match="not live"):
            await engine.request("account/list", wait=False)
        assert trio.current_time() == start


async def test_syncrequests_are_paced_by_their_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(SimConfig(seed=5, activity_interval=None)) as sim:
        limits = {"*": (Window(50, 1.0),), "user/syncrequest": (Window(2, 600.0),)}
        async with open_engine(config_for(sim, rate_limits=limits)) as engine:
            for _ in range(2):
                await engine.wait_for(State.LIVE)
                await sim.drop_connections()
                await engine.wait_for(State.BACKOFF)
            authorized = await engine.wait_for(State.SYNCING)
            assert "(rate budget)" in authorized.reason
            live = await engine.wait_for(State.LIVE)
        syncs = [
            r.time for a in sim.sockets for r in a.requests if r.endpoint == "user/syncrequest"
        ]
        assert len(syncs) == 3
        assert syncs[2] - syncs[0] >= 600 - 1e-6
        assert live.time >= syncs[2]
