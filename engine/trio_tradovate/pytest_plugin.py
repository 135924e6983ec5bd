"""pytest fixtures for applications built on trio-tradovate (``docs/testing.md``).

Installed with the package as the ``trio_tradovate`` plugin (a ``pytest11`` entry point), and
opt-in by use: a test suite that asks for none of these fixtures runs exactly as without
the plugin. No fixture is autouse, no hook touches collection or reporting, and importing
this module imports nothing but pytest: the simulator, the engine, trio and httpx are loaded
by the fixtures when a test asks for one. The one hook, ``pytest_configure``, registers the
two markers, so that suites run with ``--strict-markers`` may use them.

Every name starts with ``tradovate_`` so that it cannot shadow an application's own
fixtures (this repository's own ``sim`` fixture, in ``tests/conftest.py``, is built on
``tradovate_sim``). The fixtures are async (pytest-trio): run the tests in trio mode or mark
them ``@pytest.mark.trio``.

- ``tradovate_sim_config``: the :class:`~trio_tradovate.sim.SimConfig` of ``tradovate_sim``,
  from ``@pytest.mark.tradovate_sim(**fields)`` (default ``SimConfig()``, seed 0).
- ``tradovate_sim``: an in-process simulator, closed after the test.
- ``tradovate_sim_factory``: ``await factory(**fields)`` starts one more simulator.
- ``tradovate_connector``: a :class:`~trio_tradovate.testing.ScriptedConnector` over
  ``tradovate_sim``'s in-memory connector (client-side connect faults).
- ``tradovate_engine_config``: an ``EngineConfig`` reaching ``tradovate_sim`` through that
  connector, with ``@pytest.mark.tradovate_engine(**fields)`` applied.
- ``tradovate_engine``: an engine on that config, ``LIVE`` when the test starts (virtual
  time: the test must ask for ``autojump_clock``).
- ``tradovate_server``: ``tradovate_sim`` served on 127.0.0.1 (ephemeral port, real clock).
- ``tradovate_faults``: :class:`Faults`, server- and client-side fault injection.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .config import EngineConfig
    from .engine import Engine
    from .sim import SimConfig, SimServer, Simulator
    from .testing import ScriptedConnector

#: ``@pytest.mark.tradovate_sim(**fields)``: :class:`SimConfig` fields of ``tradovate_sim``.
SIM_MARKER = "tradovate_sim"
#: ``@pytest.mark.tradovate_engine(live=True, connect_faults=(), **fields)``.
ENGINE_MARKER = "tradovate_engine"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SIM_MARKER}(**fields): SimConfig fields of the tradovate_sim fixture "
        "(seed=..., activity_interval=..., accounts=...)",
    )
    config.addinivalue_line(
        "markers",
        f"{ENGINE_MARKER}(live=True, connect_faults=(), **fields): EngineConfig fields of "
        "the tradovate_engine fixture; live=False yields it before LIVE; connect_faults "
        "fail its first connects (kinds of trio_tradovate.testing.CONNECT_FAULTS)",
    )


def _marker_fields(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{name} takes keyword arguments only")
    return dict(marker.kwargs)


def _require_clock(fixture: str, *, virtual: bool) -> None:
    """Fail fast, saying what to change, when the test runs on the wrong clock."""
    import trio.testing

    mocked = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    if virtual and not mocked:
        raise pytest.UsageError(
            f"{fixture} runs in virtual time: add the `autojump_clock` fixture to the "
            "test's arguments (pytest-trio takes the clock from the test's own arguments)"
        )
    if not virtual and mocked:
        raise pytest.UsageError(
            f"{fixture} uses real sockets, which need the real clock: remove the "
            "`autojump_clock`/`mock_clock` fixture from this test"
        )


@pytest.fixture
def tradovate_sim_config(request: pytest.FixtureRequest) -> SimConfig:
    """The simulator's configuration: ``SimConfig(**fields)`` of the test's
    ``@pytest.mark.tradovate_sim(**fields)``. Override this fixture to change a suite's
    default."""
    from .sim import SimConfig

    fields = _marker_fields(request, SIM_MARKER)
    try:
        return SimConfig(**fields)
    except TypeError as exc:
        raise pytest.UsageError(f"@pytest.mark.{SIM_MARKER}: {exc}") from None


@pytest.fixture
async def tradovate_sim(tradovate_sim_config: SimConfig) -> AsyncIterator[Simulator]:
    """An in-process simulator (memory streams, no sockets), closed after the test."""
    from .sim import open_simulator

    async with open_simulator(tradovate_sim_config) as simulator:
        yield simulator


@pytest.fixture
async def tradovate_sim_factory() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """``await tradovate_sim_factory(config=None, **fields)``: one more simulator
    (``config`` with ``fields`` replaced, or ``SimConfig(**fields)``), closed after the test."""
    import trio

    from .sim import SimConfig, open_simulator

    async def serve(
        config: SimConfig, *, task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_simulator(config) as simulator:
            task_status.started(simulator)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:

        async def make(config: SimConfig | None = None, **fields: Any) -> Simulator:
            try:
                chosen = (
                    SimConfig(**fields) if config is None else dataclasses.replace(config, **fields)
                )
            except TypeError as exc:
                raise pytest.UsageError(f"tradovate_sim_factory: {exc}") from None
            simulator: Simulator = await nursery.start(serve, chosen)
            return simulator

        yield make
        nursery.cancel_scope.cancel()


@pytest.fixture
async def tradovate_connector(tradovate_sim: Simulator) -> ScriptedConnector:
    """The engine's connector: ``tradovate_sim`` in memory, behind a
    :class:`~trio_tradovate.testing.ScriptedConnector` (``fail_next("dns")``, ...)."""
    from .testing import ScriptedConnector

    return ScriptedConnector(tradovate_sim.connector())


@pytest.fixture
async def tradovate_engine_config(
    request: pytest.FixtureRequest,
    tradovate_sim: Simulator,
    tradovate_connector: ScriptedConnector,
) -> EngineConfig:
    """``tradovate_sim.engine_config(...)`` through ``tradovate_connector``, with the
    ``EngineConfig`` fields of ``@pytest.mark.tradovate_engine`` applied."""
    from .errors import ConfigError

    fields = _marker_fields(request, ENGINE_MARKER)
    fields.pop("live", None)
    fields.pop("connect_faults", None)
    try:
        return tradovate_sim.engine_config(**{"connector": tradovate_connector, **fields})
    except (TypeError, ConfigError) as exc:
        raise pytest.UsageError(f"@pytest.mark.{ENGINE_MARKER}: {exc}") from None


@pytest.fixture
async def tradovate_engine(
    request: pytest.FixtureRequest,
    tradovate_engine_config: EngineConfig,
    tradovate_connector: ScriptedConnector,
) -> AsyncIterator[Engine]:
    """An engine wired to ``tradovate_sim``, ``LIVE`` when the test starts (unless
    ``@pytest.mark.tradovate_engine(live=False)``), closed after the test. Virtual time:
    the test must ask for ``autojump_clock`` (or ``mock_clock``)."""
    from .engine import open_engine
    from .statechart import State

    _require_clock("tradovate_engine", virtual=True)
    fields = _marker_fields(request, ENGINE_MARKER)
    for kind in fields.get("connect_faults", ()):
        tradovate_connector.fail_next(kind)
    async with open_engine(tradovate_engine_config) as engine:
        if fields.get("live", True):
            await engine.wait_for(State.LIVE)
        yield engine


@dataclasses.dataclass(frozen=True)
class LoopbackSim:
    """A simulator served on a loopback port (what ``tradovate_server`` gives)."""

    sim: Simulator
    server: SimServer

    @property
    def rest_url(self) -> str:
        return self.server.rest_url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def port(self) -> int:
        return self.server.port

    def engine_config(self, **overrides: Any) -> EngineConfig:
        """An ``EngineConfig`` reaching this server over TCP: its URL, the demo user's
        credentials, the simulator's wall clock; ``overrides`` replace any field."""
        from .config import Credentials, EngineConfig

        config = self.sim.config
        settings: dict[str, Any] = {
            "rest_url": self.rest_url,
            "credentials": Credentials(config.username, config.password),
            "wall_clock": self.sim.wall_clock,
            "seed": 1,
        }
        settings.update(overrides)
        return EngineConfig(**settings)


