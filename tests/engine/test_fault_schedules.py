"""Seeded fault schedules with invariants after every step (quick profile; soak under
``make soak``)."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
import trio

from .fault_schedule import STEPS, run_schedule

QUICK_SEEDS = range(6)
SOAK_SCHEDULES = 1000


@pytest.mark.parametrize("seed", QUICK_SEEDS)
async def test_quick_fault_schedule(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    report = await run_schedule(seed)
    assert sum(report.faults.values()) >= 6
    assert report.changes_seen > 0
    assert report.sockets >= 1


async def test_every_fault_kind_runs_in_a_long_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kinds = sorted(STEPS)
    random.Random(99).shuffle(kinds)
    report = await run_schedule(1234, sequence=kinds + kinds)
    assert report.faults == Counter(dict.fromkeys(STEPS, 2))


@pytest.mark.soak
def test_soak_fault_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    """At least 1,000 schedules; prints how many faults of each kind were injected."""
    totals: Counter[str] = Counter()
    started = time.monotonic()
    for seed in range(10_000, 10_000 + SOAK_SCHEDULES):
        clock = trio.testing.MockClock(autojump_threshold=0)
        report = trio.run(run_schedule, seed, clock=clock)
        totals.update(report.faults)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\n{SOAK_SCHEDULES} schedules in {elapsed:.0f} s; faults injected:")
        for name, count in sorted(totals.items()):
            print(f"  {name:28} {count}")
    assert sum(totals.values()) >= 6 * SOAK_SCHEDULES
