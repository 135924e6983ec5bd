"""The market-replay socket of the simulator: replay/* requests, the clock event (whose ``d`` is a
JSON string), speed and throttling, and market data plus user sync on one socket."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, apply_fault, open_simulator, open_simulator_server
from trio_tradovate.sim.rawclient import (
    MD_HOST,
    REPLAY_HOST,
    RawClient,
    apply_events,
    apply_snapshot,
    open_raw,
    open_raw_url,
)

QUIET = SimConfig(seed=4, activity_interval=None)
START = "2026-01-05T10:00:00.000Z"


def js(value: object) -> str:
    return orjson.dumps(value).decode()


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def clock(client: RawClient) -> dict[str, Any]:
    """The next clock event's payload, parsed from its JSON-string ``d``."""
    event = await client.event("clock")
    assert isinstance(event["d"], str)
    payload: dict[str, Any] = orjson.loads(event["d"])
    return payload


async def start_replay(client: RawClient, token: str, speed: float = 1) -> None:
    assert (await client.authorize(token))["s"] == 200
    body = js({"startTimestamp": START, "speed": speed, "initialBalance": 50_000})
    assert await client.call("replay/initializeClock", 1, "", body) == {
        "i": 1,
        "s": 200,
        "d": {"ok": True},
    }


async def test_check_replay_session_answers_ok_inside_history_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, REPLAY_HOST) as client:
        await client.authorize(sim.issue_token())
        cases = {
            START: "OK",
            "2026-01-03T00:00:00Z": "OK",  # the first replayable moment (two days of history)
            "2026-01-02T23:59:59Z": "Ineligible",
            "2026-02-01T00:00:00Z": "Ineligible",  # the future
        }
        for rid, (stamp, status) in enumerate(cases.items(), start=1):
            reply = await client.call(
                "replay/checkReplaySession", rid, "", js({"startTimestamp": stamp})
            )
            assert reply == {"i": rid, "s": 200, "d": {"checkStatus": status}}
        bad = await client.call("replay/checkReplaySession", 9, "", js({"startTimestamp": 5}))
        assert bad["s"] == 400
        assert sim.sockets[0].role == "replay"


async def test_market_data_needs_an_initialized_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, REPLAY_HOST) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call("md/subscribeQuote", 1, "", js({"symbol": "ESZ6"}))
        assert reply == {"i": 1, "s": 400, "d": "Initialize the replay clock first"}
        assert [(r.endpoint, r.status) for r in sim.md_requests] == [("md/subscribequote", 400)]
        speed = await client.call("replay/changeSpeed", 2, "", js({"speed": 5}))
        assert speed["s"] == 400
        for body in (
            {"startTimestamp": START, "speed": 401},
            {"startTimestamp": START, "speed": True},
            {"startTimestamp": "2030-01-01T00:00:00Z", "speed": 1},
            {"startTimestamp": START, "speed": 1, "initialBalance": "lots"},
        ):
            assert (await client.call("replay/initializeClock", 3, "", js(body)))["s"] == 400


async def test_clock_events_carry_a_json_string_and_run_at_the_speed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, REPLAY_HOST, heartbeat=2.5) as client:
        await start_replay(client, sim.issue_token(), speed=10)
        first = await clock(client)
        assert first == {"t": START, "s": 10}
        began = trio.current_time()
        ticks: list[dict[str, Any]] = []
        with trio.move_on_after(5):
            while True:
                ticks.append(await clock(client))
        latest = ticks[-1]
        assert [c["s"] for c in ticks] == [10] * len(ticks)
        assert len(ticks) >= 4
        elapsed = seconds(latest["t"]) - seconds(START)
        assert elapsed == pytest.approx((trio.current_time() - began) * 10, abs=10)
        assert elapsed >= 40
        times = [seconds(c["t"]) for c in ticks]
        assert times == sorted(times)
        await client.call("replay/changeSpeed", 2, "", js({"speed": 400}))
        assert (await clock(client))["s"] == 400


