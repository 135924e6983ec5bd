"""Run the selected scenarios against a target and judge the run-wide criteria.

Each scenario runs in its own ``trio.run``: under a ``MockClock`` (virtual time) for the
simulator's virtual scenarios, on the real clock otherwise. Its own run means its own seed
(``--seed`` plus its place in the plan, whatever ``--only`` selects), its own simulator and
engines, and no state carried from one scenario to the next, so a scenario's figures are
the same alone or in a full run.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from ..statechart import TransitionRecord
from .context import Context, Target, parse_overrides
from .coverage import Coverage
from .measure import (
    auth_times,
    connect_times,
    heartbeat_gaps,
    percentile,
    reconnect_delays,
    sync_counts,
)
from .model import (
    HEARTBEAT_SLACK_REAL,
    STAGE2_AUTH,
    STAGE2_CONNECT,
    STAGE2_HEARTBEAT,
    STAGE2_PROCESSING,
    STAGE2_RECONNECT,
    CriterionSpec,
    Figure,
    Result,
    Verdict,
    judge,
)
from .scenarios import RUN_WIDE, SCENARIOS, Scenario
from .wire import Redactor, RestEntry, WireLog

#: Verdicts that do not make the exit status non-zero.
ACCEPTED = frozenset({Verdict.PASS, Verdict.SIMULATOR_ONLY})


@dataclass
class Options:
    """What ``trio-tradovate certify`` was asked to do."""

    target: Target
    seed: int = 1
    only: tuple[str, ...] | None = None
    overrides: tuple[str, ...] = ()
    delay: float = 0.4


@dataclass
class ScenarioRun:
    """One scenario's evidence."""

    scenario: Scenario
    seed: int
    clock: str
    results: list[Result] = field(default_factory=list)
    wire: WireLog | None = None
    rest: list[RestEntry] = field(default_factory=list)
    records: list[tuple[int, TransitionRecord]] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    network_faults: dict[str, int] = field(default_factory=dict)
    sim_faults: dict[str, int] = field(default_factory=dict)
    #: ``(socket index, syncrequests the server counted, violations)`` per simulated socket.
    sim_sockets: list[tuple[int, int, list[str]]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    heartbeat_interval: float = 2.5
    after_live_cap: float = 10.0
    connect_timeout: float = 5.0
    coverage: Coverage = field(default_factory=Coverage)
    wall_seconds: float = 0.0
    error: str | None = None
    ran: bool = True
    #: The engine's and the simulator's warnings and errors, in order.
    log: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A whole run: every scenario's evidence, every verdict, the coverage."""

    options: Options
    runs: list[ScenarioRun]
    run_wide: list[Result]
    coverage: Coverage
    wall_seconds: float
    redactor: Redactor
    settings: dict[str, Any]

    @property
    def results(self) -> list[Result]:
        return [result for run in self.runs for result in run.results] + self.run_wide

    @property
    def passed(self) -> bool:
        """Every criterion the target allows was judged and passed (``--only`` excepted)."""
        judged = [r for r in self.results if r.verdict is not Verdict.NOT_RUN]
        return bool(judged) and all(r.verdict in ACCEPTED for r in judged)

    def counts(self) -> Counter[str]:
        return Counter(result.verdict.value for result in self.results)


def select(only: Sequence[str] | None) -> list[Scenario]:
    """The scenarios ``--only`` names, in plan order.

    Raises:
        ValueError: an unknown id.
    """
    if not only:
        return list(SCENARIOS)
    known = {scenario.id for scenario in SCENARIOS}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"unknown scenario {unknown}; one of {', '.join(sorted(known))}")
    return [scenario for scenario in SCENARIOS if scenario.id in only]


