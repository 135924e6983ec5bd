"""Follow a demo account: print every entity change the engine delivers, then the transitions.

The engine talks to the embedded simulator in memory, so this runs anywhere, offline::

    .venv/bin/python examples/follow_account.py

Halfway through, the simulator drops the TCP connection without a close frame. The engine
notices, backs off, logs in again, re-syncs, and the changes that happened while it was away
arrive marked ``recovered``. At the end the store is compared with the simulator's own state.

It takes about 11 s in real time; ``tests/test_examples.py`` runs it in virtual time.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from trio_tradovate import State, TransitionRecord, open_engine
from trio_tradovate.sim import SimConfig, open_simulator


@dataclass(frozen=True)
class FollowResult:
    """What one run saw, for a reader or a test to check."""

    changes: int
    recovered_changes: int
    transitions: tuple[TransitionRecord, ...]
    final_state: State
    store_matches_truth: bool


async def main(duration: float = 10.0) -> FollowResult:
    """Follow the account for ``duration`` seconds of trio time, with one drop in the middle."""
    changes = 0
    recovered = 0
    async with open_simulator(SimConfig(seed=3)) as sim:
        async with open_engine(sim.engine_config()) as engine:
            events = engine.events()  # subscribe before LIVE to see the snapshot's changes too

            async def print_changes() -> None:
                nonlocal changes, recovered
                async for change in events:
                    changes += 1
                    recovered += change.recovered
                    origin = "sync" if change.recovered else "live"
                    print(
                        f"[gen {change.generation} {origin}] {change.event_type:<7} "
                        f"{change.entity_type} {change.entity_id}"
                    )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(print_changes)
                await engine.wait_for(State.LIVE)
                await trio.sleep(duration / 2)
                print("--- simulator drops every connection ---")
                await sim.drop_connections()
                await trio.sleep(duration / 2)
                await engine.wait_for(State.LIVE)
                # Stop the server's activity and let the frames already sent arrive, so the
                # comparison below is not racing a props event in flight.
                sim.pause_activity()
                await trio.sleep(1)
                matches = engine.store.as_dict() == sim.truth()
                nursery.cancel_scope.cancel()
        # Leaving open_engine closed the websocket politely and reached STOPPED.
        print("--- transitions ---")
        for record in engine.transitions:
            print(
                f"{record.seq:>3} t={record.time:8.3f} gen {record.generation} "
                f"{record.source.value} -> {record.dest.value} ({record.trigger}): {record.reason}"
            )
        print(f"store equals the simulator's truth: {matches}")
    return FollowResult(changes, recovered, engine.transitions, engine.state, matches)


if __name__ == "__main__":
    trio.run(main)
