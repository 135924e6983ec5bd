"""Several consumers: every ``events()`` call is a subscription of its own, with the
exactly-once and coalescing guarantees of one, and a closed or dropped one costs nothing."""

from __future__ import annotations

import gc
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tradovate import ChangeStream, EntityChange, State, open_engine
from trio_tradovate.delivery import ChangeHub
from trio_tradovate.feed import DISCARD, ChangeFeed, FillLedger
from trio_tradovate.sim import SimConfig, Simulator, open_simulator
from trio_tradovate.store import ChangeRecord, EntityStore
from trio_tradovate.writer import StoreWriter

from ..conftest import config_for, settle

Key = tuple[str, int]


def apply_once(held: dict[Key, dict[str, Any]], change: EntityChange) -> None:
    """Apply ``change`` as a consumer would, failing on a duplicate or a no-op."""
    key = (change.entity_type, change.entity_id)
    value = dict(change.entity)
    if change.event_type == "Created":
        assert key not in held, f"Created for {key}, which the consumer holds"
        held[key] = value
    elif change.event_type == "Updated":
        assert key in held, f"Updated for {key}, which the consumer does not hold"
        assert held[key] != value, f"no-op Updated for {key}"
        held[key] = value
    else:
        assert held.pop(key) == value, f"Deleted for {key} with a value it was never given"


async def follow(
    stream: ChangeStream, held: dict[Key, dict[str, Any]], log: list[EntityChange]
) -> None:
    async for change in stream:
        apply_once(held, change)
        log.append(change)


async def drain(stream: ChangeStream, held: dict[Key, dict[str, Any]]) -> list[EntityChange]:
    taken: list[EntityChange] = []
    while stream.statistics()["waiting"]:
        with trio.move_on_after(1):  # what waits may all be no-ops
            for change in await stream.receive_batch():
                apply_once(held, change)
                taken.append(change)
    return taken


async def test_two_consumers_each_see_every_change_exactly_once(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        first, second = engine.events(), engine.events()
        assert first is not second
        helds: list[dict[Key, dict[str, Any]]] = [{}, {}]
        logs: list[list[EntityChange]] = [[], []]
        async with trio.open_nursery() as nursery:
            for stream, held, log in zip((first, second), helds, logs, strict=True):
                nursery.start_soon(follow, stream, held, log)
            await engine.wait_for(State.LIVE)
            await sim.drop_connections()  # a reconnect's snapshot diff reaches both too
            await engine.wait_for(State.LIVE)
            await trio.sleep(60)
            await settle(sim)
            nursery.cancel_scope.cancel()
        assert helds[0] == helds[1] == engine.store.as_dict() == sim.truth()
        assert logs[0] == logs[1]  # the same changes, in the same order
        assert not any(change.coalesced for change in logs[0])  # both kept up
        fills = Counter(c.entity_id for c in logs[0] if c.entity_type == "fill")
        assert fills
        assert set(fills.values()) == {1}
        assert any(change.generation == 2 for change in logs[1])  # after the reconnect too
        assert engine.delivery["subscriptions"] == 2


async def test_a_slow_consumer_coalesces_while_the_fast_one_sees_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulator(SimConfig(seed=3, activity_interval=0.05, batch_probability=0.9)) as sim,
        open_engine(config_for(sim, event_buffer=8)) as engine,
    ):
        fast, slow = engine.events(), engine.events()
        fast_held: dict[Key, dict[str, Any]] = {}
        fast_log: list[EntityChange] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, fast, fast_held, fast_log)
            await engine.wait_for(State.LIVE)
            await trio.sleep(40)  # the slow consumer reads nothing meanwhile
            assert await engine.request("account/list", timeout=5)  # the reader reads
            waiting = slow.statistics()["waiting"]
            # one change per entity at most (it holds none yet), plus the window
            assert 0 < waiting <= len(engine.store) + 8
            await settle(sim)
            slow_held: dict[Key, dict[str, Any]] = {}
            slow_log = await drain(slow, slow_held)
            nursery.cancel_scope.cancel()
        assert engine.state is State.LIVE
        assert engine.generation == 1  # nobody took the slow consumer for a stall
        assert fast_held == slow_held == engine.store.as_dict() == sim.truth()
        assert not any(change.coalesced for change in fast_log)
        assert any(change.coalesced for change in slow_log)
        assert len(slow_log) < len(fast_log)
        assert engine.delivery["coalesced"] > 0


