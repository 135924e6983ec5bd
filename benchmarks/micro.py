"""How fast does a ``props`` frame go from websocket text to the entity store?

``make bench`` runs a short form of it as one section of the side-by-side benchmark
(:func:`summary`); ``.venv/bin/python benchmarks/micro.py`` runs it in full. One run
measures, on the same frames and in the same process:

- ``json.loads``: the stdlib parsing ``a[...]`` frames and nothing else. This is the baseline:
  any client has to pay at least this to read Tradovate's JSON.
- ``json.loads + dict``: the baseline plus the least dispatch a client can do (pick ``props``
  events, key the entity by ``(entityType, id)`` in a dict), without validation.
- ``parse_frame``: trio-tradovate's general sans-I/O frame parser (orjson plus typed events).
- ``read_props``: the parser the engine's reader runs on ``props`` frames (orjson plus the
  checks, one plain update tuple per entity).
- ``full path``: the session's ``receive_batch`` and the store's ``apply_updates``, the work
  the engine's reader does per frame before handing changes on, one frame per call (the
  engine reads many frames per call when they come fast).
- ``full path + change feed``: the same through the store writer, the change feed and the
  consumer's ``pop_many``.

Frames are realistic: 200-300 bytes, one ``props`` event each, the entity types and field
shapes the simulator generates (cash balances, positions, orders), over a fixed pool of ids so
most events update an existing entity and every one changes something.

Throughput and the first table's p50/p99 come from batches of ``BATCH`` frames (one
``perf_counter_ns`` pair per batch, so the timer's own cost is amortised): the percentiles are
of the per-event mean within each batch, best of ``ROUNDS`` rounds. A second table times every
event alone, once, to show the tail that batching averages away.
"""

from __future__ import annotations

import gc
import json
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from trio_tradovate.feed import ChangeFeed
from trio_tradovate.protocol import EntityUpdate, parse_frame, read_props
from trio_tradovate.session import EntityEvents, Limits, SyncSession
from trio_tradovate.statechart import Node
from trio_tradovate.store import EntityStore
from trio_tradovate.writer import StoreWriter

FRAMES = 50_000
BATCH = 100
ROUNDS = 5  # each method runs ROUNDS times over all frames; the best round is reported
SEED = 20260105


def make_frames(count: int, seed: int) -> list[str]:
    """``a[{"e":"props","d":{...}}]`` frames shaped like the simulator's, 200-300 bytes."""
    rng = random.Random(seed)
    frames = []
    for n in range(count):
        kind = rng.choice(("cashBalance", "position", "order"))
        entity: dict[str, Any]
        if kind == "cashBalance":
            entity = {
                "id": 10799000 + rng.randrange(8),
                "timestamp": f"2026-01-05T14:{30 + n % 30:02d}:{n % 60:02d}.000Z",
                "accountId": 60320000 + rng.randrange(2),
                "tradeDate": {"year": 2026, "month": 1, "day": 5},
                "currencyId": 1,
                "amount": round(50000 + rng.uniform(-500, 500), 2),
                "realizedPnL": round(rng.uniform(-500, 500), 2),
                "weekRealizedPnL": round(rng.uniform(-900, 900), 2),
            }
        elif kind == "position":
            bought = rng.randrange(1, 9)
            sold = rng.randrange(0, bought)
            entity = {
                "id": 14171000 + rng.randrange(32),
                "timestamp": f"2026-01-05T14:{30 + n % 30:02d}:{n % 60:02d}.000Z",
                "accountId": 60320000 + rng.randrange(2),
                "contractId": 42659000 + rng.randrange(3),
                "netPos": bought - sold,
                "netPrice": 6900.0 + rng.randrange(-40, 40) * 0.25,
                "bought": bought,
                "boughtValue": bought * 6900.0,
                "sold": sold,
                "soldValue": sold * 6900.0,
            }
        else:
            entity = {
                "id": 33809000 + rng.randrange(256),
                "timestamp": f"2026-01-05T14:{30 + n % 30:02d}:{n % 60:02d}.000Z",
                "accountId": 60320000 + rng.randrange(2),
                "contractId": 42659000 + rng.randrange(3),
                "action": rng.choice(("Buy", "Sell")),
                "ordStatus": rng.choice(("Working", "Filled", "Canceled")),
                "admin": False,
                "archived": False,
                "orderQty": rng.randrange(1, 5),
                "orderType": rng.choice(("Market", "Limit")),
            }
        event = "Created" if n < 300 else "Updated"
        message = {"e": "props", "d": {"entityType": kind, "eventType": event, "entity": entity}}
        frames.append("a" + orjson.dumps([message]).decode())
    return frames


# --- the methods measured; each consumes one frame ------------------------------------------


def stdlib_parse() -> Callable[[str], object]:
    loads = json.loads

    def run(frame: str) -> object:
        return loads(frame[1:])

    return run


def stdlib_dict() -> Callable[[str], object]:
    loads = json.loads
    store: dict[tuple[str, int], dict[str, Any]] = {}

    def run(frame: str) -> object:
        for message in loads(frame[1:]):
            if message.get("e") == "props":
                data = message["d"]
                entity = data["entity"]
                store[(data["entityType"], entity["id"])] = entity
        return store

    return run


def parse_only() -> Callable[[str], object]:
    return parse_frame


def hot_parse() -> Callable[[str], object]:
    """The engine's own parser of ``props`` frames (what its reader runs per read)."""

    def run(frame: str) -> object:
        updates: list[EntityUpdate] = []
        read_props([frame], 0, updates)
        return updates

    return run