async def test_throttled_clock_stops_until_change_speed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, REPLAY_HOST, heartbeat=2.5) as client:
        await start_replay(client, sim.issue_token(), speed=2)
        await clock(client)
        await apply_fault(sim, {"kind": "throttle_replay"})
        client.events.clear()
        stopped = await clock(client)
        assert stopped["s"] == 0
        await trio.sleep(5)
        later = [orjson.loads(e["d"]) for e in client.events if e["e"] == "clock"]
        later.append(await clock(client))
        assert {c["t"] for c in later} == {stopped["t"]}
        assert {c["s"] for c in later} == {0}
        await client.call("replay/changeSpeed", 2, "", js({"speed": 1}))
        client.events.clear()
        resumed = await clock(client)
        while resumed["t"] == stopped["t"]:
            resumed = await clock(client)
        assert resumed["s"] == 1
        assert seconds(resumed["t"]) > seconds(stopped["t"])


async def test_replay_quotes_are_the_market_at_replay_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(QUIET) as sim,
        open_raw(sim, REPLAY_HOST, heartbeat=2.5) as replay,
        open_raw(sim, MD_HOST, heartbeat=2.5) as md,
    ):
        await start_replay(replay, sim.issue_token(), speed=1)
        await replay.call("md/subscribeQuote", 2, "", js({"symbol": "ESZ6"}))
        quotes: list[dict[str, Any]] = []
        while len(quotes) < 5:
            quotes.extend((await replay.event("md"))["d"]["quotes"])
        stamps = [seconds(q["timestamp"]) for q in quotes]
        assert seconds(START) <= stamps[0] < stamps[-1] <= seconds(START) + 10
        # The same moments, asked of the live market-data socket as tick history.
        await md.authorize(sim.issue_token())
        chart = {
            "symbol": "ESZ6",
            "chartDescription": {"underlyingType": "Tick", "elementSize": 1},
            "timeRange": {"asFarAsTimestamp": START, "closestTimestamp": quotes[-1]["timestamp"]},
        }
        await md.call("md/getChart", 1, "", js(chart))
        packet = (await md.event("chart"))["d"]["charts"][0]
        ticks = {
            packet["bt"] + t["t"]: (packet["bp"] + t["p"]) * packet["ts"] for t in packet["tks"]
        }
        for quote in quotes:
            stamp = round(seconds(quote["timestamp"]) * 1000)
            assert quote["entries"]["Trade"]["price"] == ticks[stamp]


async def test_replay_socket_also_carries_user_sync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(SimConfig(seed=4, activity_interval=1.0)) as sim,
        open_raw(sim, REPLAY_HOST, heartbeat=2.5) as client,
    ):
        await start_replay(client, sim.issue_token())
        reply = await client.call("user/syncrequest", 2, "", js({"users": [sim.user_id]}))
        state = apply_snapshot(reply["d"])
        await client.call("md/subscribeQuote", 3, "", js({"symbol": "NQZ6"}))
        await trio.sleep(5)
        sim.pause_activity()
        with trio.move_on_after(2):
            while True:
                await client.recv()
        for frame in client.frames:
            if frame.startswith("a"):
                client.events.extend(m for m in orjson.loads(frame[1:]) if "e" in m)
        kinds = {e["e"] for e in client.events}
        assert {"props", "md", "clock"} <= kinds
        apply_events(state, client.events)
        assert state == sim.truth()


@pytest.mark.loopback
async def test_loopback_serves_replay_on_its_own_path() -> None:
    with trio.fail_after(10):
        async with open_simulator(QUIET) as sim, open_simulator_server(sim) as server:
            assert server.replay_url.endswith("/replay/v1/websocket")
            async with open_raw_url(server.replay_url) as client:
                await start_replay(client, sim.issue_token(), speed=1)
                assert (await clock(client))["t"] == START
            assert sim.sockets[0].role == "replay"
