"""Socket sharding and split snapshots, against the simulator (docs/protocol.md §6)."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import orjson
import trio

from trio_tradovate import State, SyncOptions, open_engine
from trio_tradovate.sim import SimConfig, SocketAudit, open_simulator

from ..conftest import config_for, rebuild_from_changes, settle

ALL_TYPES = ("account", "order", "fill", "position", "cashBalance", "contract", "product", "user")


def remainder_of(audit: SocketAudit) -> int | None:
    for request in audit.requests:
        if request.endpoint == "user/syncrequest":
            body: dict[str, Any] = orjson.loads(request.body)
            return int(body["shardingExpression"]["remainder"])
    return None


async def test_three_shards_split_accounts_and_merge_into_one_truth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(SimConfig(seed=4, accounts=6, activity_interval=0.5)) as sim:
        config = config_for(sim, shards=3, sync=SyncOptions(entity_types=ALL_TYPES))
        async with open_engine(config) as engine:
            changes = engine.events()
            await engine.wait_for(State.LIVE)
            assert [shard.state for shard in engine.shards] == [State.LIVE] * 3
            await trio.sleep(60)
            await settle(sim)
            assert engine.store.as_dict() == {
                k: v for k, v in sim.truth().items() if k[0] in ALL_TYPES
            }
            rebuilt = await rebuild_from_changes(changes)
            assert rebuilt == engine.store.as_dict()
        # every account's orders reached exactly one socket, the one its id maps to
        accounts = sorted(k[1] for k in sim.truth() if k[0] == "account")
        assert len({a % 3 for a in accounts}) > 1
        assert sorted(remainder_of(a) or 0 for a in sim.sockets) == [0, 1, 2]
        assert {r.shard for r in engine.transitions} == {0, 1, 2}


async def test_killing_one_shard_leaves_the_others_live_and_converges(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(SimConfig(seed=8, accounts=4, activity_interval=0.5)) as sim:
        config = config_for(sim, shards=2, sync=SyncOptions(entity_types=ALL_TYPES))
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            await trio.sleep(10)
            await sim.drop_connections(where=lambda audit: remainder_of(audit) == 1)
            await trio.sleep(0.1)
            lost = [r for r in engine.transitions if r.trigger == "lost"]
            assert [r.shard for r in lost] == [1]
            assert engine.shards[0].state is State.LIVE
            assert engine.shards[0].generation == 1  # untouched
            await trio.sleep(30)  # activity continues on both while shard 1 recovers
            await engine.wait_for(State.LIVE)
            assert engine.shards[1].generation == 2
            await settle(sim)
            assert engine.store.as_dict() == {
                k: v for k, v in sim.truth().items() if k[0] in ALL_TYPES
            }


async def test_a_split_snapshot_is_assembled_before_going_live(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(SimConfig(seed=6, split_parts=4)) as sim:
        sim.pause_activity()  # a still world: the snapshot is the whole truth
        accounts = tuple(sorted(k[1] for k in sim.truth() if k[0] == "account"))
        sync = SyncOptions(accounts=accounts, entity_types=ALL_TYPES, split_responses=True)
        expected = {k: v for k, v in sim.truth().items() if k[0] in ALL_TYPES}
        async with open_engine(config_for(sim, sync=sync)) as engine:
            synced = await engine.wait_for(State.LIVE)
            # complete the moment it went live: every part, not just the first
            assert engine.store.as_dict() == expected
            assert synced.reason == "split parts complete: snapshot assembled and applied"
            assert synced.source_node == "syncing.collecting"
            sim.resume_activity()
            await trio.sleep(20)
            await settle(sim)
            assert engine.store.as_dict() == {
                k: v for k, v in sim.truth().items() if k[0] in ALL_TYPES
            }
        [audit] = sim.sockets
        assert audit.syncrequest_count == 1
        assert audit.frames_sent["a"] >= 4  # the parts arrived as separate frames


async def test_a_lockout_while_one_shard_reconnects_does_not_crash_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_tradovate import CaptchaRequired

    async with open_simulator(SimConfig(seed=9, accounts=4, activity_interval=2)) as sim:
        config = config_for(sim, shards=2, sync=SyncOptions(entity_types=ALL_TYPES))
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            sim.refuse_connections(until=trio.current_time() + 20)
            await sim.drop_connections(where=lambda audit: remainder_of(audit) == 1)
            sim.penalize_requests(endpoint="contract/find", captcha=True)
            with suppress(CaptchaRequired):
                await engine.request("contract/find", query="name=MESZ6", timeout=30)
            await trio.sleep(60)
            assert engine.shards[1].state is State.LIVE  # recovered, not crashed
        began = [r for r in engine.transitions if r.trigger == "lockout_began"]
        assert [r.region for r in began] == ["penalty"]  # one region for the engine


async def test_a_shard_stopped_by_policy_stops_the_others_with_the_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_tradovate import BackoffPolicy

    async with open_simulator(SimConfig(seed=10, accounts=4)) as sim:
        config = config_for(
            sim,
            shards=2,
            sync=SyncOptions(entity_types=ALL_TYPES),
            backoff=BackoffPolicy(retry_budget=2),
        )
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            sim.refuse_connections(until=trio.current_time() + 3600)
            await sim.drop_connections(where=lambda audit: remainder_of(audit) == 1)
            await engine.wait_for(State.STOPPED)
        first, second = engine.shards
        assert second.stop_reason is not None
        assert second.stop_reason.startswith("refused")
        assert first.stop_reason == f"shard 1 stopped: {second.stop_reason}"