def _live_session() -> SyncSession:
    limits = Limits(connect=5, authorize=5, sync=5, silence=10, split_quiet=1)
    session = SyncSession(
        generation=1,
        now=0.0,
        limits=limits,
        token="bench",
        token_minted_at=None,
        renewable=False,
        split=False,
        sync_pace=lambda now: 0.0,
        lockout_seconds=1.0,
    )
    session.entered(Node.LIVE, 0.0)
    return session


def full_path() -> Callable[[str], object]:
    """Session, store writer and store, as the engine's reader runs them for a frame."""
    session = _live_session()
    store = EntityStore(shared=False)
    apply = store.apply_updates

    def run(frame: str) -> object:
        events, _ = session.receive_batch([frame], 1.0)
        for event in events:
            if isinstance(event, EntityEvents):
                apply(event.updates, 1)
        return store

    return run


def full_path_with_feed() -> Callable[[str], object]:
    """The full path plus the change feed, the way the engine runs it: the writer applies
    the updates and queues the changes, and the consumer (who keeps up, so nothing
    coalesces) takes them as ``EntityChange`` objects."""
    session = _live_session()
    feed = ChangeFeed(window=1024)
    writer = StoreWriter(
        EntityStore(shared=False), feed, entity_types=None, counters=Counter(), wake=lambda: None
    )
    delivered = 0

    def run(frame: str) -> object:
        nonlocal delivered
        events, _ = session.receive_batch([frame], 1.0)
        for event in events:
            if isinstance(event, EntityEvents):
                writer.events(event.updates, generation=1, owner=0)
        delivered += len(feed.pop_many(1024))
        return delivered

    return run


METHODS: dict[str, Callable[[], Callable[[str], object]]] = {
    "json.loads (baseline)": stdlib_parse,
    "json.loads + dict": stdlib_dict,
    "parse_frame": parse_only,
    "read_props": hot_parse,
    "full path": full_path,
    "full path + change feed": full_path_with_feed,
}


@dataclass(frozen=True)
class Result:
    name: str
    events_per_s: float
    mean_us: float
    p50_us: float
    p99_us: float


def measure(
    name: str,
    factory: Callable[[], Callable[[str], object]],
    frames: list[str],
    rounds: int = ROUNDS,
) -> Result:
    """Best of ``rounds`` rounds; per-event latencies come from that round's batches."""
    best_total = float("inf")
    best_batches: list[float] = []
    for _ in range(rounds):
        run = factory()  # a fresh store per round: every round does the same work
        batches = []
        gc.collect()
        for start in range(0, len(frames), BATCH):
            chunk = frames[start : start + BATCH]
            began = time.perf_counter_ns()
            for frame in chunk:
                run(frame)
            batches.append((time.perf_counter_ns() - began) / len(chunk) / 1000)
        total = sum(batches) * BATCH / 1e6  # seconds
        if total < best_total:
            best_total, best_batches = total, batches
    ordered = sorted(best_batches)
    return Result(
        name,
        events_per_s=len(frames) / best_total,
        mean_us=statistics.fmean(best_batches),
        p50_us=ordered[len(ordered) // 2],
        p99_us=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    )


def single_event_tails(
    factory: Callable[[], Callable[[str], object]], frames: list[str]
) -> tuple[float, float, float]:
    """p50, p99 and max in µs with every frame timed alone (timer cost included, ~0.1 µs).

    Batches hide tails; this shows the slow events themselves (dict resizes, GC pauses).
    """
    run = factory()
    timings = []
    clock = time.perf_counter_ns
    for frame in frames:
        began = clock()
        run(frame)
        timings.append(clock() - began)
    timings.sort()
    return (
        timings[len(timings) // 2] / 1000,
        timings[int(len(timings) * 0.99)] / 1000,
        timings[-1] / 1000,
    )


def summary(count: int = 20_000, rounds: int = 3) -> list[dict[str, float | str]]:
    """The first table's rows, short: ``count`` frames, best of ``rounds``."""
    frames = make_frames(count, SEED)
    results = [measure(name, factory, frames, rounds) for name, factory in METHODS.items()]
    baseline = results[0]
    return [
        {
            "method": r.name,
            "events_per_s": r.events_per_s,
            "mean_us": r.mean_us,
            "vs_baseline": r.mean_us / baseline.mean_us,
        }
        for r in results
    ]


def main() -> None:
    frames = make_frames(FRAMES, SEED)
    sizes = sorted(len(frame) for frame in frames)
    print(
        f"python {platform.python_version()} on {platform.machine()} ({sys.platform}); "
        f"{FRAMES} props frames, {sizes[0]}-{sizes[-1]} bytes "
        f"(median {sizes[len(sizes) // 2]}); best of {ROUNDS} rounds, batches of {BATCH}"
    )
    # Sanity: the full path applies the frames, and (nearly) every one changes something.
    check = full_path_with_feed()
    delivered = [check(frame) for frame in frames][-1]
    assert isinstance(delivered, int)
    assert delivered >= 0.99 * len(frames), f"{delivered} changes from {len(frames)} frames"
    results = [measure(name, factory, frames) for name, factory in METHODS.items()]
    baseline = results[0]
    print()
    print("| method | events/s | mean µs/event | p50 µs | p99 µs | time vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = r.mean_us / baseline.mean_us
        print(
            f"| {r.name} | {r.events_per_s:,.0f} | {r.mean_us:.2f} | {r.p50_us:.2f} "
            f"| {r.p99_us:.2f} | {ratio:.2f}x |"
        )
    print()
    print("Every event timed alone (one round, GC on):")
    print()
    print("| method | p50 µs | p99 µs | max µs |")
    print("|---|---:|---:|---:|")
    for name in ("json.loads (baseline)", "full path"):
        p50, p99, worst = single_event_tails(METHODS[name], frames)
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {worst:.1f} |")


if __name__ == "__main__":
    main()