@pytest.fixture
async def tradovate_server(tradovate_sim: Simulator) -> AsyncIterator[LoopbackSim]:
    """``tradovate_sim`` served on 127.0.0.1 on an ephemeral port (REST and websocket),
    for tests that need real sockets. Real clock: bound the test with ``trio.fail_after``."""
    from .sim import open_simulator_server

    _require_clock("tradovate_server", virtual=False)
    async with open_simulator_server(tradovate_sim, "127.0.0.1", 0) as server:
        yield LoopbackSim(tradovate_sim, server)


class Faults:
    """Fault injection for one test: the simulator's side (what a server does) and the
    connector's (what happens before a server is reached). Each method names the simulator
    or connector call it makes (``docs/simulator.md``, ``docs/faults.md``)."""

    def __init__(self, sim: Simulator, connector: ScriptedConnector) -> None:
        self.sim = sim
        self.connector = connector

    async def drop(self) -> None:
        """An abrupt TCP drop of every open socket (``sim.drop_connections()``)."""
        await self.sim.drop_connections()

    @contextmanager
    def silence(self) -> Iterator[None]:
        """Within the block the server writes nothing at all (``sim.stall()``): a
        half-open socket. What it would have written is delivered when the block ends."""
        self.sim.stall(True)
        try:
            yield
        finally:
            self.sim.stall(False)

    async def silent_for(self, seconds: float) -> None:
        """:meth:`silence` for ``seconds`` of trio time."""
        import trio

        with self.silence():
            await trio.sleep(seconds)

    def penalize(
        self,
        *,
        endpoint: str | None = None,
        p_time: float = 5.0,
        captcha: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching websocket requests with a ``p-ticket``
        penalty (``sim.penalize_requests``)."""
        self.sim.penalize_requests(endpoint=endpoint, p_time=p_time, captcha=captcha, times=times)

    def fail_connects(self, kind: str, times: int = 1) -> None:
        """Make the engine's next ``times`` connects fail with ``kind`` (``"dns"``,
        ``"tls"``, ``"timeout"``, ``"refused"``, ``"reset"``)."""
        self.connector.fail_next(kind, times)

    async def apply(self, spec: Mapping[str, Any]) -> None:
        """Any simulator fault as ``{"kind": ..., **params}`` (``sim.FAULT_KINDS``)."""
        from .sim import apply_fault

        await apply_fault(self.sim, spec)

    @property
    def injected(self) -> Counter[str]:
        """Server-side faults injected so far, by kind (``sim.injected``)."""
        return self.sim.injected

    @property
    def connects(self) -> list[tuple[float, str]]:
        """Every connect attempt: ``(trio time, outcome)``, ``"ok"`` or the fault kind."""
        return self.connector.attempts


@pytest.fixture
async def tradovate_faults(
    tradovate_sim: Simulator, tradovate_connector: ScriptedConnector
) -> Faults:
    """:class:`Faults` for ``tradovate_sim`` and the engine's ``tradovate_connector``."""
    return Faults(tradovate_sim, tradovate_connector)
