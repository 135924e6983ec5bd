"""One real-socket run: REST and websocket over 127.0.0.1, connect -> live -> drop -> live.

Real clock on purpose (MockClock's autojump can jump while bytes sit in the kernel), with
generous limits; nothing here times anything.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from trio_tradovate import BackoffPolicy, Credentials, EngineConfig, State, open_engine
from trio_tradovate.sim import SimConfig, open_simulator, open_simulator_server

from ..conftest import sim_wall_clock


@pytest.mark.loopback
async def test_connect_live_drop_live_over_loopback() -> None:
    with trio.fail_after(30):
        async with (
            open_simulator(SimConfig(seed=11, activity_interval=0.2)) as sim,
            open_simulator_server(sim) as server,
        ):
            assert server.rest_url.startswith("http://127.0.0.1:")
            config = EngineConfig(
                rest_url=server.rest_url,
                credentials=Credentials(sim.config.username, sim.config.password),
                wall_clock=sim_wall_clock(sim),
                backoff=BackoffPolicy(initial=0.2),
                seed=5,
            )
            async with open_engine(config) as engine:
                await engine.wait_for(State.LIVE)
                assert engine.config.websocket_url == server.ws_url
                await sim.drop_connections()
                await engine.wait_for(State.BACKOFF)
                await engine.wait_for(State.LIVE)
                assert engine.generation == 2
                sim.pause_activity()
                # Real sockets: wait for the frames in flight rather than for a fixed time
                # (the enclosing fail_after bounds it).
                while engine.store.as_dict() != sim.truth():  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert [a.syncrequest_count for a in sim.sockets] == [1, 1]
            assert engine.state is State.STOPPED


@pytest.mark.loopback
async def test_sim_command_serves_and_applies_scheduled_faults() -> None:
    """`trio-tradovate sim --fault 1:'{"kind":"drop"}'`, as a function, on the real clock."""
    import io

    from trio_tradovate.cli import parse_fault_schedule, run_sim

    out = io.StringIO()
    schedule = parse_fault_schedule(['1:{"kind":"drop"}'])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(run_sim, "127.0.0.1", 0, 3, out, faults=schedule))
            config = EngineConfig(
                rest_url=server.rest_url,
                credentials=Credentials("demo-user", "demo-password"),
                backoff=BackoffPolicy(initial=0.2),
                seed=2,
            )
            async with open_engine(config) as engine:
                await engine.wait_for(State.LIVE)
                await engine.wait_for(State.BACKOFF)  # the scheduled drop
                await engine.wait_for(State.LIVE)
            nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert f"REST      {server.rest_url}" in text
    assert "/_sim/fault" in text
    assert 'fault applied: {"kind":"drop"}' in text
