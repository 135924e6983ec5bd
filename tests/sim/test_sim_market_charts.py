"""DOM, histograms and charts of the simulator's market-data socket (docs/protocol.md §7;
tick charts in the compact form of tradovate/example-api-js EX-11), in virtual time."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import orjson
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.sim.rawclient import MD_HOST, RawClient, open_raw

QUIET = SimConfig(seed=5, activity_interval=None)
TICK = 0.25


def chart_body(
    symbol: object, kind: str, size: int = 1, unit: str = "UnderlyingUnits", **time_range: Any
) -> str:
    return orjson.dumps(
        {
            "symbol": symbol,
            "chartDescription": {
                "underlyingType": kind,
                "elementSize": size,
                "elementSizeUnit": unit,
                "withHistogram": False,
            },
            "timeRange": time_range,
        }
    ).decode()


def on_tick(value: float) -> bool:
    return (value / TICK).is_integer()


def decode(packet: dict[str, Any]) -> list[tuple[int, int, float, int]]:
    """EX-11: ``(id, timestamp ms, price, size)`` of each tick of a compact packet."""
    bp, bt, ts = packet["bp"], packet["bt"], packet["ts"]
    return [(t["id"], bt + t["t"], (bp + t["p"]) * ts, t["s"]) for t in packet["tks"]]


async def chart_packets(client: RawClient, until: int) -> list[dict[str, Any]]:
    """Chart packets in arrival order until ``until`` packets arrived."""
    packets: list[dict[str, Any]] = []
    while len(packets) < until:
        event = await client.event("chart")
        packets.extend(event["d"]["charts"])
    return packets


async def test_dom_has_ten_ordered_levels_a_side_on_the_tick_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        body = orjson.dumps({"symbol": "NQZ6"}).decode()
        assert await client.call("md/subscribeDOM", 1, "", body) == {"s": 200, "i": 1}
        doms: list[dict[str, Any]] = []
        while len(doms) < 3:
            doms.extend((await client.event("md"))["d"]["doms"])
        for dom in doms:
            assert dom["contractId"] == sim.contract_id("NQZ6")
            bids = [level["price"] for level in dom["bids"]]
            offers = [level["price"] for level in dom["offers"]]
            assert len(bids) == len(offers) == 10
            assert bids == sorted(bids, reverse=True)
            assert offers == sorted(offers)
            assert offers[0] - bids[0] == TICK
            assert all(on_tick(p) for p in bids + offers)
            assert all(level["size"] >= 1 for level in dom["bids"] + dom["offers"])
        await client.call("md/unsubscribeDOM", 2, "", body)
        assert sim.live_subscriptions() == {0: frozenset()}


async def test_dom_best_level_is_the_quote_best_bid_and_offer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        body = orjson.dumps({"symbol": "ESZ6"}).decode()
        await client.call("md/subscribeQuote", 1, "", body)
        await client.call("md/subscribeDOM", 2, "", body)
        quotes: dict[str, dict[str, Any]] = {}
        doms: dict[str, dict[str, Any]] = {}
        while len(set(quotes) & set(doms)) < 3:
            data = (await client.event("md"))["d"]
            quotes.update({q["timestamp"]: q for q in data.get("quotes", [])})
            doms.update({d["timestamp"]: d for d in data.get("doms", [])})
        for stamp in set(quotes) & set(doms):
            entries = quotes[stamp]["entries"]
            assert doms[stamp]["bids"][0] == entries["Bid"]
            assert doms[stamp]["offers"][0] == entries["Offer"]


async def test_histogram_is_sent_on_subscribe_and_refreshed_each_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        body = orjson.dumps({"symbol": "MESZ6"}).decode()
        await client.call("md/subscribeHistogram", 1, "", body)
        first = (await client.event("md"))["d"]["histograms"][0]
        start = trio.current_time()
        second = (await client.event("md"))["d"]["histograms"][0]
        assert 0 < trio.current_time() - start <= 61
        for histogram in (first, second):
            assert histogram["contractId"] == sim.contract_id("MESZ6")
            assert set(histogram["tradeDate"]) == {"year", "month", "day"}
            assert on_tick(histogram["base"])
            assert all(int(offset) == float(offset) for offset in histogram["items"])
        assert sum(second["items"].values()) > sum(first["items"].values())


async def test_minute_chart_history_then_eoh_then_realtime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call(
            "md/getChart", 1, "", chart_body("ESZ6", "MinuteBar", 5, asMuchAsElements=20)
        )
        historical, realtime = reply["d"]["historicalId"], reply["d"]["realtimeId"]
        assert reply["s"] == 200
        assert historical != realtime
        packets = await chart_packets(client, 4)
        eoh = next(i for i, p in enumerate(packets) if p.get("eoh"))
        assert packets[eoh] == {"id": historical, "eoh": True}
        history = [bar for p in packets[:eoh] for bar in p["bars"]]
        assert all(p["id"] == historical for p in packets[:eoh])
        assert all(p["id"] == realtime for p in packets[eoh + 1 :])
        assert len(history) == 20
        stamps = [datetime.fromisoformat(b["timestamp"].replace("Z", "+00:00")) for b in history]
        assert all((b - a).total_seconds() == 300 for a, b in itertools.pairwise(stamps))
        for bar in history:
            assert bar["low"] <= min(bar["open"], bar["close"])
            assert bar["high"] >= max(bar["open"], bar["close"])
            assert all(on_tick(bar[k]) for k in ("open", "high", "low", "close"))
            assert bar["upVolume"] + bar["downVolume"] == bar["bidVolume"] + bar["offerVolume"]
        # The realtime stream carries the forming bar, which history ended with.
        live = packets[eoh + 1]["bars"][-1]
        assert live["timestamp"] == history[-1]["timestamp"]
        assert live["upVolume"] + live["downVolume"] >= (
            history[-1]["upVolume"] + history[-1]["downVolume"]
        )


async def test_tick_chart_decodes_to_quote_trades_with_consecutive_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call(
            "md/getChart", 1, "", chart_body("NQZ6", "Tick", asMuchAsElements=700)
        )
        historical, realtime = reply["d"]["historicalId"], reply["d"]["realtimeId"]
        await client.call("md/subscribeQuote", 2, "", orjson.dumps({"symbol": "NQZ6"}).decode())
        packets = await chart_packets(client, 8)
        kinds = [("eoh" if p.get("eoh") else p["s"], p["id"]) for p in packets]
        assert kinds[:3] == [("db", historical), ("db", historical), ("eoh", historical)]
        assert all(kind == ("rt", realtime) for kind in kinds[3:])
        ticks = [tick for p in packets if not p.get("eoh") for tick in decode(p)]
        assert len([p for p in packets[:2] for _ in p["tks"]]) == 700
        ids = [t[0] for t in ticks]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # no gap, no duplicate
        assert all(on_tick(t[2]) for t in ticks)
        assert [t[1] for t in ticks] == sorted(t[1] for t in ticks)
        trades: dict[int, dict[str, Any]] = {}
        while len(trades) < 4:
            for quote in (await client.event("md"))["d"]["quotes"]:
                moment = datetime.fromisoformat(quote["timestamp"].replace("Z", "+00:00"))
                trades[round(moment.timestamp() * 1000)] = quote["entries"]["Trade"]
        by_time = {t[1]: t for t in ticks}
        matched = [stamp for stamp in trades if stamp in by_time]
        assert matched
        for stamp in matched:
            assert trades[stamp] == {"price": by_time[stamp][2], "size": by_time[stamp][3]}


async def test_minute_bar_equals_the_bar_built_from_its_ticks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        closest = "2026-01-05T14:20:00Z"
        await client.call(
            "md/getChart",
            1,
            "",
            chart_body("ESZ6", "MinuteBar", closestTimestamp=closest, asMuchAsElements=3),
        )
        bars_packets = await chart_packets(client, 2)
        bars = [b for p in bars_packets if not p.get("eoh") for b in p["bars"]]
        await client.call(
            "md/getChart",
            2,
            "",
            chart_body(
                "ESZ6",
                "Tick",
                asFarAsTimestamp="2026-01-05T14:18:00Z",
                closestTimestamp="2026-01-05T14:18:59.999Z",
            ),
        )
        tick_packets: list[dict[str, Any]] = []
        while not any(p.get("eoh") for p in tick_packets):
            tick_packets.extend((await client.event("chart"))["d"]["charts"])
        ticks = [t for p in tick_packets if not p.get("eoh") and p["s"] == "db" for t in decode(p)]
        assert len(ticks) == 60  # one trade per 1 s step
        bar = next(b for b in bars if b["timestamp"] == "2026-01-05T14:18:00.000Z")
        prices = [t[2] for t in ticks]
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
        )
        assert bar["upVolume"] + bar["downVolume"] == sum(t[3] for t in ticks)


async def test_daily_bars_and_time_range_forms(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        await client.call("md/getChart", 1, "", chart_body("ESZ6", "DailyBar", asMuchAsElements=3))
        packets = await chart_packets(client, 2)
        days = [b["timestamp"] for p in packets if not p.get("eoh") for b in p["bars"]]
        assert days == [
            "2026-01-03T00:00:00.000Z",
            "2026-01-04T00:00:00.000Z",
            "2026-01-05T00:00:00.000Z",
        ]
        client.events.clear()
        await client.call(
            "md/getChart",
            2,
            "",
            chart_body("ESZ6", "MinuteBar", asFarAsTimestamp="2026-01-05T14:00:00Z"),
        )
        packets = await chart_packets(client, 2)
        minutes = [b["timestamp"] for p in packets if not p.get("eoh") for b in p["bars"]]
        assert minutes[0] == "2026-01-05T14:00:00.000Z"
        assert minutes[-1] == "2026-01-05T14:30:00.000Z"  # the forming bar
        client.events.clear()
        reply = await client.call(
            "md/getChart",
            3,
            "",
            chart_body("ESZ6", "Tick", closestTickId=10_000_100, asMuchAsElements=5),
        )
        assert reply["s"] == 200
        packets = await chart_packets(client, 2)
        assert [t[0] for t in decode(packets[0])] == list(range(10_000_096, 10_000_101))


async def test_bad_chart_requests_are_400_with_a_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        cases = [
            (chart_body("ESZ6", "Tick", 2, asMuchAsElements=5), "Tick charts need elementSize 1"),
            (chart_body("ESZ6", "MinuteBar"), "timeRange needs at least one of"),
            (chart_body("ESZ6", "Weekly", asMuchAsElements=5), "underlyingType must be one of"),
            (chart_body("ESZ6", "MinuteBar", 1, "Renko", asMuchAsElements=5), "the simulator"),
            (chart_body("ESZ6", "MinuteBar", closestTimestamp="yesterday"), "not an ISO-8601"),
            (chart_body("ESZ6", "MinuteBar", 0, asMuchAsElements=5), "elementSize must be"),
        ]
        for rid, (body, reason) in enumerate(cases, start=1):
            reply = await client.call("md/getChart", rid, "", body)
            assert reply["s"] == 400, body
            assert reply["d"].startswith(reason) or reason in reply["d"], reply
        unknown = await client.call(
            "md/getChart", 99, "", chart_body("ZZZ", "Tick", asMuchAsElements=1)
        )
        assert unknown == {"i": 99, "s": 404, "d": "Unknown symbol: ZZZ"}
        assert sim.live_subscriptions() == {0: frozenset()}


async def test_cancel_chart_stops_its_realtime_stream_and_is_audited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST, heartbeat=2.5) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call(
            "md/getChart", 1, "", chart_body("ESZ6", "Tick", asMuchAsElements=1)
        )
        realtime = reply["d"]["realtimeId"]
        await chart_packets(client, 4)
        assert sim.live_subscriptions() == {0: frozenset({("chart", "ESZ6")})}
        body = orjson.dumps({"subscriptionId": realtime}).decode()
        assert await client.call("md/cancelChart", 2, "", body) == {"s": 200, "i": 2}
        client.events.clear()
        client.frames.clear()
        with trio.move_on_after(5):
            while True:
                await client.recv()
        assert not any('"chart"' in frame for frame in client.frames)
        assert sim.live_subscriptions() == {0: frozenset()}
        cancel = sim.md_requests[-1]
        assert (cancel.endpoint, cancel.symbol, cancel.contract_id) == (
            "md/cancelchart",
            realtime,
            sim.contract_id("ESZ6"),
        )
        assert sim.md_requests[0].chart_ids == (reply["d"]["historicalId"], realtime)


async def record(seed: int) -> list[str]:
    async with open_simulator(SimConfig(seed=seed, activity_interval=None)) as sim:
        async with open_raw(sim, MD_HOST, heartbeat=2.5) as client:
            await client.authorize(sim.issue_token())
            await client.call("md/subscribeQuote", 1, "", orjson.dumps({"symbol": 1}).decode())
            for rid, symbol in enumerate(("ESZ6", "NQZ6", "MESZ6"), start=2):
                body = orjson.dumps({"symbol": symbol}).decode()
                await client.call("md/subscribeQuote", rid, "", body)
                await client.call("md/subscribeDOM", rid + 10, "", body)
            await client.call(
                "md/getChart", 20, "", chart_body("ESZ6", "Tick", asMuchAsElements=50)
            )
            with trio.move_on_after(30):
                while True:
                    await client.recv()
        return [f for f in client.frames if f.startswith("a")]


async def test_market_data_is_deterministic_from_the_seed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, again, other = await record(11), await record(11), await record(12)
    assert len(first) > 30
    assert first == again
    assert first != other
