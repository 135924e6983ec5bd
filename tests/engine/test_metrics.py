"""Metrics and health: the engine's snapshot, the Prometheus collector, the HTTP endpoints."""

from __future__ import annotations

import math
from functools import partial

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from trio_tradovate import State, open_engine
from trio_tradovate.health import EngineSnapshot, SocketSnapshot
from trio_tradovate.metrics import EngineMetrics
from trio_tradovate.monitoring import answer, serve_monitoring
from trio_tradovate.sim import Simulator

from ..conftest import config_for


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_snapshot_follows_the_engine_through_a_drop(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await trio.sleep(7.0)
        snap = engine.snapshot_metrics()
        assert snap.state is State.LIVE
        [socket] = snap.sockets
        assert socket.state is State.LIVE
        assert 7.0 <= socket.time_in_state < 8.0
        assert snap.ready() == (True, "live")
        assert snap.live() == (True, "running")
        assert snap.token_seconds_left is not None
        assert snap.token_seconds_left > 3000
        assert snap.token_logins == 1
        assert snap.staleness["socket:0"] == socket.last_frame_age
        assert snap.staleness["socket:0"] < 5  # the server's heartbeats keep it fresh
        assert snap.recent[-1].dest is State.LIVE

        sim.refuse_connections(until=trio.current_time() + 30)
        await sim.drop_connections()
        await trio.sleep(1.0)
        down = engine.snapshot_metrics()
        ready, why = down.ready()
        assert not ready
        assert why.startswith("socket 0 is ")
        assert down.live() == (True, "running")
        assert down.counters["fault.dropped"] == 1
        await engine.wait_for(State.LIVE)
        again = engine.snapshot_metrics()
        assert again.counters["reconnects"] >= 1
        assert again.sockets[0].generation > socket.generation
    stopped = engine.snapshot_metrics()
    assert stopped.live() == (False, "engine stopped: application closed the engine")


async def test_freshness_hook_feeds_staleness_and_readiness(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        engine.freshness.touch("quotes:ESZ6", trio.current_time())
        await trio.sleep(10.0)
        snap = engine.snapshot_metrics()
        assert math.isclose(snap.staleness["quotes:ESZ6"], 10.0, abs_tol=0.01)
        assert snap.ready(max_staleness=60) == (True, "live")
        assert snap.ready(max_staleness=5) == (False, "quotes:ESZ6 delivered nothing for 10.0 s")
        engine.freshness.forget("quotes:ESZ6")
        assert "quotes:ESZ6" not in engine.snapshot_metrics().staleness


async def test_prometheus_exposition_names_and_values(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        metrics = EngineMetrics(engine.snapshot_metrics)
        await engine.wait_for(State.LIVE)
        await sim.drop_connections()
        await trio.sleep(0.1)
        await engine.wait_for(State.LIVE)
        async for _ in engine.events():
            metrics.latency.observe_engine(engine)
            break
        body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    samples = _samples(body.decode())
    live = (("socket", "0"), ("state", "live"))
    backoff = (("socket", "0"), ("state", "backoff"))
    assert samples[("tradovate_socket_state", live)] == 1
    assert samples[("tradovate_socket_state", backoff)] == 0
    assert samples[("tradovate_reconnects_total", ())] == 1
    assert samples[("tradovate_faults_total", (("kind", "dropped"),))] == 1
    assert samples[("tradovate_frames_received_total", ())] > 0
    assert samples[("tradovate_events_total", ())] == engine.counters["props_events"]
    assert samples[("tradovate_ready", ())] == 1
    assert samples[("tradovate_live", ())] == 1
    assert samples[("tradovate_penalty_locked_out", ())] == 0
    assert samples[("tradovate_token_seconds_left", ())] > 0
    assert samples[("tradovate_delivery_latency_seconds_count", ())] == 1
    assert ("tradovate_staleness_seconds", (("feed", "socket:0"),)) in samples
    assert ("tradovate_feed_waiting", ()) in samples
    assert ("tradovate_request_queue_depth", ()) in samples


def _fixed(state: State = State.BACKOFF, locked: bool = False) -> EngineSnapshot:
    return EngineSnapshot(
        taken_at=100.0,
        wall_time="2026-12-07T12:00:00+00:00",
        state=state,
        sockets=(SocketSnapshot(0, state, state.value, 3, 4.5, 2, 4.5),),
        counters={"frames_received": 10, "props_events": 7, "reconnects": 2, "fault.stalled": 2},
        delivery={"waiting": 0, "high_water": 5, "coalesced": 0},
        queued_requests=1,
        locked_out=locked,
        lockout_seconds_left=1800.0 if locked else 0.0,
        token_renewals=0,
        token_logins=1,
        token_seconds_left=4000.0,
        staleness={"socket:0": 4.5},
    )


def test_health_answers_with_the_reason() -> None:
    assert answer("/healthz/live", _fixed, None) == (
        200,
        b"running\n",
        "text/plain; charset=utf-8",
    )
    status, body, _ = answer("/healthz/ready", _fixed, None)
    assert (status, body) == (503, b"socket 0 is backoff (for 4.5 s)\n")
    locked = answer("/healthz/ready", lambda: _fixed(State.LIVE, locked=True), None)
    assert locked[:2] == (503, b"penalty lockout: 1800 s left\n")
    assert answer("/healthz/ready", lambda: _fixed(State.LIVE), None)[:2] == (200, b"live\n")
    stopped = answer("/healthz/live", lambda: _fixed(State.STOPPED), None)
    assert stopped[:2] == (503, b"engine stopped: closed\n")
    assert answer("/metrics", _fixed, None)[0] == 404  # no metrics extra given
    assert answer("/nope", _fixed, None)[0] == 404


@pytest.mark.loopback
async def test_endpoints_over_http_on_loopback() -> None:
    metrics = EngineMetrics(_fixed)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_monitoring(
                _fixed, 0, metrics=metrics.exposition, task_status=task_status
            )
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ready = await client.get("/healthz/ready")
            live = await client.get("/healthz/live")
            scraped = await client.get("/metrics")
            posted = await client.post("/metrics")
        nursery.cancel_scope.cancel()
    assert (ready.status_code, ready.text) == (503, "socket 0 is backoff (for 4.5 s)\n")
    assert (live.status_code, live.text) == (200, "running\n")
    assert posted.status_code == 405
    samples = _samples(scraped.text)
    assert samples[("tradovate_faults_total", (("kind", "stalled"),))] == 2
    assert samples[("tradovate_socket_time_in_state_seconds", (("socket", "0"),))] == 4.5
    assert samples[("tradovate_ready", ())] == 0


async def test_penalties_and_lockouts_show_in_snapshot_metrics_and_readiness(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    from trio_tradovate import RateLimited

    async with open_engine(config_for(sim)) as engine:
        metrics = EngineMetrics(engine.snapshot_metrics)
        await engine.wait_for(State.LIVE)
        sim.penalize_requests(endpoint="account/list", p_time=20.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(engine.request, "account/list", timeout=60))
            await trio.sleep(5.0)
            paused = engine.snapshot_metrics()
        assert paused.penalties == 1
        assert 14.0 <= paused.pause_seconds_left <= 16.0
        sim.rate_limit_429(endpoint="account/list")
        with pytest.raises(RateLimited):
            await engine.request("account/list")
        locked = engine.snapshot_metrics()
        assert locked.locked_out
        assert locked.lockouts == 1
        assert locked.ready() == (False, "penalty lockout: 3600 s left")
        samples = _samples(metrics.exposition()[0].decode())
    assert samples[("tradovate_penalty_locked_out", ())] == 1
    assert samples[("tradovate_lockouts_total", ())] == 1
    assert samples[("tradovate_penalties_total", ())] == 1
    assert samples[("tradovate_ready", ())] == 0
