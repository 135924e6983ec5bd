"""Seeded scripts of market-data requests against the simulator: after every request, the
server's live set (``live_subscriptions``) and its audit (``md_requests``) agree with a plain
model of what the requests asked for, across sockets that come and go."""

from __future__ import annotations

import random

import orjson
import pytest
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.sim.rawclient import MD_HOST, RawClient, open_raw

SYMBOLS = ("ESZ6", "NQZ6", "MESZ6", "esz6", "NOPE")
KINDS = {"Quote": "quote", "DOM": "dom", "Histogram": "histogram"}


async def run_script(seed: int) -> None:
    rng = random.Random(seed)
    async with open_simulator(SimConfig(seed=seed, activity_interval=None)) as sim:
        sockets_used = 0
        for _ in range(3):  # three connections in a row: each starts from nothing
            model: set[tuple[str, str]] = set()
            charts: dict[int, str] = {}
            index = sockets_used
            sockets_used += 1
            async with open_raw(sim, MD_HOST, heartbeat=2.5) as client:
                await client.authorize(sim.issue_token())
                for rid in range(1, 16):
                    await step(client, rng, rid, model, charts)
                    await trio.sleep(rng.choice((0, 0, 0.5, 2)))
                    assert sim.live_subscriptions() == {index: frozenset(model)}
            assert sim.live_subscriptions() == {}
        statuses = [r.status for r in sim.md_requests]
        assert None not in statuses
        assert {r.socket for r in sim.md_requests} <= set(range(sockets_used))
        times = [r.time for r in sim.md_requests]
        assert times == sorted(times)


async def step(
    client: RawClient,
    rng: random.Random,
    rid: int,
    model: set[tuple[str, str]],
    charts: dict[int, str],
) -> None:
    """One random request; updates the model with what a correct server must now hold."""
    symbol = rng.choice(SYMBOLS)
    known = symbol != "NOPE"
    name = symbol.upper()
    roll = rng.random()
    if roll < 0.6:
        kind = rng.choice(list(KINDS))
        verb = rng.choice(("subscribe", "unsubscribe"))
        body = orjson.dumps({"symbol": symbol}).decode()
        reply = await client.call(f"md/{verb}{kind}", rid, "", body)
        assert reply["s"] == (200 if known else 404)
        if known and verb == "subscribe":
            model.add((KINDS[kind], name))
        elif known:
            model.discard((KINDS[kind], name))
    elif roll < 0.8 or not charts:
        request = {
            "symbol": symbol,
            "chartDescription": {"underlyingType": "Tick", "elementSize": 1},
            "timeRange": {"asMuchAsElements": rng.randint(1, 30)},
        }
        reply = await client.call("md/getChart", rid, "", orjson.dumps(request).decode())
        assert reply["s"] == (200 if known else 404)
        if known:
            charts[reply["d"]["realtimeId"]] = name
            model.add(("chart", name))
    else:
        realtime = rng.choice(sorted(charts))
        body = orjson.dumps({"subscriptionId": realtime}).decode()
        assert (await client.call("md/cancelChart", rid, "", body))["s"] == 200
        gone = charts.pop(realtime)
        if gone not in charts.values():
            model.discard(("chart", gone))


@pytest.mark.parametrize("seed", range(12))
async def test_random_scripts_keep_server_and_model_in_step(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    await run_script(seed)
