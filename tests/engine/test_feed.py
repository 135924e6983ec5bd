"""The change feed: pass-through, coalescing, exactly-once fills, checkpoints, backpressure."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tradovate import ConfigError, State, open_engine
from trio_tradovate.feed import ChangeFeed, FillLedger
from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.store import EntityChange, EntityStore

from ..conftest import config_for, rebuild_from_changes, settle


def change(kind: str, entity_id: int, event: str, **values: Any) -> EntityChange:
    return EntityChange(kind, entity_id, event, {"id": entity_id, **values}, False, 1)


def drain(feed: ChangeFeed) -> list[EntityChange]:
    out = []
    while (item := feed.pop()) is not None:
        out.append(item)
    return out


def test_changes_pass_through_in_order_when_the_consumer_keeps_up() -> None:
    feed = ChangeFeed()
    delivered = []
    for i in range(5):
        feed.push(change("order", i, "Created", v=i))
        delivered.append(feed.pop())
    assert [c.entity_id for c in delivered if c] == [0, 1, 2, 3, 4]
    assert feed.coalesced == 0


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ([("Created", 1), ("Updated", 2)], [("Created", 2)]),
        ([("Created", 1), ("Deleted", 1)], []),
        ([("Created", 1), ("Updated", 2), ("Deleted", 2)], []),
    ],
)
def test_coalescing_for_an_entity_the_consumer_never_saw(
    sequence: list[tuple[str, int]], expected: list[tuple[str, int]]
) -> None:
    feed = ChangeFeed()
    for event, value in sequence:
        feed.push(change("order", 7, event, v=value))
    assert [(c.event_type, c.entity["v"]) for c in drain(feed)] == expected


def test_coalescing_against_what_the_consumer_holds() -> None:
    feed = ChangeFeed()
    feed.push(change("order", 7, "Created", v=1))
    assert drain(feed)[0].event_type == "Created"
    feed.push(change("order", 7, "Updated", v=2))
    feed.push(change("order", 7, "Updated", v=1))  # back to what the consumer holds
    assert drain(feed) == []
    feed.push(change("order", 7, "Deleted", v=1))
    feed.push(change("order", 7, "Created", v=3))  # deleted and re-created while waiting
    [merged] = drain(feed)
    assert (merged.event_type, merged.entity["v"], merged.coalesced) == ("Updated", 3, True)
    feed.push(change("order", 7, "Updated", v=4))
    feed.push(change("order", 7, "Deleted", v=4))
    [gone] = drain(feed)
    assert (gone.event_type, gone.entity["v"]) == ("Deleted", 3)  # the value it held


def test_random_streams_rebuild_the_truth_whatever_the_consumer_pace() -> None:
    rng = random.Random(5)
    feed = ChangeFeed()
    truth: dict[int, dict[str, Any]] = {}
    consumer: dict[int, dict[str, Any]] = {}
    for _ in range(20_000):
        key = rng.randrange(50)
        if key in truth and rng.random() < 0.2:
            feed.push(change("order", key, "Deleted", **truth.pop(key)))
        else:
            value = {"id": key, "v": rng.randrange(3)}
            event = "Updated" if key in truth else "Created"
            if truth.get(key) != value:
                truth[key] = value
                feed.push(change("order", key, event, v=value["v"]))
        for _ in range(rng.choice([0, 0, 0, 1, 5])):  # a slow, bursty consumer
            item = feed.pop()
            if item is None:
                break
            if item.event_type == "Deleted":
                assert item.entity_id in consumer
                del consumer[item.entity_id]
            else:
                assert consumer.get(item.entity_id) != dict(item.entity)
                assert (item.event_type == "Created") == (item.entity_id not in consumer)
                consumer[item.entity_id] = dict(item.entity)
        assert len(feed) <= 50  # one waiting change per entity at most
    for item in drain(feed):
        if item.event_type == "Deleted":
            del consumer[item.entity_id]
        else:
            consumer[item.entity_id] = dict(item.entity)
    assert consumer == truth


@pytest.mark.parametrize("seed", range(12))
def test_store_snapshots_and_streams_through_the_feed_rebuild_the_store(seed: int) -> None:
    """The engine's own path, generated: live updates (``extend``) and resync snapshots
    (``defer``, admitted when taken) into one feed with a random window, drained at a random,
    bursty pace in random batch sizes. The consumer never gets a change that changes nothing
    for it, ``Created``/``Deleted`` agree with what it holds, memory stays within one record
    per entity in each of the feed's three lines plus the window, and applying everything
    rebuilds the store exactly."""
    rng = random.Random(seed)
    window = rng.choice([0, 1, 8, 64])
    store, feed = EntityStore(shared=False), ChangeFeed(window=window)
    consumer: dict[int, dict[str, Any]] = {}
    ids = 40

    def take(limit: int) -> None:
        for item in feed.pop_many(limit):
            held = consumer.get(item.entity_id)
            if item.event_type == "Deleted":
                assert held == dict(item.entity)  # the value it held goes with it
                del consumer[item.entity_id]
            else:
                assert held != dict(item.entity)
                assert (item.event_type == "Created") == (held is None)
                consumer[item.entity_id] = dict(item.entity)

    for generation in range(1, 400):
        if rng.random() < 0.05:
            snapshot = {
                "orders": [
                    {"id": n, "v": rng.randrange(3)} for n in range(ids) if rng.random() < 0.7
                ]
            }
            feed.defer(store.apply_snapshot(snapshot, generation, entity_types=None))
        else:
            updates = []
            for _ in range(rng.randrange(1, 30)):
                n = rng.randrange(ids)
                kind = rng.choice(["Created", "Updated", "Updated", "Deleted"])
                updates.append(("order", kind, {"id": n, "v": rng.randrange(3)}))
            feed.extend(store.apply_updates(updates, generation))
        assert len(feed) <= 3 * ids + window
        for _ in range(rng.choice([0, 0, 1, 3])):
            take(rng.choice([1, 5, 50, 1000]))
    take(10**6)
    assert len(feed) == 0
    assert consumer == {key[1]: value for key, value in store.as_dict().items()}


def test_a_fill_is_announced_once_and_the_checkpoint_survives_restarts(tmp_path: Path) -> None:
    path = tmp_path / "fills.json"
    first = ChangeFeed(FillLedger(path))
    first.push(change("fill", 11, "Created", qty=1))
    first.push(change("fill", 12, "Created", qty=2))
    assert [c.entity_id for c in drain(first)] == [11, 12]
    first.ledger.save()
    restarted = ChangeFeed(FillLedger(path))
    restarted.push(change("fill", 11, "Created", qty=1))  # the new process's first snapshot
    restarted.push(change("fill", 13, "Created", qty=3))
    assert [c.entity_id for c in drain(restarted)] == [13]
    assert restarted.repeated_fills == 1


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "fills.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="checkpoint"):
        FillLedger(path)


@pytest.mark.parametrize(
    "events", [pytest.param(20_000), pytest.param(100_000, marks=pytest.mark.soak)]
)
async def test_slow_consumer_bounded_memory_and_exact_state(
    events: int, autojump_clock: trio.testing.MockClock
) -> None:
    """The consumer reads nothing while ``events`` props events arrive (100,000 in the soak
    profile, 20,000 in the quick one)."""
    async with (
        open_simulator(SimConfig(seed=21, activity_interval=0.01, batch_probability=0.9)) as sim,
        open_engine(config_for(sim, event_buffer=64)) as engine,
    ):
        changes = engine.events()
        await engine.wait_for(State.LIVE)
        while engine.counters["props_events"] < events:
            await trio.sleep(10)  # the consumer reads nothing meanwhile
            # the reader still reads: requests are answered during the stall
            assert await engine.request("account/list", timeout=5)
        assert engine.state is State.LIVE
        assert engine.generation == 1  # no false stall while the consumer slept
        delivery = engine.delivery
        assert delivery["high_water"] <= len(engine.store)  # one waiting change per entity
        await settle(sim)
        rebuilt = await rebuild_from_changes(changes)
        assert rebuilt == engine.store.as_dict() == sim.truth()
        assert engine.delivery["coalesced"] > events // 2
