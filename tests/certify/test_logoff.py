"""Log-off (a Stage 2 item): leaving ``open_engine`` closes the websocket with a handshake.

The certification's ``login`` scenario judges it at an instant between two heartbeats. This
file pins down the case that scenario found: leaving at the very instant a heartbeat is being
sent (a cancelled write used to mark the output broken, and the close frame was skipped; a
frame's write is now finished before the cancellation takes effect). In virtual time that
instant is exact, so the collision is certain; on the real clock the window is as long as a
heartbeat's write, which is short on a healthy network and long on a congested one.
"""

from __future__ import annotations

import trio

from trio_tradovate import State, open_engine
from trio_tradovate.certify.runner import _seed_scheduler
from trio_tradovate.certify.wire import RecordingConnector, Redactor, WireLog
from trio_tradovate.sim import SimConfig, open_simulator


async def leave_after(seconds: float) -> tuple[list[str], float]:
    """Directions of the close frames on the wire, and how long leaving took."""
    async with open_simulator(SimConfig(seed=1)) as sim:
        log = WireLog(Redactor())
        config = sim.engine_config(connector=RecordingConnector(sim.connector(), log))
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            await trio.sleep(seconds)
            leaving = trio.current_time()
        took = engine.transitions[-1].time - leaving
    return [e.direction for e in log.entries if e.kind == "close"], took


async def test_leaving_between_heartbeats_closes_with_a_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for seed in range(4):
        _seed_scheduler(seed)
        closes, took = await leave_after(60.3)
        assert closes == ["out", "in"]
        assert took == 0.0


async def test_leaving_at_a_heartbeat_instant_closes_with_a_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes = []
    for seed in range(8):  # the interleavings of the heartbeat task and the shutdown
        _seed_scheduler(seed)
        outcomes.append(await leave_after(2.5))
    assert outcomes == [(["out", "in"], 0.0)] * 8