async def test_a_closed_or_dropped_subscription_frees_what_it_held(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim, event_buffer=4)) as engine:
        kept, closed = engine.events(), engine.events()
        await engine.wait_for(State.LIVE)
        await trio.sleep(30)
        held: dict[Key, dict[str, Any]] = {}
        await drain(kept, held)
        assert closed.statistics()["waiting"] > 0
        assert engine.delivery["subscriptions"] == 2
        closed.close()
        assert closed.statistics() == {"waiting": 0, "held": 0}
        assert engine.delivery["subscriptions"] == 1
        with pytest.raises(trio.ClosedResourceError):
            await closed.receive()
        async with engine.events() as scoped:
            assert engine.delivery["subscriptions"] == 2
            assert (await scoped.receive()).recovered  # starts from the store's contents
        assert engine.delivery["subscriptions"] == 1
        dropped = engine.events()  # never read, never closed
        await trio.sleep(30)
        assert dropped.statistics()["waiting"] > 0
        assert engine.delivery["subscriptions"] == 2
        del dropped
        gc.collect()
        assert engine.delivery["subscriptions"] == 1
        await trio.sleep(30)  # only the kept subscription holds anything now
        assert engine.delivery["waiting"] == kept.statistics()["waiting"]
        await settle(sim)
        await drain(kept, held)
        assert held == engine.store.as_dict() == sim.truth()  # the kept one lost nothing


