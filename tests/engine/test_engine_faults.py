"""Faults the engine must survive, each injected by the simulator, in virtual time."""

from __future__ import annotations

import itertools
import os
import signal

import orjson
import pytest
import trio

from trio_tradovate import (
    AuthenticationError,
    BackoffPolicy,
    EngineStopped,
    OutcomeUnknown,
    RequestTimeout,
    State,
    open_engine,
)
from trio_tradovate.cli import run_stream
from trio_tradovate.sim import Simulator

from ..conftest import config_for, settle


class TrackedStream(trio.abc.Stream):
    """Delegates to a stream and remembers whether the engine closed it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


class TrackingConnector:
    def __init__(self, sim: Simulator) -> None:
        self.inner = sim.connector()
        self.streams: list[TrackedStream] = []

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        stream = TrackedStream(await self.inner(host, port, tls=tls))
        self.streams.append(stream)
        return stream


async def test_close_frame_then_recovery(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await sim.close_connections(3000, "Go away!")
        record = await engine.wait_for(State.BACKOFF)
        assert record.reason == "closed_by_server: closed by server: code 3000 'Go away!'"
        await engine.wait_for(State.LIVE)
        await settle(sim)
        assert engine.store.as_dict() == sim.truth()


async def test_shutdown_event_then_recovery(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await sim.shutdown("Maintenance", "weekly restart")
        record = await engine.wait_for(State.BACKOFF)
        assert record.reason.startswith("shutdown: server shutdown: Maintenance")
        await engine.wait_for(State.LIVE)
    assert [a.syncrequest_count for a in sim.sockets] == [1, 1]


async def test_authorize_unanswered_is_an_auth_timeout(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    sim.ignore_authorize()
    async with open_engine(config_for(sim, auth_timeout=4)) as engine:
        sent = await engine.wait_for(State.AUTHENTICATING)
        record = await engine.wait_for(State.BACKOFF)
        assert record.reason.startswith("auth_timeout")
        assert record.time - sent.time == pytest.approx(4)
        sim.ignore_authorize(False)
        await engine.wait_for(State.LIVE)


async def test_no_reconnect_storm_while_the_server_is_down(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        down_at = trio.current_time()
        sim.refuse_connections(until=down_at + 600)
        await sim.drop_connections()
        await trio.sleep(600)
        attempts = [r.time for r in engine.transitions if r.trigger == "retry"]
        await engine.wait_for(State.LIVE)
        back = engine.transitions[-1].time
    assert attempts[0] - down_at <= 1.0  # the first retry comes within a second
    per_minute = [
        sum(1 for t in attempts if m * 60 <= t - down_at < (m + 1) * 60) for m in range(10)
    ]
    assert max(per_minute[2:]) <= 8, per_minute  # capped at 30 s: ~4 a minute, never a storm
    assert all(b - a <= 30.0 for a, b in itertools.pairwise(attempts))
    assert back - (down_at + 600) <= 30.0 + 5.0  # reconnects within one capped delay
    assert engine.counters["fault.dropped"] == 1
    assert len(attempts) - 1 <= engine.counters["fault.refused"] <= len(attempts)
    assert len(attempts) <= 60  # a 1 s fixed retry would have made 600


async def test_retry_budget_stops_with_the_reason(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_for(sim, backoff=BackoffPolicy(retry_budget=3))
    async with open_engine(config) as engine:
        await engine.wait_for(State.LIVE)
        sim.refuse_connections(until=trio.current_time() + 3600)
        await sim.drop_connections()
        await engine.wait_for(State.BACKOFF)
        with pytest.raises(EngineStopped) as info:
            await engine.wait_for(State.LIVE)
    assert info.value.reason.startswith("refused")
    assert [r.trigger for r in engine.transitions if r.dest is State.BACKOFF] == [
        "lost",
        "connect_failed",
    ]
    assert engine.transitions[-1].trigger == "connect_failed"


async def test_first_retry_after_a_stable_period_is_fast_flapping_grows(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_for(sim, backoff=BackoffPolicy(initial=1, cap=30, stable_after=60))
    async with open_engine(config) as engine:
        for _ in range(6):  # a server that drops every socket right after sync: attempts add up
            await engine.wait_for(State.LIVE)
            await sim.drop_connections()
            await engine.wait_for(State.BACKOFF)
        assert engine.shards[0].failed_attempts == 6
        await engine.wait_for(State.LIVE)
        await trio.sleep(61)  # stable now
        await sim.drop_connections()
        lost = await engine.wait_for(State.BACKOFF)
        assert engine.shards[0].failed_attempts == 1
        retry = await engine.wait_for(State.CONNECTING)
        assert retry.reason.endswith("(attempt 1, first attempt after a stable connection)")
        assert retry.time - lost.time <= 10.0


async def test_owned_stream_is_closed_on_every_exit_path(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    connector = TrackingConnector(sim)
    async with open_engine(config_for(sim, connector=connector)) as engine:
        await engine.wait_for(State.LIVE)
        await sim.drop_connections()  # path 1: TCP drop
        await engine.wait_for(State.BACKOFF)
        await engine.wait_for(State.LIVE)
        await sim.close_connections()  # path 2: close frame
        await engine.wait_for(State.BACKOFF)
        await engine.wait_for(State.LIVE)
        sim.stall()  # path 3: watchdog
        await engine.wait_for(State.BACKOFF)
        sim.stall(False)
        await engine.wait_for(State.LIVE)
    # path 4: the application leaves the block
    assert len(connector.streams) == 4
    assert all(stream.closed for stream in connector.streams)


async def test_invalid_token_error_is_the_cause(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_for(sim, credentials=None, access_token="bogus", user_id=sim.user_id)
    async with open_engine(config) as engine:
        with pytest.raises(EngineStopped) as info:
            await engine.wait_for(State.LIVE)
    assert isinstance(info.value.error, AuthenticationError)
    assert info.value.error.status == 401
    assert info.value.__cause__ is info.value.error


async def test_request_timeout_and_outcome_unknown(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        sim.stall()
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await engine.request("account/list", timeout=2)
        assert trio.current_time() - start == pytest.approx(2)
        accounts = [k[1] for k in sim.truth() if k[0] == "account"]
        order = {
            "accountId": accounts[0],
            "action": "Buy",
            "symbol": "MESZ6",
            "orderQty": 1,
            "orderType": "Market",
            "isAutomated": True,
        }
        with pytest.raises(OutcomeUnknown) as info:
            await engine.request("order/placeorder", body=order, timeout=60)
        assert info.value.endpoint == "order/placeorder"
        sim.stall(False)
        await engine.wait_for(State.LIVE)
        placed = [r for a in sim.sockets for r in a.requests if r.endpoint == "order/placeorder"]
        assert len(placed) <= 1  # never re-sent


async def test_stream_command_exits_zero_on_sigterm(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    import io

    out = io.StringIO()
    result: list[int] = []

    async def run() -> None:
        result.append(await run_stream(config_for(sim), out))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await sim_socket_synced(sim)
        await trio.sleep(1)  # the engine applies the snapshot and goes live
        assert '"dest":"live"' in out.getvalue()
        os.kill(os.getpid(), signal.SIGTERM)
    assert result == [0]
    last = orjson.loads(out.getvalue().splitlines()[-1])
    assert (last["dest"], last["reason"]) == ("stopped", "application closed the engine")


async def sim_socket_synced(sim: Simulator) -> None:
    """Wait (in virtual time) until the simulator has answered a syncrequest."""
    with trio.fail_after(60):
        while not (sim.sockets and sim.sockets[-1].syncrequest_count):  # noqa: ASYNC110
            await trio.sleep(0.1)


@pytest.mark.parametrize(
    ("code", "minimum"),
    [("ConnectionQuotaReached", 900.0), ("IPQuotaReached", 1800.0)],
)
async def test_shutdown_reason_sets_the_wait(
    code: str,
    minimum: float,
    sim: Simulator,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await sim.shutdown(code)
        lost = await engine.wait_for(State.BACKOFF)
        retry = await engine.wait_for(State.CONNECTING)
        await engine.wait_for(State.LIVE)
    waited = retry.time - lost.time
    assert minimum <= waited <= minimum * 1.25
    assert f"shutdown policy {code}" in retry.reason
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(code in message for message in errors)
    assert any("evict" in message for message in errors)


async def test_maintenance_shutdown_reconnects_within_ten_seconds_then_backs_off(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """Stage 2: reconnection attempted within 10 s of a disconnection, also after
    ``shutdown`` with ``Maintenance``; refused attempts after it use the normal backoff."""
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await trio.sleep(61)  # a stable connection
        sim.refuse_connections(until=trio.current_time() + 40)
        await sim.shutdown("Maintenance", "weekly restart")
        lost = await engine.wait_for(State.BACKOFF)
        first = await engine.wait_for(State.CONNECTING)
        assert first.time - lost.time <= 10.0
        assert "shutdown policy" not in first.reason
        await engine.wait_for(State.LIVE)
    retries = [r for r in engine.transitions if r.trigger == "retry"]
    assert len(retries) >= 3
    assert "first attempt after a stable connection" in retries[0].reason
    # the refused attempts after it back off: each wait in [c/2, c] with c doubling, so the
    # waits never shrink and the later ones say so
    gaps = [b.time - a.time for a, b in itertools.pairwise(retries)]
    assert gaps == sorted(gaps)
    assert all("exponential backoff" in r.reason for r in retries[1:])


async def test_a_server_that_syncs_then_drops_every_socket_gets_a_bounded_attempt_rate(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """Flapping is not a storm: live-but-unstable connections keep the attempt count growing,
    so after the first minute at most 6 attempts fall in any 60 s (docs/faults.md)."""
    async with open_engine(config_for(sim)) as engine:
        for _ in range(20):
            await engine.wait_for(State.LIVE)
            await sim.drop_connections()
            await engine.wait_for(State.BACKOFF)
        assert engine.shards[0].failed_attempts == 20
    starts = [r.time for r in engine.transitions if r.trigger == "retry"]
    first_minute = starts[0] + 60
    for index, start in enumerate(starts):
        if start >= first_minute:
            assert sum(1 for t in starts[index:] if t < start + 60) <= 6