def run(options: Options) -> Report:
    """Run the plan (blocking; each scenario is its own ``trio.run``)."""
    overrides = parse_overrides(options.overrides)
    redactor = Redactor(options.target.secrets())
    started = time.perf_counter()
    chosen = {scenario.id for scenario in select(options.only)}
    runs = []
    total = Coverage()
    for index, scenario in enumerate(SCENARIOS):
        seed = options.seed * 1000 + index
        if scenario.id not in chosen:
            continue
        if not options.target.is_sim and not scenario.remote:
            runs.append(_simulator_only(scenario, seed))
            continue
        result = _run_one(scenario, seed, options, overrides, redactor)
        total.update(result.coverage)
        runs.append(result)
    run_wide = judge_run_wide(runs, options.target.is_sim)
    return Report(
        options,
        runs,
        run_wide,
        total,
        time.perf_counter() - started,
        redactor,
        {k: repr(v) for k, v in overrides.items()},
    )


def _simulator_only(scenario: Scenario, seed: int) -> ScenarioRun:
    found = ScenarioRun(scenario, seed, "none", ran=False)
    for spec in scenario.criteria:
        found.results.append(
            Result(
                spec,
                scenario.id,
                Verdict.SIMULATOR_ONLY,
                detail="cannot be provoked safely against a real server: run --target sim",
            )
        )
    return found


def _run_one(
    scenario: Scenario,
    seed: int,
    options: Options,
    overrides: dict[str, Any],
    redactor: Redactor,
) -> ScenarioRun:
    virtual = options.target.is_sim and scenario.clock == "virtual"
    found = ScenarioRun(scenario, seed, "virtual" if virtual else "real")
    holder: list[Context] = []
    criteria = {spec.id: spec for spec in scenario.criteria}

    async def main() -> None:
        _seed_scheduler(seed)
        # Ctrl-C and SIGTERM reach the run through a receiver, not as a KeyboardInterrupt
        # raised wherever the run happens to be: one raised inside a library's own
        # ``except BaseException`` (``transitions`` has some) could be swallowed, and the run
        # would go on. The signal cancels the scenario, which closes like any other exit;
        # then the interrupt is raised here, between two scenarios' runs.
        interrupted: list[int] = []
        with _stop_signals() as signals, trio.CancelScope() as stoppable:

            async def watch() -> None:
                async for signum in signals:
                    interrupted.append(signum)
                    stoppable.cancel()
                    return

            async with trio.open_nursery() as watcher:
                watcher.start_soon(watch)
                await _scenario()
                watcher.cancel_scope.cancel()
        if interrupted:
            raise KeyboardInterrupt

    async def _scenario() -> None:
        async with trio.open_nursery() as nursery:
            ctx = Context(
                scenario.id,
                criteria,
                options.target,
                seed,
                overrides,
                redactor,
                nursery,
                options.delay,
            )
            holder.append(ctx)
            limit = scenario.limit if options.target.is_sim else 600.0 + 4 * options.target.duration
            with trio.fail_after(limit):
                sim_config = scenario.sim_config(seed) if scenario.sim_config else None
                async with ctx.opened(sim_config):
                    try:
                        await scenario.run(ctx)
                    finally:
                        if ctx.sim is not None:
                            found.sim_faults = dict(ctx.sim.injected)
                            found.sim_sockets = [
                                (a.index, a.syncrequest_count, list(a.violations))
                                for a in ctx.sim.sockets
                            ]
            nursery.cancel_scope.cancel()

    began = time.perf_counter()
    collector = _LogCollector(found.log)
    library = logging.getLogger("trio_tradovate")
    library.addHandler(collector)
    try:
        _run_main(main, virtual, found, redactor)
    finally:
        library.removeHandler(collector)
    found.wall_seconds = time.perf_counter() - began
    return _collect(found, holder, scenario)


def _stop_signals() -> Any:
    """A receiver of SIGINT and SIGTERM for one scenario's run, where signals can be received
    (the main thread); elsewhere a context that receives nothing."""
    if threading.current_thread() is threading.main_thread():
        return trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    return _no_signals()


@contextmanager
def _no_signals() -> Iterator[AsyncIterator[int]]:
    send, receive = trio.open_memory_channel[int](0)
    with send, receive:  # nothing is ever sent
        yield receive


