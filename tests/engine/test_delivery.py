"""The consumer's end: one task boundary from socket to consumer, batches when behind, the
same guarantees as single changes; and the collector kept off snapshots."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_tradovate import ChangeStream, EntityChange, State, collector, open_engine
from trio_tradovate.collector import LARGE_FRAME, CollectorDiscipline, ProcessFreeze
from trio_tradovate.feed import ChangeFeed
from trio_tradovate.sim import SimConfig, Simulator, open_simulator
from trio_tradovate.store import EntityChange as Change

from ..conftest import config_for, settle


def change(entity_id: int, n: int, kind: str = "Updated") -> Change:
    return Change("order", entity_id, kind, {"id": entity_id, "n": n}, False, 1)


def test_the_window_keeps_changes_as_they_came_and_coalesces_behind_it() -> None:
    feed = ChangeFeed(window=4)
    feed.push(change(1, 0, "Created"))
    for n in range(1, 10):
        feed.push(change(1, n))  # the consumer reads nothing meanwhile
    batch = feed.pop_many(100)
    assert [c.entity["n"] for c in batch] == [0, 1, 2, 3, 9]  # 4 as they came, then the last
    assert [c.coalesced for c in batch] == [False, False, False, False, True]
    assert feed.pop_many(100) == []
    assert feed.coalesced == 5


def test_pop_many_gives_what_pop_gives_one_by_one() -> None:
    for window in (0, 3, 1000):
        one, many = ChangeFeed(window=window), ChangeFeed(window=window)
        for feed in (one, many):
            for n in range(50):
                kind = "Deleted" if n % 7 == 6 else "Updated"
                feed.push(change(n % 5, n, kind))
        singles = []
        while (item := one.pop()) is not None:
            singles.append(item)
        batches: list[Change] = []
        while batch := many.pop_many(4):
            batches.extend(batch)
        assert singles == batches


async def test_batches_rebuild_the_store_exactly(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim, event_buffer=8)) as engine:
        changes = engine.events()
        assert isinstance(changes, ChangeStream)
        await engine.wait_for(State.LIVE)
        await trio.sleep(120)  # the consumer is behind: batches come coalesced
        await settle(sim)
        rebuilt: dict[tuple[str, int], dict[str, object]] = {}
        sizes = []
        while changes.statistics()["waiting"]:
            batch = await changes.receive_batch()
            sizes.append(len(batch))
            for item in batch:
                key = (item.entity_type, item.entity_id)
                if item.event_type == "Deleted":
                    del rebuilt[key]
                else:
                    rebuilt[key] = dict(item.entity)
        assert rebuilt == engine.store.as_dict() == sim.truth()
        assert max(sizes) > 1  # things moved in batches
        with pytest.raises(ValueError, match="max_items"):
            await changes.receive_batch(0)


async def test_the_stream_ends_after_the_engine_and_close_is_final(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        changes = engine.events()
        await engine.wait_for(State.LIVE)
        await trio.sleep(5)
    taken: list[EntityChange] = [c async for c in changes]  # what was waiting, then the end
    assert taken
    with pytest.raises(trio.EndOfChannel):
        await changes.receive()
    async with open_engine(config_for(sim)) as engine:
        closing = engine.events()
        await engine.wait_for(State.LIVE)
        await closing.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await closing.receive()
        await trio.sleep(5)
        assert engine.state is State.LIVE  # the store keeps updating


def _tasks(root: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield root
    for nursery in root.child_nurseries:
        for child in nursery.child_tasks:
            yield from _tasks(child)


async def test_one_task_stands_between_the_socket_and_the_consumer(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """The supervisor reads the socket and writes the store; the consumer pulls from the feed.
    No delivery task, no channel: the engine's own tasks are the ones named here."""
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        root = trio.lowlevel.current_root_task()
        assert root is not None
        names = {task.name.rsplit(".", 1)[-1] for task in _tasks(root)}
    assert "_deliver" not in names
    engine_tasks = {
        n for n in names if n in {"_supervise", "_run_shard", "run", "_heartbeat", "_sender"}
    }
    assert engine_tasks == {"_supervise", "_run_shard", "run", "_heartbeat", "_sender"}


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector's process state as in a process where no engine has gone live yet
    (the suite's process has run many)."""
    monkeypatch.setattr(collector, "process_freeze", ProcessFreeze())


def test_the_collector_is_paused_only_for_large_frames_and_restored() -> None:
    discipline = CollectorDiscipline(enabled=True).for_socket()
    small, large = "x" * 100, "x" * LARGE_FRAME
    with discipline.around([small, small]):
        assert gc.isenabled()
    with discipline.around([small, large.encode()]):
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with discipline.around([large]):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the application's choice is kept
    finally:
        gc.enable()
    with CollectorDiscipline(enabled=False).for_socket().around([large]):
        assert gc.isenabled()
    with discipline.around([]):  # a timed-out read holds nothing
        assert gc.isenabled()


def test_the_first_snapshot_freezes_the_start_up_and_later_small_ones_do_not(
    fresh_process: None,
) -> None:
    """A fresh engine's first snapshot, small or not: ``gc.freeze()``, with no collection;
    given back when that connection ends, without a collection (a large snapshot's end has
    one: ``test_a_large_snapshot_sets_off_no_full_collection``); later small snapshots are
    not frozen (that would park every reconnect's garbage); a disabled discipline touches
    nothing."""
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    gc.unfreeze()
    gc.callbacks.append(count)
    try:
        CollectorDiscipline(enabled=False).for_socket().snapshot_applied()
        assert gc.get_freeze_count() == 0
        discipline = CollectorDiscipline(enabled=True).for_socket()
        discipline.snapshot_applied()
        assert gc.get_freeze_count() > 0
        assert full == []
        discipline.connection_ended()
        assert gc.get_freeze_count() == 0
        assert full == []
        discipline.snapshot_applied()
        assert gc.get_freeze_count() == 0
        discipline.connection_ended()
        assert full == []
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()


def test_a_freeze_is_given_back_only_when_the_last_socket_that_took_it_ends(
    fresh_process: None,
) -> None:
    """One collector per process, several sockets and engines on it: a socket that froze
    nothing (market data) ending gives nothing back; one of two sockets that froze ending
    gives nothing back while the other streams; the last one gives everything back, with the
    one full collection if any of them froze a large snapshot, whichever engine it is in."""
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    large = "x" * LARGE_FRAME
    gc.unfreeze()
    gc.callbacks.append(count)
    try:
        engine = CollectorDiscipline(enabled=True)
        user, market_data = engine.for_socket(), engine.for_socket()
        user.snapshot_applied()  # the start-up, frozen for the user socket
        with market_data.around([large]):
            pass
        market_data.connection_ended()
        assert gc.get_freeze_count() > 0
        assert full == []

        other_engine = CollectorDiscipline(enabled=True).for_socket()
        with other_engine.around([large]):  # a large snapshot, frozen for that socket
            pass
        other_engine.snapshot_applied()
        user.connection_ended()
        assert gc.get_freeze_count() > 0  # the other engine's socket still streams on it
        assert full == []
        user.connection_ended()  # twice: nothing more
        assert gc.get_freeze_count() > 0

        other_engine.connection_ended()
        assert gc.get_freeze_count() == 0
        assert full == [1]  # its large snapshot's garbage, freed while no socket froze
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()


def test_only_the_first_engine_of_a_process_freezes_its_start_up(fresh_process: None) -> None:
    """Engines opened one after another: the first one's start freezes, the next ones'
    small snapshots do not (each one's freeze went back into the oldest generation unseen by
    the collector's count, and the soak grew by 1,500 objects an engine)."""
    gc.unfreeze()
    try:
        first = CollectorDiscipline(enabled=True).for_socket()
        first.snapshot_applied()
        assert gc.get_freeze_count() > 0
        first.connection_ended()
        assert gc.get_freeze_count() == 0
        for _ in range(3):
            later = CollectorDiscipline(enabled=True).for_socket()
            later.snapshot_applied()
            assert gc.get_freeze_count() == 0
            later.connection_ended()
    finally:
        gc.unfreeze()


async def test_a_large_snapshot_sets_off_no_full_collection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    full: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(1)

    async with open_simulator(SimConfig(seed=1, accounts=10_000, activity_interval=None)) as sim:
        config = config_for(sim, max_message_size=64 << 20)
        gc.collect()
        gc.callbacks.append(count)
        try:
            async with open_engine(config) as engine:
                await engine.wait_for(State.LIVE)
                assert len(engine.store) > 20_000
                assert full == []
                assert gc.get_freeze_count() > len(engine.store)  # the snapshot is frozen
                assert gc.isenabled()
                await sim.drop_connections()
                await engine.wait_for(State.BACKOFF)
                assert gc.get_freeze_count() == 0  # given back when the connection ended
        finally:
            gc.callbacks.remove(count)
            gc.unfreeze()


async def test_a_small_snapshot_is_not_frozen(
    sim: Simulator, autojump_clock: trio.testing.MockClock, fresh_process: None
) -> None:
    """Freezing every snapshot would park each reconnect's cyclic garbage until a full
    collection; only snapshots that came in a large frame are frozen, and the first one
    (the start-up's objects with it), given back when its connection ends."""
    gc.unfreeze()
    try:
        async with open_engine(config_for(sim)) as engine:
            await engine.wait_for(State.LIVE)
            assert gc.get_freeze_count() > 0  # the start-up
            await sim.drop_connections()
            await engine.wait_for(State.BACKOFF)
            assert gc.get_freeze_count() == 0
            await engine.wait_for(State.LIVE)
            assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def _docs_block(path: str, marker: str) -> str:
    """The ``python`` code block of ``docs/<path>`` that contains ``marker``."""
    text = (Path(__file__).parents[2] / "docs" / path).read_text()
    blocks = text.split("```python\n")[1:]
    [block] = [b.split("```")[0] for b in blocks if marker in b]
    return block


async def test_the_documented_batch_consumer_rebuilds_the_store(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    """docs/state-recovery.md's batch consumer, as written, against a live stream: what it
    applies rebuilds the store exactly."""
    namespace: dict[str, Any] = {}
    exec(compile(_docs_block("state-recovery.md", "async def consume"), "docs", "exec"), namespace)
    rebuilt: dict[tuple[str, int], dict[str, Any]] = {}

    def apply(change: EntityChange) -> None:
        key = (change.entity_type, change.entity_id)
        if change.event_type == "Deleted":
            del rebuilt[key]
        else:
            rebuilt[key] = dict(change.entity)

    async with open_engine(config_for(sim)) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(namespace["consume"], engine, apply)
        await engine.wait_for(State.LIVE)
        await trio.sleep(30)  # the simulator's activity streams meanwhile
        await settle(sim)
        assert engine.counters["props_events"] > 0
        assert rebuilt == engine.store.as_dict()
        nursery.cancel_scope.cancel()
