"""Figures read back from records and the wire log, on hand-made evidence."""

from __future__ import annotations

import math

from trio_tradovate.certify.measure import (
    auth_times,
    connect_times,
    heartbeat_gaps,
    percentile,
    reconnect_delays,
    sync_counts,
)
from trio_tradovate.certify.wire import Redactor, WireEntry, WireLog
from trio_tradovate.statechart import State, TransitionRecord


def record(
    seq: int,
    time: float,
    trigger: str,
    source: State,
    dest: State,
    reason: str = "",
    generation: int = 1,
    shard: int = 0,
) -> TransitionRecord:
    return TransitionRecord(seq, time, trigger, source, dest, reason, generation, shard)


def test_reconnect_delays_per_shard_leave_out_server_ordered_waits() -> None:
    live, backoff, connecting = State.LIVE, State.BACKOFF, State.CONNECTING
    records = [
        record(1, 10.0, "lost", live, backoff, "dropped: ...", shard=0),
        record(1, 10.5, "lost", live, backoff, "stalled: ...", shard=1),
        record(2, 11.0, "retry", backoff, connecting, shard=1),
        record(2, 13.0, "retry", backoff, connecting, shard=0),
        record(3, 20.0, "shutdown", live, backoff, "shutdown: ConnectionQuotaReached"),
        record(4, 920.0, "retry", backoff, connecting),
        record(5, 930.0, "sync_rejected", State.SYNCING, backoff, "sync_penalized: ..."),
        record(6, 945.0, "retry", backoff, connecting),
    ]
    assert reconnect_delays(records) == [("stalled: ...", 0.5), ("dropped: ...", 3.0)]


def test_auth_times_pair_opened_and_authorized_of_one_connection() -> None:
    records = [
        record(1, 1.0, "opened", State.CONNECTING, State.AUTHENTICATING, generation=1),
        record(1, 1.2, "opened", State.CONNECTING, State.AUTHENTICATING, generation=1, shard=1),
        record(2, 1.5, "authorized", State.AUTHENTICATING, State.SYNCING, generation=1, shard=1),
        record(2, 4.0, "authorized", State.AUTHENTICATING, State.SYNCING, generation=1),
        record(3, 9.0, "authorized", State.AUTHENTICATING, State.SYNCING, generation=2),
    ]
    assert [round(t, 6) for t in auth_times(records)] == [0.3, 3.0]


def wire_with(entries: list[tuple[int, str, float, str]], connections: int) -> WireLog:
    log = WireLog(Redactor())
    log.connections = connections
    for connection, direction, time, text in entries:
        log.add(WireEntry(connection, 1, direction, "text", time, 0.0, text))
    return log


def test_connect_heartbeats_and_syncs_from_the_wire() -> None:
    log = wire_with(
        [
            (0, "in", 2.0, "o"),
            (0, "out", 2.1, "authorize\n0\n\n<redacted>"),
            (0, "out", 2.2, "user/syncrequest\n1\n\n{}"),
            (0, "out", 4.5, "[]"),
            (0, "out", 7.0, "[]"),
            (0, "out", 12.0, "[]"),
            (1, "out", 3.0, "USER/SYNCREQUEST\n1\n\n{}"),
        ],
        connections=2,
    )
    log.started = {0: 0.5, 1: 1.0}
    assert connect_times(log) == [1.5]  # connection 1 never got 'o'
    assert heartbeat_gaps(log, 0) == (5.0, 2.5, 3)
    largest, first, count = heartbeat_gaps(log, 1)
    assert (math.isinf(largest), math.isinf(first), count) == (True, True, 0)
    assert sync_counts(log) == {0: 1, 1: 1}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 0.5) == 500.0
    assert percentile(values, 0.99) == 990.0
    assert percentile(values, 0.999) == 999.0
    assert math.isinf(percentile([], 0.5))
