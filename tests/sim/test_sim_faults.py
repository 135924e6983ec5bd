"""Deterministic fault controls: drop, stall, close frame, shutdown, refuse, ignore authorize."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.sim.rawclient import apply_events, apply_snapshot, open_raw
from trio_tradovate.transport import Connector

QUIET = SimConfig(activity_interval=None)


async def test_drop_is_abrupt_without_close_frame() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        await sim.drop_connections()
        await client.until_closed()
        assert client.ws.closed is not None
        assert client.ws.closed.code == 1006
        assert not any(f.startswith("c") for f in client.frames)
        assert sim.sockets[0].close_reason == "dropped"
        assert sim.sockets[0].frames_sent["c"] == 0


async def test_stall_sends_nothing_then_resumes(autojump_clock: trio.testing.MockClock) -> None:
    config = SimConfig(activity_interval=1.0, client_heartbeat_timeout=1000.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        await client.call("user/syncrequest", 1, "", f'{{"users":[{sim.user_id}]}}')
        sim.stall()
        sent_before = sum(sim.sockets[0].frames_sent.values())
        truth_before = sim.truth()
        with trio.move_on_after(30):
            await client.send("[]")
            await client.send("account/list\n2\n\n")
            frame = await client.recv()
            pytest.fail(f"stalled socket sent {frame!r}")
        assert sum(sim.sockets[0].frames_sent.values()) == sent_before
        assert sim.truth() != truth_before  # the world kept moving
        assert sim.sockets[0].close_reason is None
        assert sim.sockets[0].requests[-1].endpoint == "account/list"  # it kept reading
        sim.stall(False)
        with trio.fail_after(3):
            assert (await client.recv())[0] in "ah"


async def test_stall_overrides_timeouts(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        sim.stall()
        with trio.move_on_after(100):
            await client.recv()
            pytest.fail("stalled socket sent a frame")
        assert sim.sockets[0].close_reason is None
        sim.stall(False)
        frames = await client.until_closed()
        assert frames[-1] == 'c[3000,"Go away!"]'
        assert sim.sockets[0].close_reason == "auth timeout"


async def test_close_connections_sends_close_frame_then_ws_close() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        await sim.close_connections(4001, "bye")
        frames = await client.until_closed()
        assert frames[-1] == 'c[4001,"bye"]'
        assert client.ws.closed is not None
        assert client.ws.closed.code == 1000
        assert sim.sockets[0].close_reason == "close frame"


async def test_shutdown_event_then_close() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        await sim.shutdown("ConnectionQuotaReached", "too many")
        frames = await client.until_closed()
        assert orjson.loads(frames[-2][1:]) == [
            {"e": "shutdown", "d": {"reasonCode": "ConnectionQuotaReached", "reason": "too many"}}
        ]
        assert frames[-1].startswith("c[")
        assert sim.sockets[0].close_reason == "shutdown"


async def test_refuse_connections_until(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim:
        connect: Connector = sim.connector()  # structurally a transport.Connector
        sim.refuse_connections(trio.current_time() + 5)
        with pytest.raises(ConnectionRefusedError):
            await connect("demo.tradovateapi.com", 443, tls=True)
        await trio.sleep(5)
        async with open_raw(sim) as client:
            assert (await client.authorize(sim.issue_token()))["s"] == 200
        sim.refuse_connections(10**9)
        with pytest.raises(OSError, match="refuses"):
            await connect("demo.tradovateapi.com", 443, tls=True)
        sim.refuse_connections(None)
        async with open_raw(sim):
            pass
        assert len(sim.sockets) == 2


async def test_ignore_authorize_then_auth_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        sim.ignore_authorize()
        await client.request("authorize", 0, "", sim.issue_token())
        frames = await client.until_closed()
        assert all(f in ("h", 'c[3000,"Go away!"]') for f in frames)
        audit = sim.sockets[0]
        assert audit.auth_attempts == [(audit.requests[0].time, None)]
        assert audit.close_reason == "auth timeout"
        sim.ignore_authorize(False)
        async with open_raw(sim) as again:
            assert (await again.authorize(sim.issue_token()))["s"] == 200


async def test_a_short_stall_delays_frames_but_never_loses_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """TCP semantics: a path that recovers delivers what was written meanwhile, in order."""
    config = SimConfig(activity_interval=1.0, client_heartbeat_timeout=1000.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call("user/syncrequest", 1, "", f'{{"users":[{sim.user_id}]}}')
        state = apply_snapshot(reply["d"])
        sim.stall()
        await trio.sleep(20)  # the world moves on while nothing is written
        truth = sim.truth()
        assert state != truth
        sim.stall(False)
        sim.pause_activity()
        await client.call("account/list", 2)  # every held frame arrives before this answer
        apply_events(state, client.events)
        assert state == truth == sim.truth()