class _LogCollector(logging.Handler):
    """Keeps the library's warnings for the pack's ``engine.log`` (stamped with trio time).

    While it is attached the library has a handler, so Python's last-resort handler no
    longer prints the warnings the scenarios provoke on purpose to the console; a caller
    who configured logging still gets them through the root logger.
    """

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        try:
            now = f"{trio.current_time():12.3f}"
        except RuntimeError:
            now = " " * 12
        self._into.append(f"{now} {record.levelname:7} {record.name}: {record.getMessage()}")


def _run_main(main: Any, virtual: bool, found: ScenarioRun, redactor: Redactor) -> None:
    with found.coverage.installed():
        try:
            clock = trio.testing.MockClock(autojump_threshold=0) if virtual else None
            trio.run(main, clock=clock)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt) or (
                isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
            )
            if interrupted:  # Ctrl-C or SIGTERM: the whole run stops (the CLI exits 0)
                raise
            found.error = redactor.scrub(_describe(exc))


def _collect(found: ScenarioRun, holder: list[Context], scenario: Scenario) -> ScenarioRun:
    if holder:
        ctx = holder[0]
        found.wire = ctx.wire
        found.rest = list(ctx.rest)
        found.latencies = list(ctx.latencies)
        found.network_faults = dict(ctx.faults.injected)
        for number, engine in enumerate(ctx.engines):
            found.records += [(number, record) for record in engine.records]
            found.counters.update(engine.counters)
        if ctx.engines:
            config = ctx.engines[0].config
            found.heartbeat_interval = config.heartbeat_interval
            found.after_live_cap = config.backoff.after_live_cap
            found.connect_timeout = config.connect_timeout
        judged = ctx.results
    else:
        judged = {}
    for spec in scenario.criteria:
        if spec.id in judged:
            found.results.append(judged[spec.id])
        else:
            why = found.error or "the scenario ended without judging it"
            found.results.append(
                Result(spec, scenario.id, Verdict.FAIL, detail=f"not judged: {why}")
            )
    return found


def _seed_scheduler(seed: int) -> None:
    """Trio runs each batch of ready tasks forwards or backwards at random; seed that choice
    so two sockets that act at the same virtual instant (sharding) do so in the same order
    on every run of a seed, and the pack is the same byte for byte.

    trio has no public way to seed it; this reaches its private ``_r`` on purpose and only if
    it is there. Without it a run is still correct, only its interleavings may differ.
    """
    from trio._core import _run as trio_run

    scheduler_random = getattr(trio_run, "_r", None)
    if scheduler_random is not None:
        scheduler_random.seed(seed)


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    if isinstance(exc, BaseExceptionGroup):
        inner = exc.exceptions[0]
        return _describe(inner)
    if isinstance(exc, trio.TooSlowError):
        return "timed out: a step did not complete within its bound"
    return "".join(lines).strip()[:500]


def _spec(criterion: str) -> CriterionSpec:
    return next(spec for spec in RUN_WIDE if spec.id == criterion)


