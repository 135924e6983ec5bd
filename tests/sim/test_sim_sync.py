"""user/syncrequest, props events, truth() and the REST-like endpoints over the websocket
(docs/protocol.md §3, §6)."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from trio_tradovate.sim import COLLECTIONS, SimConfig, Simulator, open_simulator
from trio_tradovate.sim.rawclient import RawClient, apply_events, apply_snapshot, open_raw

QUIET = SimConfig(activity_interval=None)


async def _sync(client: RawClient, sim: Simulator, rid: int = 1) -> dict[str, Any]:
    await client.authorize(sim.issue_token())
    return await client.call(
        "user/syncrequest", rid, "", orjson.dumps({"users": [sim.user_id]}).decode()
    )


async def test_snapshot_has_every_listed_collection_and_matches_truth() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        reply = await _sync(client, sim)
        assert reply["s"] == 200
        snapshot = reply["d"]
        assert isinstance(snapshot, dict)
        assert set(snapshot) == set(COLLECTIONS)
        for plural in (
            "users",
            "accounts",
            "cashBalances",
            "positions",
            "orders",
            "fills",
            "contracts",
            "products",
        ):
            assert snapshot[plural], plural
        assert {c["name"] for c in snapshot["contracts"]} == {"MESZ6", "ESZ6", "NQZ6"}
        assert {p["name"] for p in snapshot["products"]} == {"MES", "ES", "NQ"}
        assert all(a["name"].startswith("DEMO") for a in snapshot["accounts"])
        assert {o["ordStatus"] for o in snapshot["orders"]} >= {"Working", "Filled"}
        fill = snapshot["fills"][0]
        assert set(fill) >= {
            "id",
            "orderId",
            "contractId",
            "timestamp",
            "tradeDate",
            "action",
            "qty",
            "price",
            "active",
        }
        assert apply_snapshot(snapshot) == sim.truth()
        assert sim.sockets[0].syncrequest_count == 1


async def test_snapshot_plus_props_equals_truth(autojump_clock: trio.testing.MockClock) -> None:
    config = SimConfig(seed=7, activity_interval=1.0, client_heartbeat_timeout=1000.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        reply = await _sync(client, sim)
        state = apply_snapshot(reply["d"])
        before = sim.truth()
        with trio.move_on_after(30.5):
            while True:
                frame = await client.recv()
                if frame.startswith("a"):
                    client.events.extend(orjson.loads(frame[1:]))
        apply_events(state, client.events)
        kinds = {(e["d"]["entityType"], e["d"]["eventType"]) for e in client.events}
        assert ("order", "Created") in kinds
        assert ("order", "Updated") in kinds
        assert ("fill", "Created") in kinds
        assert ("cashBalance", "Updated") in kinds
        assert sim.truth() != before
        assert state == sim.truth()
        multi = [f for f in client.frames if f.startswith("a") and len(orjson.loads(f[1:])) > 1]
        assert multi, "expected some frames batching several props events"


async def test_no_props_before_sync(autojump_clock: trio.testing.MockClock) -> None:
    config = SimConfig(activity_interval=1.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        with trio.move_on_after(5.2):
            while True:
                await client.send("[]")
                assert await client.recv() in ("h",)


async def test_second_syncrequest_is_a_violation() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await _sync(client, sim)
        again = await client.call("user/syncrequest", 2, "", f'{{"users":[{sim.user_id}]}}')
        assert again["s"] == 200
        assert sim.sockets[0].syncrequest_count == 2
        assert sim.sockets[0].violations == ["second syncrequest"]


async def test_second_syncrequest_strict_closes() -> None:
    async with open_simulator(SimConfig(activity_interval=None, strict_second_sync=True)) as sim:
        async with open_raw(sim) as client:
            await _sync(client, sim)
            await client.request("user/syncrequest", 2, "", f'{{"users":[{sim.user_id}]}}')
            frames = await client.until_closed()
            assert frames[-1].startswith("c[")
        assert sim.sockets[0].close_reason == "second syncrequest"


async def test_sync_by_account_filters_snapshot_and_events() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        accounts = (await client.call("account/list", 1))["d"]
        second = accounts[1]["id"]
        reply = await client.call("user/syncrequest", 2, "", f'{{"accounts":[{second}]}}')
        assert [a["id"] for a in reply["d"]["accounts"]] == [second]
        assert all(o["accountId"] == second for o in reply["d"]["orders"])
        body = {
            "accountId": accounts[0]["id"],
            "action": "Buy",
            "symbol": "ESZ6",
            "orderQty": 1,
            "orderType": "Limit",
            "price": 100.0,
            "isAutomated": True,
        }
        await client.call("order/placeorder", 3, "", orjson.dumps(body).decode())
        body["accountId"] = second
        placed = await client.call("order/placeorder", 4, "", orjson.dumps(body).decode())
        while not client.events:
            frame = await client.recv()
            if frame.startswith("a"):
                client.events.extend(orjson.loads(frame[1:]))
        order_id = placed["d"]["orderId"]
        # The order, its version and its command: all of the second account, none of the first.
        assert [e["d"]["entityType"] for e in client.events] == ["order", "orderVersion", "command"]
        assert [e["d"]["entity"].get("orderId", e["d"]["entity"]["id"]) for e in client.events] == [
            order_id
        ] * 3


async def test_bad_sync_body_is_400_string() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        reply = await client.call("user/syncrequest", 1, "", "{not json")
        assert reply["s"] == 400
        assert isinstance(reply["d"], str)


async def test_contract_find() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        found = await client.call("contract/find", 1, "name=MESZ6")
        assert found["s"] == 200
        assert found["d"]["name"] == "MESZ6"
        assert sim.truth()[("contract", found["d"]["id"])] == found["d"]
        missing = await client.call("contract/find", 2, "name=XXZ9")
        assert missing["s"] == 404
        assert isinstance(missing["d"], str)


async def test_placeorder_market_fills_and_updates_truth() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        reply = await _sync(client, sim)
        state = apply_snapshot(reply["d"])
        account = reply["d"]["accounts"][0]
        body = {
            "accountSpec": account["name"],
            "accountId": account["id"],
            "action": "Sell",
            "symbol": "NQZ6",
            "orderQty": 2,
            "orderType": "Market",
            "isAutomated": True,
        }
        placed = await client.call("order/placeorder", 2, "", orjson.dumps(body).decode())
        assert placed["s"] == 200
        order_id = placed["d"]["orderId"]
        while sum(1 for e in client.events if e["d"]["entityType"] == "cashBalance") < 1:
            frame = await client.recv()
            if frame.startswith("a"):
                client.events.extend(orjson.loads(frame[1:]))
        apply_events(state, client.events)
        assert state == sim.truth()
        assert sim.truth()[("order", order_id)]["ordStatus"] == "Filled"
        fills = [e for (t, _), e in sim.truth().items() if t == "fill" and e["orderId"] == order_id]
        assert len(fills) == 1
        assert fills[0]["qty"] == 2
        assert sim.sockets[0].violations == []


async def test_placeorder_validation() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        bad_json = await client.call("order/placeorder", 1, "", "{")
        assert bad_json["s"] == 400
        assert isinstance(bad_json["d"], str)
        body = {
            "accountId": 1,
            "action": "Buy",
            "symbol": "ESZ6",
            "orderQty": 1,
            "orderType": "Market",
        }
        denied = await client.call("order/placeorder", 2, "", orjson.dumps(body).decode())
        assert denied["s"] == 200
        assert denied["d"]["failureReason"] == "UnknownReason"
        assert sim.sockets[0].violations == ["order without isAutomated"]


async def test_cancel_order() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        working = [
            e for (t, _), e in sim.truth().items() if t == "order" and e["ordStatus"] == "Working"
        ]
        reply = await client.call(
            "order/cancelorder", 1, "", orjson.dumps({"orderId": working[0]["id"]}).decode()
        )
        assert reply["s"] == 200
        assert sim.truth()[("order", working[0]["id"])]["ordStatus"] == "Canceled"
        again = await client.call(
            "order/cancelorder", 2, "", orjson.dumps({"orderId": working[0]["id"]}).decode()
        )
        assert "failureText" in again["d"]


async def test_pause_activity_stops_mutations(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(SimConfig(activity_interval=1.0)) as sim:
        sim.pause_activity()
        before = sim.truth()
        await trio.sleep(10)
        assert sim.truth() == before
        sim.resume_activity()
        await trio.sleep(1.5)
        assert sim.truth() != before
