"""Watch the engine ride out a series of server faults, live, through ``watch_transitions``.

::

    .venv/bin/python examples/ride_out_faults.py

The simulator plays four faults in turn: a half-open socket (the server goes silent), a close
frame ``c[3000,"Go away!"]``, a maintenance ``shutdown`` event, and a period of refused
connections. After each one the engine backs off, reconnects, logs in and re-syncs once; the
application only sees the transition records and, at the end, a store equal to the server's.

The faults come a few seconds apart, so the example tells the backoff that a connection live
that long counts as stable (``BackoffPolicy.stable_after``): each fault then meets a first
retry within a second, as a fault after a long stable connection would. With the default
(60 s), faults this close together are flapping, and the delays grow.

It takes about 35 s in real time; ``tests/test_examples.py`` runs it in virtual time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import trio

from trio_tradovate import (
    BackoffPolicy,
    State,
    TransitionRecord,
    open_engine,
)
from trio_tradovate.sim import SimConfig, open_simulator


@dataclass(frozen=True)
class FaultsResult:
    """The transitions a watcher received and the engine's counters at the end."""

    watched: tuple[TransitionRecord, ...]
    counters: dict[str, int]
    sockets_opened: int
    syncs_per_socket: tuple[int, ...]
    store_matches_truth: bool


async def main(duration: float = 4.0) -> FaultsResult:
    """Play the faults ``duration`` seconds apart (a little longer for the stall and refusal)."""
    watched: list[TransitionRecord] = []
    async with open_simulator(SimConfig(seed=11)) as sim:
        config = sim.engine_config(backoff=BackoffPolicy(stable_after=duration / 2))
        async with open_engine(config) as engine:
            transitions = engine.watch_transitions()

            async def print_transitions() -> None:
                async for record in transitions:
                    watched.append(record)
                    print(
                        f"t={record.time:7.3f} gen {record.generation}: "
                        f"{record.source.value:>14} -> {record.dest.value:<14} {record.reason}"
                    )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(print_transitions)
                await engine.wait_for(State.LIVE)
                await trio.sleep(duration)

                print("--- the server goes silent (half-open socket) ---")
                sim.stall()
                await engine.wait_for(State.BACKOFF)
                sim.stall(False)
                await engine.wait_for(State.LIVE)
                await trio.sleep(duration)

                print("--- the server sends a close frame ---")
                await sim.close_connections()
                # wait_for returns at once when the state already matches, and the engine may
                # not have read the close yet: wait for it to leave LIVE first.
                await engine.wait_for(State.BACKOFF)
                await engine.wait_for(State.LIVE)
                await trio.sleep(duration)

                print("--- the server announces maintenance ---")
                await sim.shutdown("Maintenance", "weekly restart")
                await engine.wait_for(State.BACKOFF)
                await engine.wait_for(State.LIVE)
                await trio.sleep(duration)

                print("--- the server refuses connections for a while ---")
                sim.refuse_connections(until=trio.current_time() + duration)
                await sim.drop_connections()
                await engine.wait_for(State.BACKOFF)
                await engine.wait_for(State.LIVE)

                sim.pause_activity()
                await trio.sleep(1)  # let the frames already sent arrive before comparing
                matches = engine.store.as_dict() == sim.truth()
                nursery.cancel_scope.cancel()
        counters = Counter(engine.counters)
        print("--- counters ---")
        for name, value in sorted(counters.items()):
            print(f"{name:>32}: {value}")
        print(f"store equals the simulator's truth: {matches}")
        sockets = sim.sockets
    return FaultsResult(
        tuple(watched),
        dict(counters),
        len(sockets),
        tuple(audit.syncrequest_count for audit in sockets),
        matches,
    )


if __name__ == "__main__":
    trio.run(main)
