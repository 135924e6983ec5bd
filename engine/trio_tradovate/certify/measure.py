"""Figures read back from the evidence: the wire log and the transition records.

Kept apart from the scenarios so a figure is computed one way for every scenario and for the
run-wide criteria (the worst connect time over every connection of the run, ...).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

from ..statechart import State, TransitionRecord
from .wire import WireLog


def connect_times(wire: WireLog) -> list[float]:
    """Per connection that got ``o``: seconds from asking for the connection (DNS, TCP, TLS,
    websocket upgrade) to the server's ``o``."""
    times = []
    for index, began in sorted(wire.started.items()):
        opened = wire.opened(index)
        if opened is not None:
            times.append(opened - began)
    return times


def auth_times(records: Iterable[TransitionRecord]) -> list[float]:
    """Per authorized connection: seconds from ``o`` (when ``authorize`` is sent) to its
    ``s:200`` answer."""
    opened: dict[tuple[int, int], float] = {}
    times = []
    for record in records:
        key = (record.shard, record.generation)
        if record.trigger == "opened":
            opened[key] = record.time
        elif record.trigger == "authorized" and key in opened:
            times.append(record.time - opened.pop(key))
    return times


def heartbeat_gaps(wire: WireLog, connection: int) -> tuple[float, float, int]:
    """``(largest gap between heartbeats, first heartbeat after o, count)`` on one
    connection; ``inf`` where there is nothing to measure."""
    beats = wire.heartbeats(connection)
    opened = wire.opened(connection)
    first = beats[0] - opened if beats and opened is not None else math.inf
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    return (max(gaps) if gaps else math.inf, first, len(beats))


def reconnect_delays(records: Sequence[TransitionRecord]) -> list[tuple[str, float]]:
    """``(reason, seconds)`` from losing a live connection to the next attempt, per shard.

    Quota shutdowns and server-imposed waits are left out: there the server orders a longer
    wait, and the engine logs that it makes that documented exception.
    """
    delays = []
    last: dict[int, TransitionRecord] = {}
    for record in records:
        if record.region != "connection":
            continue
        lost = last.get(record.shard)
        if (
            lost is not None
            and lost.source is State.LIVE
            and lost.dest is State.BACKOFF
            and record.trigger == "retry"
            and not ("Quota" in lost.reason or lost.reason.startswith("sync_"))
        ):
            delays.append((lost.reason, record.time - lost.time))
        last[record.shard] = record
    return delays


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile (nearest rank); ``inf`` for no values."""
    if not values:
        return math.inf
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


def sync_counts(wire: WireLog) -> dict[int, int]:
    """``user/syncrequest`` frames the engine sent, per connection (0 where none)."""
    counts = dict.fromkeys(range(wire.connections), 0)
    for connection, endpoint, _ in wire.out_requests():
        if endpoint == "user/syncrequest":
            counts[connection] = counts.get(connection, 0) + 1
    return counts