def judge_run_wide(runs: Sequence[ScenarioRun], on_sim: bool) -> list[Result]:
    """The criteria judged over every connection of every scenario that ran."""
    ran = [r for r in runs if r.ran and r.wire is not None]
    if not ran:
        return [Result(spec, "(run-wide)", Verdict.NOT_RUN) for spec in RUN_WIDE]
    results = []
    counts = [n for r in ran if r.wire for n in sync_counts(r.wire).values()]
    server_counts = [n for r in ran for _, n, _ in r.sim_sockets]
    violations = [
        f"{r.scenario.id} socket {i}: {v}" for r in ran for i, _, vs in r.sim_sockets for v in vs
    ]
    figures = [
        Figure(
            "most syncrequests the engine sent on one socket",
            max(counts, default=0),
            unit="",
            stage2=1,
        )
    ]
    if on_sim:
        figures.append(
            Figure(
                "most syncrequests the server counted on one socket",
                max(server_counts, default=0),
                unit="",
                stage2=1,
            )
        )
    results.append(
        judge(
            _spec("events.one_sync"),
            "(run-wide)",
            figures,
            [("no protocol violation recorded by the server", not violations)],
            detail="; ".join(violations[:10]) or f"{len(counts)} sockets checked",
        )
    )
    undelayed = [r for r in ran if r.scenario.id != "network_delay"]
    connects = [t for r in undelayed if r.wire for t in connect_times(r.wire)]
    worst_timeout = min((r.connect_timeout for r in undelayed), default=5.0)
    results.append(
        judge(
            _spec("perf.connect"),
            "(run-wide)",
            [
                Figure(
                    "worst connection time",
                    max(connects, default=math.inf),
                    stage2=STAGE2_CONNECT,
                    engine=worst_timeout,
                ),
                Figure("connections measured", len(connects), unit="", engine=1, lower=True),
            ],
        )
    )
    auths = [t for r in undelayed for t in auth_times(rec for _, rec in r.records)]
    results.append(
        judge(
            _spec("perf.auth"),
            "(run-wide)",
            [
                Figure(
                    "worst authorization time", max(auths, default=math.inf), stage2=STAGE2_AUTH
                ),
                Figure("authorizations measured", len(auths), unit="", engine=1, lower=True),
            ],
        )
    )
    excess: list[float] = []
    worst_gap = 0.0
    for r in ran:
        assert r.wire is not None
        allowed = r.heartbeat_interval + (HEARTBEAT_SLACK_REAL if r.clock == "real" else 0.0)
        for connection in range(r.wire.connections):
            largest, _, count = heartbeat_gaps(r.wire, connection)
            if count >= 2:
                worst_gap = max(worst_gap, largest)
                excess.append(largest - allowed)
    results.append(
        judge(
            _spec("perf.heartbeat"),
            "(run-wide)",
            [
                Figure(
                    "worst gap between heartbeats",
                    worst_gap if excess else math.inf,
                    stage2=STAGE2_HEARTBEAT,
                ),
                Figure(
                    "worst gap beyond the configured interval",
                    max(excess, default=math.inf),
                    engine=0.0,
                ),
                Figure(
                    "connections with two or more heartbeats",
                    len(excess),
                    unit="",
                    engine=1,
                    lower=True,
                ),
            ],
        )
    )
    delays = [
        (reason, d, r.after_live_cap)
        for r in ran
        for reason, d in reconnect_delays([rec for _, rec in r.records])
    ]
    cap = min((c for _, _, c in delays), default=10.0)
    worst = max(delays, key=lambda item: item[1], default=None)
    results.append(
        judge(
            _spec("perf.reconnect"),
            "(run-wide)",
            [
                Figure(
                    "worst reconnection attempt delay",
                    worst[1] if worst else math.inf,
                    stage2=STAGE2_RECONNECT,
                    engine=cap,
                ),
                Figure(
                    "losses of a live connection measured",
                    len(delays),
                    unit="",
                    engine=1,
                    lower=True,
                ),
            ],
            detail=f"worst after: {worst[0]}" if worst else "",
        )
    )
    latencies = [t for r in ran for t in r.latencies]
    if latencies:
        results.append(
            judge(
                _spec("perf.processing"),
                "(run-wide)",
                [
                    Figure(
                        "p99.9 processing time",
                        percentile(latencies, 0.999) * 1000,
                        unit="ms",
                        stage2=STAGE2_PROCESSING * 1000,
                    ),
                    Figure("worst processing time", max(latencies) * 1000, unit="ms"),
                    Figure("messages measured", len(latencies), unit=""),
                ],
            )
        )
    else:
        results.append(
            Result(
                _spec("perf.processing"),
                "(run-wide)",
                Verdict.NOT_RUN,
                detail="no scenario that measures processing ran (heartbeats_load, sync_events)",
            )
        )
    return [_unless_empty(result) for result in results]


def _unless_empty(result: Result) -> Result:
    """A run-wide criterion whose count figure is zero had no evidence: not run, not failed
    (``--only`` picked scenarios that do not produce it)."""
    counted = [f for f in result.figures if f.lower and f.unit == "" and f.value == 0]
    if counted:
        result.verdict = Verdict.NOT_RUN
        result.detail = "no scenario that ran produced this evidence"
    return result
