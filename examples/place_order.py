"""Place orders with the typed order API and follow them to their final state.

::

    .venv/bin/python examples/place_order.py

Four outcomes are shown: an order the server accepted and filled (its handle follows it in
the synced store), a bad argument caught before anything was sent (``ConfigError``), an order
the server refused inside a 200 answer (``OrderRejected``), and the one a trading program must
never paper over: the connection dropped while the order was in flight. The engine never
re-sends a money-moving request; the handle says ``Unknown`` and settles the question from the
server's snapshot after the reconnect (see ``docs/orders.md``).

It takes about 1 s in real time; ``tests/test_examples.py`` runs it in virtual time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from trio_tradovate import ConfigError, OrderNotPlaced, OrderRejected, State, open_engine
from trio_tradovate.sim import SimConfig, open_simulator


@dataclass(frozen=True)
class OrderResult:
    """What happened to the orders this example placed."""

    order_id: int | None
    order: Mapping[str, Any] | None
    bad_argument: str | None
    refusal_reason: str | None
    in_flight_outcome: str


async def main() -> OrderResult:
    """Place one good order, one bad one, one refused, and one the network interrupts."""
    async with (
        open_simulator(SimConfig(seed=5)) as sim,
        open_engine(sim.engine_config()) as engine,
    ):
        await engine.wait_for(State.LIVE)
        # The simulator's own activity also fills and cancels orders; pause it so that what
        # happens to ours is our doing.
        sim.pause_activity()
        account_id = engine.views.accounts()[0].id

        # 1. A good order. The handle reads the store, so its status is the account's.
        handle = await engine.orders.market(account_id, "MESZ6", "Buy", 1)
        fills = await handle.wait_filled()
        order = engine.store.get("order", handle.order_id) if handle.order_id else None
        print(f"order {handle.order_id} {handle.status}: {[(f.qty, f.price) for f in fills]}")

        # 2. A bad argument fails before anything is sent, saying what to fix.
        bad_argument: str | None = None
        try:
            await engine.orders.market(account_id, "MESZ6", "Buy", 0)
        except ConfigError as exc:
            bad_argument = str(exc)
            print(f"not sent: {exc}")

        # 3. Tradovate refuses orders with status 200 and a failureReason: a typed error here.
        refusal: str | None = None
        try:
            await engine.orders.market(account_id, "XXZ9", "Buy", 1)
        except OrderRejected as exc:
            refusal = exc.reason
            print(f"refused: {exc}")

        # 4. The connection dies as the order goes out, before the server reads it. The engine
        #    cannot know that; the handle waits for the re-sync and looks for its clOrdId.
        sim.drop_on_request("order/placeOrder", processed=False)
        lost = await engine.orders.market(account_id, "MESZ6", "Buy", 1)
        print(f"status after the drop: {lost.status}")
        try:
            await lost.wait_placed()
            outcome = "placed"
        except OrderNotPlaced:
            outcome = "not placed"
        print(f"reconciled from the re-synced account: the order was {outcome}")
    return OrderResult(handle.order_id, order, bad_argument, refusal, outcome)


if __name__ == "__main__":
    trio.run(main)
