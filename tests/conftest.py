"""Shared fixtures: an in-process simulator and engine configs pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
import trio

from trio_tradovate import ChangeStream, EngineConfig
from trio_tradovate.sim import SimConfig, Simulator, open_simulator


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", help="run the slow soak profile")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak profile: run `make soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(SimConfig(seed=7)) as simulator:
        yield simulator


def sim_wall_clock(simulator: Simulator) -> Callable[[], datetime]:
    """The simulator's UTC wall clock, so token expiry is judged in its (virtual) time."""
    return simulator.wall_clock


def config_for(simulator: Simulator, **overrides: Any) -> EngineConfig:
    """An engine config that reaches ``simulator`` in memory (REST and websocket)."""
    return simulator.engine_config(**overrides)


async def settle(simulator: Simulator) -> None:
    """Pause the activity generator and let every frame in flight arrive.

    ``truth()`` changes the moment the simulator mutates its world; the matching ``props``
    frames reach the client a scheduler tick later. Compare stores only after this.
    """
    simulator.pause_activity()
    await trio.sleep(1)


async def rebuild_from_changes(
    changes: ChangeStream, quiet: float = 1.0
) -> dict[tuple[str, int], dict[str, Any]]:
    """Apply every change waiting on ``changes`` (until ``quiet`` seconds pass without one),
    as an application that knows nothing but the change stream would."""
    rebuilt: dict[tuple[str, int], dict[str, Any]] = {}
    while True:
        with trio.move_on_after(quiet) as idle:
            item = await changes.receive()
        if idle.cancelled_caught:
            return rebuilt
        key = (item.entity_type, item.entity_id)
        if item.event_type == "Deleted":
            del rebuilt[key]
        else:
            rebuilt[key] = dict(item.entity)
