"""What one scenario runs with: its target, its engines, its evidence.

A scenario never builds an ``EngineConfig`` itself: :meth:`Context.config` does, so every
engine of a run goes through the same recording and fault-injecting connector chain, the same
REST recorder, and the same ``--set`` overrides (how a reviewer proves a broken setting makes
a criterion fail). Everything the engines did (transitions, counters, wire, REST) lands here
for the report.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from ..config import BackoffPolicy, Credentials, EngineConfig, websocket_url_for
from ..engine import Engine, open_engine
from ..errors import ConfigError
from ..proxy import NetworkFaults, ProxyConnector, SplicingConnector, open_fault_proxy
from ..sim import SimConfig, Simulator, open_simulator
from ..statechart import State, TransitionRecord
from ..testing import ScriptedConnector
from .model import CriterionSpec, Figure, Result, Verdict, judge
from .wire import RecordingConnector, RecordingTransport, Redactor, RestEntry, WireLog


@dataclass(frozen=True)
class Target:
    """Where the engines connect: the embedded simulator, or a real (or real-like) server."""

    kind: str  # "sim" or "remote"
    name: str = "sim"
    rest_url: str | None = None
    ws_url: str | None = None
    credentials: Credentials | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    #: Observation window of a remote run, seconds (the simulator's windows are virtual).
    duration: float = 30.0

    @property
    def is_sim(self) -> bool:
        return self.kind == "sim"

    def secrets(self) -> tuple[str, ...]:
        found = [self.access_token or ""]
        if self.credentials is not None:
            found += [self.credentials.password, self.credentials.sec or ""]
        return tuple(s for s in found if s)


def sim_credentials(seed: int) -> tuple[SimConfig, Credentials]:
    """A simulator login with secrets of its own (derived from the seed, so reproducible),
    so the pack's secret check has real secrets to look for."""
    rng = random.Random(f"certify-secrets-{seed}")
    password = f"pw-{rng.getrandbits(64):016x}"
    sec = f"sec-{rng.getrandbits(64):016x}"
    config = SimConfig(seed=seed, password=password, app_id="certify", sec=sec)
    return config, Credentials(config.username, password, app_id="certify", cid=1, sec=sec)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` items for :class:`EngineConfig` (``backoff.FIELD=VALUE`` for its policy).

    Raises:
        ConfigError: unknown name or a value of the wrong type.
    """
    names = {f.name: f for f in fields(EngineConfig)}
    backoff_names = {f.name for f in fields(BackoffPolicy)}
    settings: dict[str, Any] = {}
    backoff: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: use NAME=VALUE, e.g. heartbeat_interval=2.5")
        value: Any
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            value = lowered == "true"
        elif lowered in ("none", "null"):
            value = None
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        if name.startswith("backoff."):
            key = name.removeprefix("backoff.")
            if key not in backoff_names:
                raise ConfigError(f"--set {item!r}: BackoffPolicy has no field {key!r}")
            backoff[key] = value
        elif name in names and name not in _NOT_SETTABLE:
            settings[name] = value
        else:
            raise ConfigError(f"--set {item!r}: not an EngineConfig setting one can change here")
    if backoff:
        settings["backoff"] = BackoffPolicy(**backoff)
    return settings


_NOT_SETTABLE = frozenset(
    {"credentials", "access_token", "connector", "http_transport", "wall_clock", "rest_url"}
)


@dataclass
class EngineRun:
    """What one engine of a scenario left behind."""

    config: EngineConfig
    records: list[TransitionRecord] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


class Context:
    """One scenario's run: the target's pieces, the faults, the evidence."""

    def __init__(
        self,
        scenario: str,
        criteria: Mapping[str, CriterionSpec],
        target: Target,
        seed: int,
        overrides: Mapping[str, Any],
        redactor: Redactor,
        nursery: trio.Nursery,
        delay: float,
    ) -> None:
        self.scenario = scenario
        self.criteria = criteria
        self.target = target
        self.seed = seed
        self.overrides = dict(overrides)
        self.redactor = redactor
        self.nursery = nursery
        #: The latency the delay scenario injects each way (``--delay``).
        self.delay = delay
        self.wire = WireLog(redactor)
        self.rest: list[RestEntry] = []
        self.faults = NetworkFaults()
        self.sim: Simulator | None = None
        self.sim_config: SimConfig | None = None
        self.credentials: Credentials | None = target.credentials
        self.engines: list[EngineRun] = []
        self.results: dict[str, Result] = {}
        #: Client-side connect faults (DNS, TLS, timeout, refused), scripted per scenario.
        self.scripted: ScriptedConnector | None = None
        #: Message-processing latencies measured in this scenario, seconds.
        self.latencies: list[float] = []
        self._base: Any = None

    # ----------------------------------------------------------------------- the target

    @asynccontextmanager
    async def opened(self, sim_config: SimConfig | None = None) -> AsyncIterator[Context]:
        """Bring up the target's side: a simulator, or the proxy in front of the server."""
        if self.target.is_sim:
            base_config, credentials = sim_credentials(self.seed)
            config = replace(
                sim_config or base_config,
                password=base_config.password,
                app_id=base_config.app_id,
                sec=base_config.sec,
            )
            self.credentials = credentials
            self.redactor.add(credentials.password)
            self.redactor.add(credentials.sec)
            async with open_simulator(config) as sim:
                self.sim, self.sim_config = sim, config
                self._base = SplicingConnector(sim.connector(), self.faults, self.nursery)
                yield self
            return
        ws_url = self.target.ws_url or _derive_ws(self.target.rest_url or "")
        parts = urlsplit(ws_url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        async with open_fault_proxy(parts.hostname or "", port, faults=self.faults) as proxy:
            self._base = ProxyConnector(proxy)
            yield self

    def config(self, **overrides: Any) -> EngineConfig:
        """The engine config of this scenario: the target, the recorders, ``--set``, then
        the scenario's own ``overrides``."""
        self.scripted = ScriptedConnector(self._base)
        connector = RecordingConnector(self.scripted, self.wire)
        settings: dict[str, Any] = {**self.overrides, **overrides}
        settings.setdefault("seed", self.seed)
        if self.target.is_sim:
            assert self.sim is not None
            transport = RecordingTransport(self.sim.rest_transport(), self.redactor, self.rest)
            base: dict[str, Any] = {
                "credentials": self.credentials,
                "connector": connector,
                "http_transport": transport,
                "wall_clock": self.sim.wall_clock,
            }
        else:
            transport = RecordingTransport(httpx.AsyncHTTPTransport(), self.redactor, self.rest)
            base = {
                "rest_url": self.target.rest_url,
                "ws_url": self.target.ws_url,
                "credentials": self.target.credentials,
                "access_token": self.target.access_token,
                "connector": connector,
                "http_transport": transport,
            }
        return EngineConfig(**{**base, **settings})

    @asynccontextmanager
    async def engine(self, config: EngineConfig | None = None) -> AsyncIterator[Engine]:
        """Run one engine; its transitions and counters are kept when it ends."""
        config = config or self.config()
        run = EngineRun(config)
        self.engines.append(run)
        opened: list[Engine] = []
        try:
            async with open_engine(config) as engine:
                opened.append(engine)
                self.wire.generation = lambda: engine.generation
                yield engine
        finally:
            if opened:
                run.records = list(opened[0].transitions)
                run.counters.update(opened[0].counters)

    # ----------------------------------------------------------------------- evidence

    def judge(
        self,
        criterion: str,
        figures: Sequence[Figure] = (),
        checks: Sequence[tuple[str, bool]] = (),
        detail: str = "",
    ) -> Result:
        """Record the verdict of ``criterion`` from its evidence."""
        result = judge(self.criteria[criterion], self.scenario, figures, checks, detail)
        self.results[criterion] = result
        return result

    def inconclusive(self, criterion: str, detail: str, figures: Sequence[Figure] = ()) -> None:
        result = judge(self.criteria[criterion], self.scenario, figures, [], detail)
        result.verdict = Verdict.INCONCLUSIVE
        self.results[criterion] = result

    def window(self, sim_seconds: float) -> float:
        """How long to observe: virtual seconds on the simulator, ``--duration`` remotely."""
        return sim_seconds if self.target.is_sim else self.target.duration


def _derive_ws(rest_url: str) -> str:
    return websocket_url_for(rest_url)


async def wait_state(engine: Engine, state: State, within: float) -> TransitionRecord:
    """``engine.wait_for(state)`` bounded by ``within`` seconds (of the running clock)."""
    with trio.fail_after(within):
        return await engine.wait_for(state)
