"""The market-data socket of the simulator (docs/protocol.md §1, §2, §7), driven by the raw
client in virtual time: routing, authorize, quotes, subscriptions, the audit."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.sim.rawclient import MD_HOST, RawClient, open_raw

QUIET = SimConfig(seed=3, activity_interval=None)
ENTRY_KINDS = {
    "Bid",
    "Offer",
    "Trade",
    "TotalTradeVolume",
    "OpenInterest",
    "OpeningPrice",
    "HighPrice",
    "LowPrice",
    "SettlementPrice",
}


def body(symbol: object) -> str:
    return orjson.dumps({"symbol": symbol}).decode()


async def quotes(client: RawClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` quotes, in order."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        event = await client.event("md")
        found.extend(event["d"].get("quotes", []))
    return found[:count]


async def test_md_host_opens_a_market_data_socket_and_authorizes_with_md_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim:
        async with httpx.AsyncClient(transport=sim.rest_transport()) as http:
            login = await http.post(
                "https://demo.tradovateapi.com/v1/auth/accesstokenrequest",
                json={"name": "demo-user", "password": "demo-password"},
            )
        tokens = login.json()
        async with open_raw(sim, MD_HOST) as client:
            assert await client.authorize(tokens["mdAccessToken"]) == {"s": 200, "i": 0}
        async with open_raw(sim, MD_HOST) as client:
            assert await client.authorize(tokens["accessToken"]) == {"s": 200, "i": 0}
        async with open_raw(sim, MD_HOST) as client:
            reply = await client.authorize("nope")
            assert reply == {"i": 0, "s": 401, "d": "Invalid access token"}
        assert [a.role for a in sim.sockets] == ["md", "md", "md"]


async def test_user_socket_does_not_serve_md_and_md_socket_serves_only_md(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim:
        async with open_raw(sim) as user:
            await user.authorize(sim.issue_token())
            reply = await user.call("md/subscribeQuote", 1, "", body("ESZ6"))
            assert reply["s"] == 404
        async with open_raw(sim, MD_HOST) as md:
            await md.authorize(sim.issue_token())
            reply = await md.call("account/list", 1)
            assert reply == {"i": 1, "s": 404, "d": "Not found: account/list"}
        assert [a.role for a in sim.sockets] == ["user", "md"]


async def test_subscribe_quote_streams_every_entry_kind_on_the_tick_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST) as client:
        await client.authorize(sim.issue_token())
        assert await client.call("md/subscribeQuote", 1, "", body("ESZ6")) == {"s": 200, "i": 1}
        seen = await quotes(client, 5)
        truth = sim.truth()
        es = next(e for (t, _), e in truth.items() if t == "contract" and e["name"] == "ESZ6")
        for quote in seen:
            assert quote["contractId"] == es["id"]
            assert set(quote["entries"]) == ENTRY_KINDS
            for entry in quote["entries"].values():
                if "price" in entry:
                    assert (entry["price"] / 0.25).is_integer()
            e = quote["entries"]
            assert e["Offer"]["price"] - e["Bid"]["price"] == 0.25
            assert e["LowPrice"]["price"] <= e["Trade"]["price"] <= e["HighPrice"]["price"]
        volumes = [q["entries"]["TotalTradeVolume"]["size"] for q in seen]
        assert volumes == sorted(volumes)
        assert volumes[0] < volumes[-1]
        stamps = [q["timestamp"] for q in seen]
        assert stamps == sorted(set(stamps))


async def test_streaming_md_socket_sends_no_h_and_an_idle_one_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST) as client:
        await client.authorize(sim.issue_token())
        await client.call("md/subscribeQuote", 1, "", body("NQZ6"))
        with trio.move_on_after(20):
            while True:
                await client.recv()
                await client.send("[]")
        assert "h" not in client.frames
        assert len([f for f in client.frames if f.startswith("a")]) >= 15
        await client.call("md/unsubscribeQuote", 2, "", body("NQZ6"))
        client.frames.clear()
        with trio.move_on_after(10):
            while True:
                await client.recv()
                await client.send("[]")
        assert client.frames.count("h") >= 3
        assert not any('"quotes"' in f for f in client.frames)


async def test_subscribe_by_contract_id_and_unsubscribe_stops_only_that_symbol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST) as client:
        await client.authorize(sim.issue_token())
        es_id = sim.contract_id("ESZ6")
        nq_id = sim.contract_id("NQZ6")
        await client.call("md/subscribeQuote", 1, "", body(es_id))
        await client.call("md/subscribeQuote", 2, "", body("nqz6"))
        await quotes(client, 4)
        await client.call("md/unsubscribeQuote", 3, "", body("ESZ6"))
        client.events.clear()
        later = await quotes(client, 4)
        assert {q["contractId"] for q in later} == {nq_id}
        assert sim.live_subscriptions() == {0: frozenset({("quote", "NQZ6")})}


async def test_unknown_symbol_is_404_and_bad_bodies_are_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim, MD_HOST) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call("md/subscribeQuote", 1, "", body("XYZZ9"))
        assert reply == {"i": 1, "s": 404, "d": "Unknown symbol: XYZZ9"}
        assert (await client.call("md/subscribeQuote", 2, "", "{"))["s"] == 400
        assert (await client.call("md/subscribeQuote", 3, "", "{}"))["d"] == "symbol is required"
        assert (await client.call("md/subscribeQuote", 4, "", body(True)))["s"] == 400
        assert (await client.call("md/subscribeNothing", 5, "", body("ESZ6")))["s"] == 404
        assert sim.live_subscriptions() == {0: frozenset()}


async def test_audit_records_md_requests_per_socket_with_time_and_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim:
        async with open_raw(sim, MD_HOST) as first:
            await first.authorize(sim.issue_token())
            await first.call("md/subscribeQuote", 1, "", body("ESZ6"))
            await trio.sleep(3)
            await first.call("md/unsubscribeQuote", 2, "", body("ESZ6"))
        async with open_raw(sim, MD_HOST) as second:
            await second.authorize(sim.issue_token())
            await second.call("md/subscribeQuote", 7, "", body("MESZ6"))
            await second.call("md/subscribeQuote", 8, "", body("BAD"))
            assert sim.live_subscriptions() == {1: frozenset({("quote", "MESZ6")})}
        log = sim.md_requests
        assert [(r.socket, r.endpoint, r.id, r.symbol, r.status) for r in log] == [
            (0, "md/subscribequote", 1, "ESZ6", 200),
            (0, "md/unsubscribequote", 2, "ESZ6", 200),
            (1, "md/subscribequote", 7, "MESZ6", 200),
            (1, "md/subscribequote", 8, "BAD", 404),
        ]
        assert log[1].time - log[0].time >= 3
        assert log[0].contract_id == sim.contract_id("ESZ6")
        assert [r.id for r in sim.sockets[1].md_requests] == [7, 8]
