"""How an order handle settles an unknown outcome, against a stand-in engine (no simulator):
what counts as "synced again" with several sockets, an answer that cannot be read, and an
engine that stops while a handle waits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import trio
import trio.testing

from trio_tradovate import Engine, EngineConfig, EngineStopped, State, StoreViews
from trio_tradovate.orders import NOT_PLACED, UNKNOWN, Orders
from trio_tradovate.statechart import TransitionRecord
from trio_tradovate.store import EntityStore


@dataclass
class Shard:
    index: int


@dataclass
class StandIn:
    """Only what ``Orders`` reads of an engine."""

    answer: Any
    shards: tuple[Shard, ...] = (Shard(0),)
    state: State = State.LIVE
    store: EntityStore = field(default_factory=EntityStore)
    config: EngineConfig = field(default_factory=lambda: EngineConfig(access_token="t", user_id=1))
    stop_reason: str | None = None
    stop_error: Any = None
    sent: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.views = StoreViews(self.store)

    async def request(self, endpoint: str, *, body: Any = None, timeout: Any = None) -> Any:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()
        self.sent.append((endpoint, body))
        return self.answer


def desk(engine: StandIn) -> Orders:
    return Orders(cast(Engine, engine))


def went(orders: Orders, shard: int, source: State, dest: State) -> None:
    orders.on_transition(TransitionRecord(0, 0.0, "t", source, dest, "", 1, shard=shard))


def command(cl_ord_id: str, order_id: int) -> tuple[str, str, dict[str, Any]]:
    raw = {"id": order_id + 1, "orderId": order_id, "clOrdId": cl_ord_id, "commandType": "New"}
    return ("command", "Created", raw)


async def test_an_unreadable_answer_leaves_the_outcome_unknown_until_the_command_shows() -> None:
    engine = StandIn(answer="OK")  # not a PlaceOrderResult: the order may or may not exist
    orders = desk(engine)
    handle = await orders.market(7, "ESZ6", "Buy", 1)
    assert handle.status == UNKNOWN
    assert handle.outcome_unknown is not None
    assert len(engine.sent) == 1
    async with trio.open_nursery() as nursery:
        placed: list[int] = []

        async def wait() -> None:
            placed.append(await handle.wait_placed())

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert placed == []
        assert handle.cl_ord_id is not None
        engine.store.apply_updates([command(handle.cl_ord_id, 500)], 1, owner=0)
        orders.store_written()
    assert placed == [500]
    assert len(engine.sent) == 1  # settled from the store, never resent


async def test_every_socket_must_sync_again_before_an_order_is_called_not_placed() -> None:
    engine = StandIn(answer=[1, 2], shards=(Shard(0), Shard(1)))
    orders = desk(engine)
    for shard in (0, 1):
        went(orders, shard, State.SYNCING, State.LIVE)
    handle = await orders.limit(7, "ESZ6", "Sell", 2, 6950.0)
    assert handle.status == UNKNOWN
    engine.state = State.BACKOFF
    went(orders, 1, State.LIVE, State.BACKOFF)
    went(orders, 1, State.SYNCING, State.LIVE)  # one socket re-synced ...
    engine.state = State.LIVE
    went(orders, 0, State.LIVE, State.LIVE)  # ... and the other only stayed live
    assert handle.status == UNKNOWN
    went(orders, 0, State.SYNCING, State.LIVE)
    assert handle.status == NOT_PLACED
    # The account is the truth: an order that shows up after all is followed.
    assert handle.cl_ord_id is not None
    engine.store.apply_updates([command(handle.cl_ord_id, 77)], 2, owner=0)
    assert handle.order_id == 77
    assert handle.status == "Accepted"  # the store holds its command, not yet the order


async def test_a_handle_waiting_when_the_engine_stops_raises_engine_stopped() -> None:
    engine = StandIn(answer={"orderId": 9})
    orders = desk(engine)
    handle = await orders.stop(7, "ESZ6", "Sell", 1, 6800.0)
    assert handle.order_id == 9
    stopped: list[EngineStopped] = []

    async def wait() -> None:
        try:
            await handle.wait_final()
        except EngineStopped as exc:
            stopped.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert stopped == []
        engine.state = State.STOPPED
        engine.stop_reason = "application closed the engine"
        went(orders, 0, State.LIVE, State.STOPPED)
    assert [exc.reason for exc in stopped] == ["application closed the engine"]
