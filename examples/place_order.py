"""Place a market order over the websocket and watch it appear in the store.

::

    .venv/bin/python examples/place_order.py

Three outcomes of a request are shown: the server accepted it (``{"orderId": ...}``), the
server answered with an error status (``RequestError``), and the one a trading program must
never paper over: the connection dropped while the order was in flight (``OutcomeUnknown``).
The engine never re-sends a money-moving request; the order may or may not exist, and the only
honest answer comes from the store, which is re-synced from the server after the reconnect.

It takes about 3 s in real time; ``tests/test_examples.py`` runs it in virtual time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio
import trio.lowlevel

from trio_tradovate import (
    ChangeStream,
    Engine,
    OutcomeUnknown,
    RequestError,
    State,
    open_engine,
)
from trio_tradovate.sim import SimConfig, open_simulator


@dataclass(frozen=True)
class OrderResult:
    """What happened to the orders this example placed."""

    order_id: int | None
    order: Mapping[str, Any] | None
    bad_request_status: int | None
    in_flight_outcome: str


def order_body(engine: Engine, quantity: int = 1) -> dict[str, Any]:
    """A market order for the first account and contract the synced store knows.

    ``isAutomated`` must be ``true`` for orders placed by software (Tradovate best practices).
    """
    account = engine.store.of_type("account")[0]
    contract = engine.store.of_type("contract")[0]
    return {
        "accountSpec": account["name"],
        "accountId": account["id"],
        "action": "Buy",
        "symbol": contract["name"],
        "orderQty": quantity,
        "orderType": "Market",
        "isAutomated": True,
    }


async def wait_for_entity(
    engine: Engine,
    changes: ChangeStream,
    entity_type: str,
    entity_id: int,
    limit: float,
) -> Mapping[str, Any] | None:
    """Wait up to ``limit`` seconds for an entity to reach the store.

    Tradovate does not order a reply against its ``props`` events: the order can be in the
    store before ``request`` returns, or arrive a moment after. So look in the store first,
    then read the change stream until the entity shows up.
    """
    with trio.move_on_after(limit):
        if (entity := engine.store.get(entity_type, entity_id)) is not None:
            return entity
        async for change in changes:
            if (change.entity_type, change.entity_id) == (entity_type, entity_id):
                return change.entity
    return None


async def main(duration: float = 10.0) -> OrderResult:
    """Place one good order, one bad one, and one that the network interrupts."""
    async with (
        open_simulator(SimConfig(seed=5)) as sim,
        open_engine(sim.engine_config()) as engine,
    ):
        await engine.wait_for(State.LIVE)
        # Subscribed after the snapshot, so only live changes arrive. The stream is bounded
        # without ever making the engine's reader wait: a consumer that falls behind gets each
        # entity's latest value, merged (coalesced=True), as docs/index.md says.
        changes = engine.events()
        body = order_body(engine)

        # 1. A good order. Tradovate answers a refused order with status 200 and a
        #    failureReason, not with an error status, so both shapes are checked.
        order_id: int | None = None
        order: Mapping[str, Any] | None = None
        try:
            answer = await engine.request("order/placeorder", body=body)
        except OutcomeUnknown:
            print("the connection dropped before the answer: reconcile from the store")
        except RequestError as exc:
            print(f"rejected with status {exc.status}: {exc.text}")
        else:
            if "orderId" in answer:
                order_id = int(answer["orderId"])
                order = await wait_for_entity(engine, changes, "order", order_id, duration / 2)
                # A market order fills at once: wait a moment for the Filled update too.
                await trio.sleep(1)
                order = engine.store.get("order", order_id) or order
                print(f"order {order_id} in the store: {dict(order) if order else None}")
            else:
                print(f"refused: {answer.get('failureReason')}: {answer.get('failureText')}")

        # 2. A malformed order: the server answers 400 and the engine raises RequestError.
        bad_status: int | None = None
        try:
            await engine.request("order/placeorder", body={**body, "orderQty": 0})
        except RequestError as exc:
            bad_status = exc.status
            print(f"bad order rejected as expected: {exc}")

        # 3. An order whose connection dies in flight. The simulator has answered (or not)
        #    before the drop; the engine cannot know, so it raises OutcomeUnknown.
        # The simulator's own activity also creates orders; pause it so that a new order id
        # after the re-sync can only be ours. A real application matches on its own fields.
        sim.pause_activity()
        await trio.sleep(1)
        before = {o["id"] for o in engine.store.of_type("order")}
        outcome = "answered"
        async with trio.open_nursery() as nursery:

            async def place() -> None:
                nonlocal outcome
                try:
                    await engine.request("order/placeorder", body=body)
                except OutcomeUnknown as exc:
                    outcome = "unknown"
                    print(f"{exc}; waiting for the re-sync to find out")

            nursery.start_soon(place)
            await trio.lowlevel.checkpoint()  # let the request be queued, not answered
            await sim.drop_connections()
        if outcome == "unknown":
            await engine.wait_for(State.LIVE)
            after = {o["id"] for o in engine.store.of_type("order")}
            outcome = "placed" if after - before else "not placed"
            print(f"reconciled from the re-synced store: the order was {outcome}")
    return OrderResult(order_id, order, bad_status, outcome)


if __name__ == "__main__":
    trio.run(main)
