"""user/syncrequest options (docs/protocol.md §6): splitResponses, shardingExpression and the
combination rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing

from trio_tradovate.sim import COLLECTIONS, SimConfig, Simulator, open_simulator
from trio_tradovate.sim.rawclient import RawClient, State, apply_events, apply_snapshot, open_raw

QUIET = SimConfig(activity_interval=None, client_heartbeat_timeout=10_000.0)


async def sync_parts(
    client: RawClient, sim: Simulator, body: dict[str, Any], parts: int
) -> list[dict[str, Any]]:
    """Authorize, sync, and collect ``parts`` responses carrying the syncrequest's id."""
    await client.authorize(sim.issue_token())
    await client.request("user/syncrequest", 1, "", orjson.dumps(body).decode())
    found: list[dict[str, Any]] = []
    while len(found) < parts:
        frame = await client.recv()
        if frame.startswith("a"):
            found += [m for m in orjson.loads(frame[1:]) if m.get("i") == 1]
    return found


def merge(parts: list[dict[str, Any]]) -> State:
    """What a correct client does with split parts: upsert every part into one state."""
    state: State = {}
    for part in parts:
        state.update(apply_snapshot(part["d"]))
    return state


async def test_split_responses_arrive_in_configured_parts_that_merge_to_truth() -> None:
    config = SimConfig(activity_interval=None, split_parts=4)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        body = {"users": [sim.user_id], "splitResponses": True}
        parts = await sync_parts(client, sim, body, 4)
        assert all(p["s"] == 200 for p in parts)
        assert all(set(p["d"]) == set(COLLECTIONS) for p in parts)
        assert merge(parts) == sim.truth()
        assert apply_snapshot(parts[0]["d"]) != sim.truth()  # the first part is not the whole
        sizes = [sum(len(v) for v in p["d"].values()) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        # Nothing else is pending: the next response is the next request's.
        assert (await client.call("auth/me", 2))["d"]["userId"] == sim.user_id
        assert sim.sockets[0].syncrequest_count == 1


async def test_split_responses_false_is_one_response() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        body = {"users": [sim.user_id], "splitResponses": False}
        [reply] = await sync_parts(client, sim, body, 1)
        assert apply_snapshot(reply["d"]) == sim.truth()
        assert (await client.call("auth/me", 2))["s"] == 200


async def test_split_responses_with_accounts_and_entity_types() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        account = min(k[1] for k in sim.truth() if k[0] == "account")
        body = {"accounts": [account], "entityTypes": ["order", "account"], "splitResponses": True}
        parts = await sync_parts(client, sim, body, 3)
        expected = {
            key: entity
            for key, entity in sim.truth().items()
            if key[0] in ("order", "account") and (entity.get("accountId", entity["id"]) == account)
        }
        assert merge(parts) == expected


def owner_account(entity_type: str, entity: dict[str, Any], truth: State) -> int | None:
    """The account an entity belongs to, computed from the protocol data alone."""
    if entity_type == "account":
        return int(entity["id"])
    if "accountId" in entity:
        return int(entity["accountId"])
    if entity_type == "fill":
        return int(truth[("order", int(entity["orderId"]))]["accountId"])
    return None


async def test_mod_account_id_shards_partition_snapshot_and_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SimConfig(
        seed=11, accounts=4, activity_interval=1.0, client_heartbeat_timeout=10_000.0
    )
    async with (
        open_simulator(config) as sim,
        open_raw(sim) as even,
        open_raw(sim) as odd,
    ):
        states: list[State] = []
        sim.pause_activity()
        for remainder, client in enumerate((even, odd)):
            shard = {"expressionType": "modAccountId", "divisor": 2, "remainder": remainder}
            [reply] = await sync_parts(client, sim, {"shardingExpression": shard}, 1)
            states.append(apply_snapshot(reply["d"]))
        truth = sim.truth()
        assert {**states[0], **states[1]} == truth
        accounts = sorted(k[1] for k in truth if k[0] == "account")
        assert {a % 2 for a in accounts} == {0, 1}
        for remainder, state in enumerate(states):
            for (etype, _), entity in state.items():
                owner = owner_account(etype, entity, truth)
                assert owner is None or owner % 2 == remainder
        shared = {k for k, v in truth.items() if owner_account(k[0], v, truth) is None}
        assert shared <= set(states[0]) & set(states[1])  # contracts, products: every shard
        sim.resume_activity()
        events: list[list[dict[str, Any]]] = [[], []]

        async def collect(index: int, client: RawClient) -> None:
            with trio.move_on_after(20.5):
                while True:
                    frame = await client.recv()
                    if frame.startswith("a"):
                        events[index].extend(orjson.loads(frame[1:]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, 0, even)
            nursery.start_soon(collect, 1, odd)
        truth = sim.truth()
        seen = [{orjson.dumps(e) for e in shard_events} for shard_events in events]
        owned = 0
        for index, shard_events in enumerate(events):
            for event in shard_events:
                data = event["d"]
                owner = owner_account(data["entityType"], data["entity"], truth)
                assert owner is not None  # the generator only touches account entities
                assert owner % 2 == index
                assert orjson.dumps(event) not in seen[1 - index]  # exactly one shard
                owned += 1
        assert owned > 10
        assert all(events)
        for state, shard_events in zip(states, events, strict=True):
            apply_events(state, shard_events)
        assert {**states[0], **states[1]} == truth


async def test_mod_user_id_sends_owned_entities_to_the_user_shard_only() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as mine, open_raw(sim) as other:
        remainder = sim.user_id % 3
        shard = {"expressionType": "modUserId", "divisor": 3, "remainder": remainder}
        [full] = await sync_parts(mine, sim, {"shardingExpression": shard}, 1)
        assert apply_snapshot(full["d"]) == sim.truth()
        shard["remainder"] = (remainder + 1) % 3
        [rest] = await sync_parts(other, sim, {"shardingExpression": shard}, 1)
        kinds = {plural for plural, items in rest["d"].items() if items}
        assert kinds == {"currencies", "exchanges", "contractGroups", "products"} | {
            "contractMaturities",
            "contracts",
        }


async def test_sharding_with_entity_types_and_split_responses() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        shard = {"expressionType": "modAccountId", "divisor": 1, "remainder": 0}
        body = {"shardingExpression": shard, "entityTypes": ["position"], "splitResponses": True}
        parts = await sync_parts(client, sim, body, 3)
        assert merge(parts) == {k: v for k, v in sim.truth().items() if k[0] == "position"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {
                "users": [1],
                "shardingExpression": {
                    "expressionType": "modUserId",
                    "divisor": 2,
                    "remainder": 0,
                },
            },
            "users cannot be combined with shardingExpression",
        ),
        ({"users": [1], "entityTypes": ["order"]}, "users cannot be combined with entityTypes"),
        (
            {
                "accounts": [1],
                "shardingExpression": {
                    "expressionType": "modAccountId",
                    "divisor": 2,
                    "remainder": 0,
                },
            },
            "accounts cannot be combined with shardingExpression",
        ),
        (
            {"shardingExpression": {"expressionType": "modAccountId", "divisor": 2}},
            "missing remainder",
        ),
        ({"shardingExpression": {}}, "missing expressionType, divisor, remainder"),
        ({"shardingExpression": [1]}, "must be an object"),
        (
            {
                "shardingExpression": {
                    "expressionType": "modOrderId",
                    "divisor": 2,
                    "remainder": 0,
                }
            },
            "expressionType",
        ),
        (
            {
                "shardingExpression": {
                    "expressionType": "modAccountId",
                    "divisor": 0,
                    "remainder": 0,
                }
            },
            "divisor",
        ),
        (
            {
                "shardingExpression": {
                    "expressionType": "modAccountId",
                    "divisor": 2,
                    "remainder": 2,
                }
            },
            "remainder",
        ),
        ({"users": [1], "splitResponses": "yes"}, "splitResponses"),
    ],
)
async def test_sync_combination_rules(body: dict[str, Any], message: str) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        [reply] = await sync_parts(client, sim, body, 1)
        assert reply["s"] == 400
        assert isinstance(reply["d"], str)
        assert message in reply["d"]