async def test_a_late_subscription_starts_from_the_store(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await trio.sleep(20)
        late = engine.events()
        first = await late.receive_batch()
        assert first
        assert all(c.event_type == "Created" and c.recovered for c in first)
        await trio.sleep(20)
        await settle(sim)
        held: dict[Key, dict[str, Any]] = {}
        for change in first:
            apply_once(held, change)
        await drain(late, held)
        assert held == engine.store.as_dict() == sim.truth()
    after = engine.events()  # the engine stopped: the contents, then the end
    assert len([c async for c in after]) == len(engine.store)


def test_each_subscription_is_told_of_a_fill_once_and_the_checkpoint_keeps_them_all(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fills.json"
    engine_ledger = FillLedger(path)
    store = EntityStore(shared=False)
    hub = ChangeHub(store, engine_ledger, window=0, batch=16, generation=lambda: 1)
    journal, risk = ChangeFeed(engine_ledger.fork()), ChangeFeed(engine_ledger.fork())
    fills: list[ChangeRecord] = [("fill", 5, "Created", {"id": 5}, False, 1, False)]
    for feed in (journal, risk):
        feed.extend(fills)
        assert [c.entity_id for c in feed.pop_many(10)] == [5]  # each is told once
        feed.extend([("fill", 5, "Deleted", {"id": 5}, False, 1, False)])
        assert [c.event_type for c in feed.pop_many(10)] == ["Deleted"]
        feed.extend(fills)  # the server sends it again: not announced again
        assert feed.pop_many(10) == []
    hub.end()  # the engine stops: the checkpoint is saved
    restarted = FillLedger(path)
    later = ChangeFeed(restarted.fork())
    later.extend(fills)
    assert later.pop_many(10) == []  # a previous process announced it
    assert 5 in restarted


# -- generated interleavings, on the hub itself ----------------------------------------------


class Consumer:
    """One subscriber and what it must have seen: every value each entity took since it
    subscribed (``None``: absent), and where in that history it stands."""

    def __init__(self, stream: ChangeStream, truth: dict[Key, dict[str, Any]]) -> None:
        self.stream = stream
        self.held: dict[Key, dict[str, Any]] = {}
        self.history: dict[Key, list[dict[str, Any] | None]] = {
            key: [None, value] for key, value in truth.items()
        }
        self.position: dict[Key, int] = dict.fromkeys(truth, 0)
        self.coalesced = 0

    def saw(self, key: Key, value: dict[str, Any] | None) -> None:
        self.history.setdefault(key, [None]).append(value)
        self.position.setdefault(key, 0)

    def check(self, change: EntityChange) -> None:
        """Exactly once, or marked coalesced: an unmarked change is the next value the entity
        took after what the consumer holds (net-nil detours excepted); a marked one is a
        later value."""
        key = (change.entity_type, change.entity_id)
        before = self.held.get(key)
        apply_once(self.held, change)
        after = self.held.get(key)
        history, start = self.history[key], self.position[key]
        if change.coalesced:
            self.coalesced += 1
            later = [i for i in range(start + 1, len(history)) if history[i] == after]
            assert later, f"{key}: coalesced to a value it never took"
            self.position[key] = later[-1]
            return
        steps = [
            i
            for i in range(start, len(history) - 1)
            if history[i] == before and history[i + 1] == after
        ]
        assert steps, f"{key}: a value was skipped without the coalesced mark"
        self.position[key] = steps[0] + 1


async def run_interleaving(seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    window = rng.choice([0, 2, 1000])
    store = EntityStore(shared=False)
    writer = StoreWriter(store, DISCARD, entity_types=None, counters=Counter(), wake=lambda: None)
    hub = ChangeHub(store, FillLedger(), window=window, batch=16, generation=lambda: 1)
    hub.attach(writer.route)
    truth: dict[Key, dict[str, Any]] = {}
    consumers: list[Consumer] = []
    deliveries = 0

    def record(key: Key, value: dict[str, Any] | None) -> None:
        if truth.get(key) == value:
            return  # the store emits nothing for a change that changes nothing
        if value is None:
            del truth[key]
        else:
            truth[key] = value
        for consumer in consumers:
            consumer.saw(key, value)

    for _ in range(120):
        action = rng.random()
        if action < 0.45:
            updates = []
            for _ in range(rng.randint(1, 5)):
                entity_id = rng.randint(1, 6)
                key = ("order", entity_id)
                if rng.random() < 0.25:
                    updates.append(("order", "Deleted", {"id": entity_id}))
                    record(key, None)
                else:
                    value = {"id": entity_id, "v": rng.randint(0, 3)}
                    updates.append(("order", "Updated", dict(value)))
                    record(key, value)
            writer.events(updates, generation=1, owner=0)
        elif action < 0.5:
            orders = [{"id": i, "v": rng.randint(0, 3)} for i in range(1, 7) if rng.random() < 0.6]
            for entity_id in range(1, 7):
                new = next((dict(o) for o in orders if o["id"] == entity_id), None)
                record(("order", entity_id), new)
            writer.snapshot({"orders": orders}, [], generation=2, owner=0)
        elif action < 0.6 and len(consumers) < 4:
            consumers.append(Consumer(hub.subscribe(), truth))
        elif action < 0.65 and consumers:
            leaving = consumers.pop(rng.randrange(len(consumers)))
            if rng.random() < 0.5:
                leaving.stream.close()
            del leaving  # dropped: its stream goes with it
            # (trio's run loop holds the outcome of this task's last step, a cancelled wait
            # in the stream perhaps, until the next one: take one first). No gc.collect():
            # a stream is in no reference cycle, so it goes as its last reference does.
            await trio.lowlevel.checkpoint()
            assert hub.statistics()["subscriptions"] == len(consumers)
        elif consumers:  # (no local keeps a consumer: a dropped one must be collectable)
            deliveries += await read(rng.choice(consumers), rng.randint(1, 8))
    coalesced = 0
    for consumer in consumers:
        while consumer.stream.statistics()["waiting"]:
            deliveries += await read(consumer, 16)
        assert consumer.held == truth == store.as_dict()
        coalesced += consumer.coalesced
    return deliveries, coalesced


async def read(consumer: Consumer, limit: int) -> int:
    """One ``receive_batch``, checked; how many changes it gave."""
    with trio.move_on_after(1):  # what waits may all be no-ops
        batch = await consumer.stream.receive_batch(limit)
        for change in batch:
            consumer.check(change)
        return len(batch)
    return 0


async def test_generated_interleavings_keep_exactly_once_or_coalesced_per_consumer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deliveries = coalesced = 0
    for seed in range(150):
        delivered, merged = await run_interleaving(seed)
        deliveries += delivered
        coalesced += merged
    # the generator reached both sides of the property
    assert deliveries > 1000
    assert coalesced > 50
