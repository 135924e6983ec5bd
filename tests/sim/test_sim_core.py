"""The sans-I/O session on its own: timers and request parsing without any I/O."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tradovate.sim import SimConfig
from trio_tradovate.sim._core import CloseSocket, SendFrame, SimCore
from trio_tradovate.sim.rawclient import apply_events, apply_snapshot


def _drain(outbox: deque[SendFrame | CloseSocket]) -> list[SendFrame | CloseSocket]:
    items = list(outbox)
    outbox.clear()
    return items


def test_timers_follow_the_protocol_defaults() -> None:
    core = SimCore(SimConfig(activity_interval=None), now=100.0)
    session = core.open_session(100.0)
    assert _drain(session.outbox) == [SendFrame("o")]
    assert session.next_deadline() == 102.5
    session.tick(102.5)
    assert _drain(session.outbox) == [SendFrame("h")]
    session.tick(104.0)  # nothing due
    assert not session.outbox
    session.tick(110.0)
    assert _drain(session.outbox) == [CloseSocket(3000, "Go away!")]
    assert session.audit.close_reason == "auth timeout"
    assert session.next_deadline() == math.inf


def test_stall_suspends_timers() -> None:
    core = SimCore(SimConfig(activity_interval=None), now=0.0)
    session = core.open_session(0.0)
    core.stalled = True
    assert session.next_deadline() == math.inf
    session.tick(50.0)
    assert _drain(session.outbox) == [SendFrame("o")]


def test_malformed_frames_are_violations_not_crashes() -> None:
    core = SimCore(SimConfig(activity_interval=None), now=0.0)
    session = core.open_session(0.0)
    _drain(session.outbox)
    session.receive("garbage", 1.0)
    session.receive("account/list\nnot-an-int\n\n", 1.0)
    session.receive("authorize\n0\nundefined\nundefined", 1.0)
    assert session.audit.violations == ["malformed frame", "malformed request id"]
    frames = _drain(session.outbox)
    assert frames == [SendFrame('a[{"i":0,"s":401,"d":"Invalid access token"}]')]
    assert session.audit.requests[-1].query == ""


def test_token_repr_hides_value() -> None:
    core = SimCore(SimConfig(activity_interval=None), now=0.0)
    value = core.issue_token(0.0)
    token = core.auth.validate(value, 1.0)
    assert token is not None
    assert value not in repr(token)
    assert value not in repr(core.auth)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 60), accounts=st.integers(1, 4))
def test_snapshot_plus_broadcast_batches_equal_truth(seed: int, steps: int, accounts: int) -> None:
    """The invariant every engine test leans on: snapshot + props == truth, for any seed."""
    core = SimCore(SimConfig(seed=seed, accounts=accounts), now=0.0)
    state = apply_snapshot(core.world.snapshot(None, None))
    events: list[dict[str, Any]] = []
    for step in range(steps):
        for batch in core.world.activity_step(float(step)):
            events.extend(p.message() for p in batch)
    apply_events(state, events)
    assert state == core.world.truth()
    positions = [e for (t, _), e in core.world.truth().items() if t == "position"]
    assert all((p["netPos"] == 0) == (p["netPrice"] is None) for p in positions)
