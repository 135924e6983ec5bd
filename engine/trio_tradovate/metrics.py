"""Prometheus metrics of a running engine (the optional ``metrics`` extra).

Install with ``pip install 'trio-tradovate[metrics]'``. Nothing in the core imports this module,
so an application without the extra never loads ``prometheus_client``.

:class:`EngineCollector` is a ``prometheus_client`` custom collector: at every scrape it takes
one :class:`~trio_tradovate.health.EngineSnapshot` (through a callable, normally
``engine.snapshot_metrics``) and turns it into metric families, so nothing is updated on the
engine's hot path and the numbers of one scrape are consistent with each other.
:class:`DeliveryLatency` is the one metric a snapshot cannot give: the consumer observes it
when it takes changes. :class:`EngineMetrics` bundles both in a registry of their own.

Metric names and meanings are listed in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .health import EngineSnapshot
from .statechart import State

if TYPE_CHECKING:
    from .engine import Engine

#: Buckets of the receipt-to-consumer latency histogram, seconds (100 us to 5 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class EngineCollector(Collector):
    """Turns one snapshot per scrape into ``tradovate_*`` metric families."""

    def __init__(self, snapshot: Callable[[], EngineSnapshot], prefix: str = "tradovate") -> None:
        self._snapshot = snapshot
        self._prefix = prefix

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        p = self._prefix

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{p}_{name}", doc, labels=list(labels))

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(f"{p}_{name}", doc, labels=list(labels))

        state = gauge("socket_state", "1 for the state each socket is in", ("socket", "state"))
        in_state = gauge("socket_time_in_state_seconds", "seconds in the current state", ["socket"])
        generation = gauge("socket_generation", "connection attempts started", ["socket"])
        failed = gauge("socket_failed_attempts", "consecutive failed attempts", ["socket"])
        for socket in snap.sockets:
            label = str(socket.index)
            for candidate in State:
                state.add_metric([label, candidate.value], float(candidate is socket.state))
            in_state.add_metric([label], socket.time_in_state)
            generation.add_metric([label], socket.generation)
            failed.add_metric([label], socket.failed_attempts)
        yield from (state, in_state, generation, failed)

        counts = snap.counters
        reconnects = counter("reconnects", "reconnections after a fault")
        reconnects.add_metric([], counts.get("reconnects", 0))
        faults = counter("faults", "connections ended, by fault kind", ["kind"])
        for name, value in sorted(counts.items()):
            if name.startswith("fault."):
                faults.add_metric([name.removeprefix("fault.")], value)
        frames = counter("frames_received", "websocket frames read")
        frames.add_metric([], counts.get("frames_received", 0))
        events = counter("events", "entity events applied from props")
        events.add_metric([], counts.get("props_events", 0))
        every = counter("engine_counts", "every Engine.counters entry, by name", ["name"])
        for name, value in sorted(counts.items()):
            every.add_metric([name], value)
        yield from (reconnects, faults, frames, events, every)

        delivery = snap.delivery
        waiting = gauge("feed_waiting", "changes waiting for the consumer")
        waiting.add_metric([], delivery.get("waiting", 0))
        high = gauge("feed_high_water", "most changes ever waiting")
        high.add_metric([], delivery.get("high_water", 0))
        coalesced = counter("feed_coalesced", "changes merged while the consumer was behind")
        coalesced.add_metric([], delivery.get("coalesced", 0))
        queued = gauge("request_queue_depth", "requests waiting to be sent")
        queued.add_metric([], snap.queued_requests)
        yield from (waiting, high, coalesced, queued)

        locked = gauge("penalty_locked_out", "1 while a captcha or 429 lockout runs")
        locked.add_metric([], float(snap.locked_out))
        left = gauge("penalty_lockout_seconds_left", "seconds until the lockout ends (0: none)")
        left.add_metric([], snap.lockout_seconds_left)
        paused = gauge("penalty_pause_seconds_left", "seconds the p-ticket pause still runs")
        paused.add_metric([], snap.pause_seconds_left)
        penalties = counter("penalties", "p-ticket penalties received")
        penalties.add_metric([], snap.penalties)
        lockouts = counter("lockouts", "captcha or 429 lockouts begun")
        lockouts.add_metric([], snap.lockouts)
        yield from (locked, left, paused, penalties, lockouts)

        if snap.token_seconds_left is not None:
            token = gauge("token_seconds_left", "seconds until the access token expires")
            token.add_metric([], snap.token_seconds_left)
            yield token
        renewals = counter("token_renewals", "access token renewals")
        renewals.add_metric([], snap.token_renewals)
        logins = counter("token_logins", "logins (new sessions)")
        logins.add_metric([], snap.token_logins)
        stale = gauge("staleness_seconds", "seconds since each feed delivered data", ["feed"])
        for name, age in sorted(snap.staleness.items()):
            stale.add_metric([name], age)
        yield from (renewals, logins, stale)

        live_ok, _ = snap.live()
        ready_ok, _ = snap.ready()
        live = gauge("live", "1 while the engine runs (liveness)")
        live.add_metric([], float(live_ok))
        ready = gauge("ready", "1 while every socket is live and nothing blocks (readiness)")
        ready.add_metric([], float(ready_ok))
        yield from (live, ready)


class DeliveryLatency:
    """Receipt-to-consumer latency: the consumer calls :meth:`observe` when it takes
    changes, with the engine's snapshot (or the seconds itself).

    Measured from the moment the newest read was received to the moment the consumer takes
    changes. For a consumer that keeps up this is the latency of the change it takes; for one
    that is behind it is a lower bound (older changes waited longer), and the feed's depth
    (``tradovate_feed_waiting``) says how far behind it is.
    """

    def __init__(self, registry: CollectorRegistry, prefix: str = "tradovate") -> None:
        self.histogram = Histogram(
            f"{prefix}_delivery_latency_seconds",
            "seconds from a frame's receipt to the consumer taking its changes",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    def observe(self, seconds: float) -> None:
        self.histogram.observe(max(0.0, seconds))

    def observe_engine(self, engine: Engine) -> None:
        """Observe the age of the newest read of any of ``engine``'s sockets, now (call it
        as the consumer takes a change or a batch; nothing if no socket read yet)."""
        reads = [s.last_frame_at for s in engine.shards if s.last_frame_at is not None]
        if reads:
            self.observe(trio.current_time() - max(reads))


class EngineMetrics:
    """A registry of its own holding an engine's collector and its delivery latency."""

    def __init__(self, snapshot: Callable[[], EngineSnapshot], prefix: str = "tradovate") -> None:
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(snapshot, prefix))
        self.latency = DeliveryLatency(self.registry, prefix)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
