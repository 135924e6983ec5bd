"""A hostile market-data server, end to end: the engine over the in-process simulator.

``test_subscriptions.py`` drives the market-data session and the registry without I/O; this
runs the whole socket (the supervisor, its table, the link, the registry, delivery) while
the server sends what it likes between its genuine frames: quotes, DOMs, histograms and chart
packets for contracts and charts nobody asked for, well-formed or not; answers to requests
never made; heartbeats, ``o``, close frames and shutdown notices at any moment; text that is
not JSON, binary and empty messages; and abrupt drops.

Each seeded script checks, whatever happened:

- ``open_market_data`` never raises (no ``ExceptionGroup``, nothing from a parser), and the
  socket is live again once the server behaves;
- the consumer of a quote subscription only ever gets quotes of the contract it asked for;
- the subscription streams again at the end.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_tradovate import Quote, StaleConfig, State, open_market_data
from trio_tradovate.sim import SimConfig, Simulator, open_simulator

QUICK_SEEDS = range(10)
SOAK_SEEDS = range(5_000, 5_300)


def _a(*events: Any) -> str:
    return "a" + orjson.dumps(list(events)).decode()


def hostile_frame(rng: random.Random, mine: int, other: int) -> str:
    """One message a hostile market-data server might send; ``mine`` is the subscribed
    contract, ``other`` one nobody subscribed to."""
    contract = rng.choice([mine, other, 987_654, -1, "ESZ6", None])
    stamp = rng.choice(["2026-12-07T14:00:00Z", "yesterday", 5, None])
    entries = rng.choice(
        [
            {"Bid": {"price": 1.25, "size": 3}},
            {"Bid": {"price": "x"}},
            {"Offer": None},
            [],
            "Bid",
            {"Trade": {"price": float("1e308"), "size": -4}},
        ]
    )
    quote = {"id": contract, "contractId": contract, "timestamp": stamp, "entries": entries}
    choices: list[str] = [
        _a({"e": "md", "d": {"quotes": [quote]}}),
        _a({"e": "md", "d": {"quotes": [quote, quote, 7]}}),
        _a({"e": "md", "d": {"doms": [{"contractId": contract, "bids": [{"price": 1}]}]}}),
        _a({"e": "md", "d": {"histograms": [{"contractId": contract, "items": "x"}]}}),
        _a({"e": "md", "d": rng.choice([None, [], "quotes", {"quotes": None}, {}])}),
        _a({"e": "chart", "d": {"charts": [{"id": rng.randrange(50), "bars": [{"x": 1}]}]}}),
        _a({"e": "chart", "d": {"charts": [{"id": rng.randrange(50), "eoh": True}, None]}}),
        _a({"e": "clock", "d": '{"t":"2026-12-07T14:00:00Z","s":1}'}),
        _a({"e": "props", "d": {"entityType": "order", "eventType": "Created", "entity": {}}}),
        _a({"s": rng.choice([200, 400, 429]), "i": rng.randrange(60), "d": {"x": 1}}),
        _a({"e": "shutdown", "d": {"reasonCode": "Maintenance", "reason": "now"}}),
        _a(quote),
        "h",
        "o",
        'c[3000,"go away"]',
        "a[",
        "a" + "[" * 5_000 + "]" * 5_000,
        "",
        "x" * rng.choice([1, 70_000]),
        _a(),
    ]
    return rng.choice(choices)


async def play(sim: Simulator, seed: int) -> None:
    rng = random.Random(seed)
    mine, other = sim.contract_id("ESZ6"), sim.contract_id("NQZ6")
    config = sim.engine_config(md_stale=StaleConfig(quote=None, dom=None))
    delivered: list[Any] = []
    async with open_market_data(config) as md, md.quotes("ESZ6") as quotes:
        await quotes.receive()

        async def consume() -> None:
            async for update in quotes:
                delivered.append(update)

        # A well-formed quote of a contract nobody asked for reaches the registry, which
        # routes it to no one (the frames below are checked the same way, in bulk).
        stray = {"id": other, "contractId": other, "timestamp": "2026-12-07T14:00:00Z"}
        stray["entries"] = {"Bid": {"price": 1.25, "size": 3}}
        sim.inject_frame(_a({"e": "md", "d": {"quotes": [stray]}}))
        await trio.sleep(0.01)
        assert md.counters.get("unrouted", 0) == 1, md.counters

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for _ in range(rng.randrange(40, 120)):
                roll = rng.random()
                if roll < 0.9:
                    sim.inject_frame(hostile_frame(rng, mine, other))
                else:
                    await sim.drop_connections(where=lambda audit: audit.role == "md")
                await trio.sleep(rng.choice([0, 0, 0.001, 0.2, 2.0]))
            await trio.sleep(120)  # the server behaves from here on
            state = md.state
            assert state is State.LIVE, f"seed {seed}: {state}"
            nursery.cancel_scope.cancel()  # (a receive cancelled takes nothing)
        with trio.fail_after(30):
            delivered.append(await quotes.receive())  # it streams again
    assert delivered, f"seed {seed}"
    for update in delivered:
        assert update.key == quotes.key, f"seed {seed}"
        assert isinstance(update.value, Quote), f"seed {seed}"
        assert update.value.contract_id == mine, f"seed {seed}: {update.value}"


@pytest.mark.parametrize("seed", QUICK_SEEDS)
async def test_hostile_market_data_server(
    sim: Simulator, seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    await play(sim, seed)


@pytest.mark.soak
def test_soak_hostile_market_data_server() -> None:
    async def one(seed: int) -> None:
        async with open_simulator(SimConfig(seed=seed)) as sim:
            await play(sim, seed)

    for seed in SOAK_SEEDS:
        trio.run(one, seed, clock=trio.testing.MockClock(autojump_threshold=0))
