"""Market-data faults of the simulator: drop, silence while streaming, one frozen subscription,
conflated updates, chart id gaps, a quiet market (virtual time)."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_tradovate.sim import FaultError, SimConfig, apply_fault, open_simulator
from trio_tradovate.sim.rawclient import MD_HOST, RawClient, open_raw

QUIET = SimConfig(seed=9, activity_interval=None)


def sym(symbol: str) -> str:
    return orjson.dumps({"symbol": symbol}).decode()


async def read_for(client: RawClient, seconds: float) -> list[str]:
    """Every frame the client receives in the next ``seconds``."""
    start = len(client.frames)
    with trio.move_on_after(seconds):
        while True:
            await client.recv()
    return client.frames[start:]


def quotes_in(frames: list[str]) -> list[dict[str, Any]]:
    found = []
    for frame in frames:
        if frame.startswith("a"):
            for message in orjson.loads(frame[1:]):
                if message.get("e") == "md":
                    found.extend(message["d"].get("quotes", []))
    return found


def ticks_in(frames: list[str]) -> list[int]:
    ids = []
    for frame in frames:
        if frame.startswith("a"):
            for message in orjson.loads(frame[1:]):
                if message.get("e") == "chart":
                    ids += [t["id"] for c in message["d"]["charts"] for t in c.get("tks", [])]
    return ids


async def test_drop_by_role_drops_md_sockets_only(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulator(QUIET) as sim,
        open_raw(sim) as user,
        open_raw(sim, MD_HOST, heartbeat=2.5) as md,
    ):
        await user.authorize(sim.issue_token())
        await md.authorize(sim.issue_token())
        await md.call("md/subscribeQuote", 1, "", sym("ESZ6"))
        await apply_fault(sim, {"kind": "drop", "role": "md"})
        assert [a.close_reason for a in sim.sockets] == [None, "dropped"]
        assert sim.live_subscriptions() == {}
        assert (await user.call("account/list", 1))["s"] == 200
        assert sim.injected["drop"] == 1


async def test_silence_sends_nothing_not_even_h_then_streaming_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(QUIET) as sim,
        open_raw(sim, heartbeat=2.5) as user,
        open_raw(sim, MD_HOST, heartbeat=2.5) as md,
    ):
        await user.authorize(sim.issue_token())
        await md.authorize(sim.issue_token())
        await md.call("md/subscribeQuote", 1, "", sym("ESZ6"))
        await read_for(md, 3)
        await apply_fault(sim, {"kind": "silence_market"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_for, user, 10)
            silent = await read_for(md, 10)
        assert silent == []
        assert user.frames.count("h") >= 3  # the user socket is not affected
        assert sim.sockets[1].close_reason is None
        await apply_fault(sim, {"kind": "silence_market", "on": False})
        assert len(quotes_in(await read_for(md, 3))) >= 2


async def test_one_frozen_subscription_stops_while_others_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as md:
        await md.authorize(sim.issue_token())
        await md.call("md/subscribeQuote", 1, "", sym("ESZ6"))
        await md.call("md/subscribeQuote", 2, "", sym("NQZ6"))
        await apply_fault(sim, {"kind": "freeze_subscription", "symbol": "ESZ6"})
        es, nq = sim.contract_id("ESZ6"), sim.contract_id("NQZ6")
        frozen = quotes_in(await read_for(md, 10))
        assert {q["contractId"] for q in frozen} == {nq}
        assert len(frozen) >= 9
        assert sim.sockets[0].close_reason is None
        assert sim.live_subscriptions() == {0: frozenset({("quote", "ESZ6"), ("quote", "NQZ6")})}
        # A re-subscribe (what a staleness watchdog does) cures it.
        await md.call("md/subscribeQuote", 3, "", sym("ESZ6"))
        cured = quotes_in(await read_for(md, 3))
        assert {q["contractId"] for q in cured} == {es, nq}


async def test_a_sticky_freeze_survives_resubscribe_until_unfrozen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as md:
        await md.authorize(sim.issue_token())
        await md.call("md/subscribeQuote", 1, "", sym("MESZ6"))
        sim.freeze_subscription("MESZ6", until_resubscribed=False)
        await md.call("md/unsubscribeQuote", 2, "", sym("MESZ6"))
        await md.call("md/subscribeQuote", 3, "", sym("MESZ6"))
        # The subscribe still answers with the current value, then nothing follows.
        assert len(quotes_in(await read_for(md, 5))) == 1
        sim.unfreeze_subscriptions()
        assert len(quotes_in(await read_for(md, 3))) >= 2


async def test_conflated_quotes_skip_intermediate_steps_but_ticks_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as md:
        await md.authorize(sim.issue_token())
        await md.call("md/subscribeQuote", 1, "", sym("ESZ6"))
        body = orjson.dumps(
            {
                "symbol": "ESZ6",
                "chartDescription": {"underlyingType": "Tick", "elementSize": 1},
                "timeRange": {"asMuchAsElements": 1},
            }
        ).decode()
        await md.call("md/getChart", 2, "", body)
        await read_for(md, 2)
        await apply_fault(sim, {"kind": "conflate_market", "every": 5})
        frames = await read_for(md, 30)
        stamps = [
            datetime.fromisoformat(q["timestamp"].replace("Z", "+00:00")).timestamp()
            for q in quotes_in(frames)
        ]
        assert 5 <= len(stamps) <= 7
        assert all(b - a == 5 for a, b in itertools.pairwise(stamps[1:]))
        ids = ticks_in(frames)
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        assert len(ids) >= 29
        sim.conflate_market(None)
        assert len(quotes_in(await read_for(md, 5))) >= 4


def tick_chart(symbol: str, count: int) -> str:
    return orjson.dumps(
        {
            "symbol": symbol,
            "chartDescription": {"underlyingType": "Tick", "elementSize": 1},
            "timeRange": {"asMuchAsElements": count},
        }
    ).decode()


def gaps(ids: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(ids) if b - a != 1]


async def test_chart_gap_skips_tick_ids_once_on_every_chart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(QUIET) as sim,
        open_raw(sim, MD_HOST, heartbeat=2.5) as one,
        open_raw(sim, MD_HOST, heartbeat=2.5) as two,
    ):
        for client, symbol in ((one, "NQZ6"), (two, "ESZ6")):
            await client.authorize(sim.issue_token())
            await client.call("md/getChart", 1, "", tick_chart(symbol, 3))
        before: dict[int, list[int]] = {0: [], 1: []}
        after: dict[int, list[int]] = {0: [], 1: []}
        async with trio.open_nursery() as nursery:
            for index, client in enumerate((one, two)):
                nursery.start_soon(collect, client, 3, before[index])
        await apply_fault(sim, {"kind": "chart_gap", "count": 3})
        async with trio.open_nursery() as nursery:
            for index, client in enumerate((one, two)):
                nursery.start_soon(collect, client, 10, after[index])
        for index in (0, 1):
            # three ids never sent, then consecutive again
            assert gaps(before[index] + after[index]) == [4]


async def collect(client: RawClient, seconds: float, into: list[int]) -> None:
    into.extend(ticks_in(await read_for(client, seconds)))


async def test_chart_gap_over_whole_bars_jumps_bar_timestamps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as md:
        await md.authorize(sim.issue_token())
        body = orjson.dumps(
            {
                "symbol": "ESZ6",
                "chartDescription": {"underlyingType": "MinuteBar", "elementSize": 1},
                "timeRange": {"asMuchAsElements": 2},
            }
        ).decode()
        await md.call("md/getChart", 1, "", body)
        await read_for(md, 5)
        sim.chart_gap(150)  # two and a half minutes of steps
        await read_for(md, 300)
        stamps: list[float] = []
        for frame in md.frames:
            if frame.startswith("a"):
                for message in orjson.loads(frame[1:]):
                    if message.get("e") == "chart":
                        for packet in message["d"]["charts"]:
                            for bar in packet.get("bars", []):
                                moment = datetime.fromisoformat(bar["timestamp"][:-1] + "+00:00")
                                if not stamps or stamps[-1] != moment.timestamp():
                                    stamps.append(moment.timestamp())
        steps = [b - a for a, b in itertools.pairwise(stamps)]
        assert steps.count(60) >= 2
        assert [s for s in steps if s != 60] == [120]  # one whole minute never arrived


async def test_quiet_market_sends_only_h(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as md:
        await md.authorize(sim.issue_token())
        await md.call("md/subscribeQuote", 1, "", sym("ESZ6"))
        await read_for(md, 2)
        await apply_fault(sim, {"kind": "quiet_market"})
        quiet = await read_for(md, 10)
        assert quiet
        assert set(quiet) == {"h"}
        sim.quiet_market(False)
        assert "h" not in await read_for(md, 5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "freeze_subscription"}, "missing parameter 'symbol'"),
        ({"kind": "freeze_subscription", "symbol": "NOPE"}, "unknown symbol"),
        ({"kind": "freeze_subscription", "symbol": "ESZ6", "md_kind": "x"}, "kind must be"),
        ({"kind": "conflate_market", "every": 0}, "every must be >= 1"),
        ({"kind": "chart_gap", "count": 0}, "count must be >= 1"),
        ({"kind": "drop", "role": "admin"}, "role must be"),
    ],
)
async def test_bad_market_fault_specs_are_fault_errors(spec: dict[str, Any], message: str) -> None:
    async with open_simulator(QUIET) as sim:
        with pytest.raises(FaultError, match=message):
            await apply_fault(sim, spec)
        assert not sim.injected
