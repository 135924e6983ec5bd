"""State recovery: many drops under heavy activity; fills exactly once, across restarts too."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from trio_tradovate import Engine, EntityChange, State, open_engine
from trio_tradovate.sim import SimConfig, Simulator, open_simulator

from ..conftest import config_for, settle


class Rebuilder:
    """A consumer that knows nothing but the changes it receives."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, int], dict[str, Any]] = {}
        self.fill_announcements: Counter[int] = Counter()
        self.duplicates: list[EntityChange] = []
        self.recovered = 0

    def apply(self, change: EntityChange) -> None:
        key = (change.entity_type, change.entity_id)
        before = self.state.get(key)
        if change.event_type == "Deleted":
            if before is None:
                self.duplicates.append(change)
            self.state.pop(key, None)
        else:
            if before == dict(change.entity) or (change.event_type == "Created") != (
                before is None
            ):
                self.duplicates.append(change)
            self.state[key] = dict(change.entity)
        if change.entity_type == "fill" and change.event_type == "Created":
            self.fill_announcements[change.entity_id] += 1
        self.recovered += change.recovered

    async def run(self, engine: Engine) -> None:
        async for change in engine.events():
            self.apply(change)


async def churn(sim: Simulator, engine: Engine, rng: random.Random, drops: int) -> None:
    for _ in range(drops):
        await trio.sleep(rng.uniform(0.5, 15))
        await engine.wait_for(State.LIVE)
        await sim.drop_connections()


async def test_many_drops_under_heavy_activity_rebuild_the_truth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(2024)
    async with open_simulator(SimConfig(seed=31, activity_interval=0.05)) as sim:
        consumer = Rebuilder()
        async with open_engine(config_for(sim)) as engine, trio.open_nursery() as nursery:
            nursery.start_soon(consumer.run, engine)
            await churn(sim, engine, rng, drops=25)
            await engine.wait_for(State.LIVE)
            await settle(sim)
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
        assert engine.counters["fault.dropped"] == 25
        assert consumer.duplicates == []
        assert consumer.state == engine.store.as_dict() == sim.truth()
        assert consumer.recovered > 0  # events missed while away came back as recovered
        assert consumer.fill_announcements
        assert set(consumer.fill_announcements.values()) == {1}  # each fill once


async def test_fills_are_announced_once_across_process_restarts(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "fills.json"
    async with open_simulator(SimConfig(seed=12, activity_interval=0.5)) as sim:
        announced: Counter[int] = Counter()
        for run in range(3):  # three "processes", one after the other
            consumer = Rebuilder()
            config = config_for(sim, checkpoint_file=checkpoint)
            async with open_engine(config) as engine, trio.open_nursery() as nursery:
                nursery.start_soon(consumer.run, engine)
                await engine.wait_for(State.LIVE)
                await trio.sleep(30 + run)
                nursery.cancel_scope.cancel()
            announced.update(consumer.fill_announcements)
        fills = {k[1] for k in sim.truth() if k[0] == "fill"}
        assert set(announced) <= fills
        assert set(announced.values()) == {1}
        assert len(announced) > 10
