"""Shared fixtures: an in-process simulator and engine configs pointed at it.

The simulator is the package's own pytest plugin's (``trio_tradovate.pytest_plugin``, loaded
through its entry point): ``sim`` is its ``tradovate_sim``, with this suite's seed.

Both websocket layers stay tested without running the whole suite twice: every test of the
modules in :data:`LAYERED_MODULES` runs once per layer (the ``websocket_layer`` fixture, ids
``[websockets]`` and ``[trio-websocket]``), and :func:`config_for` passes the layer of the
running test to the engine. Elsewhere the engine's default layer is used. The hostile-server
quick profile picks a layer per seed instead (``tests/engine/test_hostile.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import trio

from trio_tradovate import ChangeStream, EngineConfig, testing
from trio_tradovate.config import WEBSOCKET_LAYERS
from trio_tradovate.sim import SimConfig, Simulator

#: Test modules run once per websocket layer (soak tests excepted): the acceptance scenarios,
#: the engine, sync and connect faults, and the fault schedules' quick profile.
LAYERED_MODULES = frozenset(
    {
        "test_engine_live",
        "test_engine_faults",
        "test_sync_faults",
        "test_connect_faults",
        "test_fault_schedules",
    }
)


#: The package's pytest plugin, by its entry point name.
PLUGIN = "trio_tradovate"


class _Selected:
    """The websocket layer of the running test (``None``: the engine's default)."""

    layer: str | None = None


def selected_layer() -> str | None:
    """The websocket layer the running test asked for, if any (see :func:`config_for`)."""
    return _Selected.layer


def layer_settings() -> dict[str, Any]:
    """``{"websocket_layer": ...}`` for the running test's layer, or ``{}``."""
    layer = _Selected.layer
    return {} if layer is None else {"websocket_layer": layer}


def pytest_configure(config: pytest.Config) -> None:
    # The package's plugin comes through its entry point; a .venv installed before the entry
    # point existed (or PYTEST_DISABLE_PLUGIN_AUTOLOAD) lacks it, and ``sim`` is built on it.
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.register(importlib.import_module(f"{PLUGIN}.pytest_plugin"), PLUGIN)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", help="run the slow soak profile")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if (
        module in LAYERED_MODULES
        and "websocket_layer" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("soak") is None
    ):
        metafunc.parametrize("websocket_layer", WEBSOCKET_LAYERS, indirect=True)


@pytest.fixture(autouse=True)
def websocket_layer(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The layer of this test: a parameter in :data:`LAYERED_MODULES`, else ``None``."""
    layer: str | None = getattr(request, "param", None)
    _Selected.layer = layer
    try:
        yield layer
    finally:
        _Selected.layer = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak profile: run `make soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tradovate_sim_config() -> SimConfig:
    """The seed this suite's tests were written for (the plugin's default is seed 0)."""
    return SimConfig(seed=7)


@pytest.fixture
async def sim(tradovate_sim: Simulator) -> Simulator:
    """The plugin's ``tradovate_sim``, under the name this suite uses."""
    return tradovate_sim


def sim_wall_clock(simulator: Simulator) -> Callable[[], datetime]:
    """The simulator's UTC wall clock, so token expiry is judged in its (virtual) time."""
    return simulator.wall_clock


def config_for(simulator: Simulator, **overrides: Any) -> EngineConfig:
    """An engine config that reaches ``simulator`` in memory (REST and websocket), on the
    running test's websocket layer unless ``overrides`` name one."""
    return simulator.engine_config(**{**layer_settings(), **overrides})


async def settle(simulator: Simulator) -> None:
    """:func:`trio_tradovate.testing.settle`: pause activity, let frames in flight arrive."""
    await testing.settle(simulator)


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
