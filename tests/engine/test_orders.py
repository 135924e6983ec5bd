"""The typed order API against the in-process simulator, in virtual time.

Each order kind is placed and followed by its handle to a final state; refusals inside a 200
become ``OrderRejected``; a drop while a placement is in flight leaves the handle ``Unknown``
and it settles from the re-synced account, with the simulator's request log showing the
placement on the wire at most once; bad arguments fail before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from tests.conftest import config_for
from trio_tradovate import (
    Bracket,
    ConfigError,
    Engine,
    OrderNotFilled,
    OrderNotPlaced,
    OrderRejected,
    OutcomeUnknown,
    State,
    SyncOptions,
    open_engine,
)
from trio_tradovate.orders import (
    NOT_PLACED,
    UNKNOWN,
    CommandResult,
    PlaceOsoResult,
    parse_command_result,
    parse_place_order_result,
    parse_place_oso_result,
)
from trio_tradovate.sim import Simulator

SYMBOL = "MESZ6"


@pytest.fixture
async def engine(sim: Simulator) -> AsyncIterator[Engine]:
    sim.pause_activity()  # only our own orders change the account
    async with open_engine(config_for(sim)) as running:
        await running.wait_for(State.LIVE)
        yield running


def account_of(engine: Engine) -> int:
    return engine.views.accounts()[0].id


def contract_id(engine: Engine) -> int:
    contract = engine.views.contract_by_name(SYMBOL)
    assert contract is not None
    return contract.id


def sent(sim: Simulator, endpoint: str) -> list[dict[str, Any]]:
    """The bodies of every ``endpoint`` request the simulator read, over all sockets."""
    return [
        orjson.loads(record.body)
        for audit in sim.sockets
        for record in audit.requests
        if record.endpoint == endpoint
    ]


def violations(sim: Simulator) -> list[str]:
    return [v for audit in sim.sockets for v in audit.violations]


async def test_market_order_is_followed_to_filled(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    handle = await engine.orders.market(account_of(engine), SYMBOL, "Buy", 2)
    fills = await handle.wait_filled()
    assert handle.status == "Filled"
    assert handle.is_done
    assert [f.qty for f in fills] == [2]
    assert handle.filled_qty == 2
    assert handle.avg_fill_price == fills[0].price
    assert [v.order_type for v in handle.versions] == ["Market"]
    [body] = sent(sim, "order/placeorder")
    assert body["isAutomated"] is True
    assert body["clOrdId"] == handle.cl_ord_id
    assert body["accountSpec"] == engine.views.accounts()[0].name
    assert violations(sim) == []


async def test_limit_order_rests_then_fills_when_the_market_reaches_it(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    price = sim.market_price(SYMBOL) - 50
    handle = await engine.orders.limit(account_of(engine), SYMBOL, "Buy", 1, price)
    await handle.wait_until(lambda h: h.status == "Working")
    assert handle.versions[-1].price == price
    assert handle.fills == []
    assert handle.order_id is not None
    sim.fill_order(handle.order_id)
    await handle.wait_filled()
    assert handle.filled_qty == 1


async def test_stop_order_is_cancelled(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    stop = sim.market_price(SYMBOL) - 20  # a protective sell stop, below the market
    handle = await engine.orders.stop(account_of(engine), SYMBOL, "Sell", 1, stop)
    await handle.wait_until(lambda h: h.status == "Working")
    assert handle.versions[-1].stop_price == stop
    result = await handle.cancel()
    assert isinstance(result, CommandResult)
    assert isinstance(result.command_id, int)
    assert await handle.wait_final() == "Canceled"
    with pytest.raises(OrderNotFilled) as info:
        await handle.wait_filled()
    assert info.value.status == "Canceled"
    assert sent(sim, "order/cancelorder")[0]["isAutomated"] is True


async def test_stop_limit_order_modified_into_the_market_fills(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    market = sim.market_price(SYMBOL)
    handle = await engine.orders.stop_limit(
        account_of(engine), SYMBOL, "Buy", 1, stop_price=market + 20, price=market + 25
    )
    await handle.wait_until(lambda h: h.status == "Working")
    # Lower the trigger under the market: the order triggers and its limit is marketable.
    result = await handle.modify(stop_price=market - 5)
    assert result.command_id is not None
    await handle.wait_filled()
    assert [(v.order_type, v.stop_price, v.price) for v in handle.versions] == [
        ("StopLimit", market + 20, market + 25),
        ("StopLimit", market - 5, market + 25),
    ]
    [body] = sent(sim, "order/modifyorder")
    assert body["orderQty"] == 1
    assert body["isAutomated"] is True
    # A filled order cannot be modified: the refusal comes inside a 200.
    with pytest.raises(OrderRejected) as refused:
        await handle.modify(price=market)
    assert refused.value.reason == "TooLate"


async def test_bracket_order_entry_fills_then_take_profit_cancels_the_stop(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    market = sim.market_price(SYMBOL)
    before = engine.views.position(account_of(engine), contract_id(engine))
    held = before.net_pos if before is not None and before.net_pos is not None else 0
    entry = await engine.orders.bracket(
        account_of(engine), SYMBOL, "Buy", 1, take_profit=market + 10, stop_loss=market - 10
    )
    await entry.wait_filled()
    take_profit, stop_loss = entry.brackets
    await take_profit.wait_until(lambda h: h.status == "Working")
    await stop_loss.wait_until(lambda h: h.status == "Working")
    assert take_profit.order is not None
    assert take_profit.order.parent_id == entry.order_id
    assert take_profit.order.action == "Sell"
    assert take_profit.order_id is not None
    sim.fill_order(take_profit.order_id)
    await take_profit.wait_filled()
    assert await stop_loss.wait_final() == "Canceled"
    [body] = sent(sim, "order/placeoso")
    assert body["bracket1"] == {
        "action": "Sell",
        "clOrdId": take_profit.cl_ord_id,
        "orderType": "Limit",
        "price": market + 10,
    }
    assert body["bracket2"]["orderType"] == "Stop"
    position = engine.views.position(account_of(engine), contract_id(engine))
    assert position is not None
    assert position.net_pos == held  # bought 1, sold 1 at the take-profit
    assert violations(sim) == []


async def test_refusal_inside_a_200_is_a_typed_error(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(OrderRejected) as info:
        await engine.orders.market(account_of(engine), "XXZ9", "Buy", 1)
    assert info.value.endpoint == "order/placeorder"
    assert info.value.reason == "UnknownReason"
    assert "XXZ9" in info.value.text
    assert len(sent(sim, "order/placeorder")) == 1  # sent once, refused, not retried


def test_answers_are_parsed_into_typed_results_or_refusals() -> None:
    assert parse_place_order_result({"orderId": 5}).order_id == 5
    assert parse_place_order_result({"orderId": 5, "failureReason": "Success"}).order_id == 5
    assert parse_place_oso_result({"orderId": 1, "oso1Id": 2}) == PlaceOsoResult(1, 2, None)
    assert parse_command_result({"commandId": 9}, "order/cancelorder").command_id == 9
    with pytest.raises(OrderRejected) as info:
        parse_place_order_result({"failureReason": "InvalidPrice", "failureText": "bad price"})
    assert (info.value.reason, info.value.text) == ("InvalidPrice", "bad price")
    with pytest.raises(OrderRejected) as simple:
        parse_command_result({"errorText": "Access is denied"}, "order/cancelorder")
    assert simple.value.reason is None
    assert simple.value.text == "Access is denied"


@pytest.mark.parametrize("processed", [True, False])
async def test_a_drop_during_placement_is_reconciled_from_the_resync_never_resent(
    sim: Simulator,
    engine: Engine,
    autojump_clock: trio.testing.MockClock,
    processed: bool,
) -> None:
    sim.drop_on_request("order/placeorder", processed=processed)
    handle = await engine.orders.market(account_of(engine), SYMBOL, "Buy", 1)
    assert handle.status == UNKNOWN
    assert isinstance(handle.outcome_unknown, OutcomeUnknown)
    if processed:
        order_id = await handle.wait_placed()
        assert sim.truth()[("order", order_id)]["ordStatus"] == "Filled"
        await handle.wait_filled()
    else:
        with pytest.raises(OrderNotPlaced) as info:
            await handle.wait_placed()
        assert info.value.cl_ord_id == handle.cl_ord_id
        assert handle.status == NOT_PLACED
        assert await handle.wait_final() == NOT_PLACED
        assert handle.order_id is None
    mine = [
        e
        for (kind, _), e in sim.truth().items()
        if kind == "command" and e.get("clOrdId") == handle.cl_ord_id
    ]
    assert len(mine) == (1 if processed else 0)
    # Settled only after a new socket synced, and the placement went out on the wire once
    # at most: the server read it once (processed) or never (not processed).
    assert len(sim.sockets) == 2
    assert sim.sockets[1].syncrequest_count == 1
    assert len(sent(sim, "order/placeorder")) == (1 if processed else 0)
    await trio.sleep(30)  # nothing is resent later either
    assert len(sent(sim, "order/placeorder")) == (1 if processed else 0)


async def test_a_drop_during_an_oso_placement_settles_every_leg(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    market = sim.market_price(SYMBOL)
    sim.drop_on_request("order/placeOSO", processed=True)
    entry = await engine.orders.bracket(
        account_of(engine), SYMBOL, "Sell", 1, take_profit=market - 10, stop_loss=market + 10
    )
    assert [h.status for h in (entry, *entry.brackets)] == [UNKNOWN] * 3
    await entry.wait_filled()
    for leg in entry.brackets:
        await leg.wait_placed()
        await leg.wait_until(lambda h: h.status == "Working")
    assert len(sent(sim, "order/placeoso")) == 1


async def test_an_answer_lost_to_a_timeout_settles_from_live_events(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    """The socket stays up: the order shows up through its props once the stall ends."""
    sim.stall()
    handle = await engine.orders.market(account_of(engine), SYMBOL, "Buy", 1, timeout=2)
    assert handle.status == UNKNOWN
    sim.stall(False)
    await handle.wait_filled()
    assert len(sent(sim, "order/placeorder")) == 1


async def test_without_synced_commands_an_unknown_outcome_stays_unknown(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    sim.pause_activity()
    account = min(k[1] for k in sim.truth() if k[0] == "account")
    only_orders = SyncOptions(accounts=(account,), entity_types=("account", "order", "fill"))
    async with open_engine(config_for(sim, sync=only_orders)) as engine:
        await engine.wait_for(State.LIVE)
        sim.drop_on_request("order/placeorder", processed=False)
        handle = await engine.orders.market(account, SYMBOL, "Buy", 1)
        with pytest.raises(OutcomeUnknown):
            await handle.wait_placed()
        assert handle.status == UNKNOWN


async def test_liquidate_cancels_working_orders_and_flattens(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    account = account_of(engine)
    before = engine.views.position(account, contract_id(engine))
    held = before.net_pos if before is not None and before.net_pos is not None else 0
    await (await engine.orders.market(account, SYMBOL, "Buy", 3)).wait_filled()
    resting = await engine.orders.limit(account, SYMBOL, "Sell", 1, sim.market_price(SYMBOL) + 50)
    await resting.wait_until(lambda h: h.status == "Working")
    closing = await engine.orders.liquidate(account, contract_id(engine))
    assert closing is not None
    fills = await closing.wait_filled()
    assert [(f.action, f.qty) for f in fills] == [("Sell", held + 3)]
    assert await resting.wait_final() == "Canceled"
    position = engine.views.position(account, contract_id(engine))
    assert position is not None
    assert position.net_pos == 0
    [body] = sent(sim, "order/liquidateposition")
    assert body == {
        "accountId": account,
        "contractId": contract_id(engine),
        "admin": False,
        "isAutomated": True,
    }
    assert await engine.orders.liquidate(account, contract_id(engine)) is None  # already flat


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qty": -1}, "qty must be a whole number of contracts above 0"),
        ({"qty": 1.5}, "qty must be a whole number"),
        ({"action": "buy"}, "action must be 'Buy' or 'Sell'"),
        ({"order_type": "Limit"}, "a Limit order needs price=..."),
        ({"order_type": "Stop"}, "a Stop order needs stop_price=..."),
        ({"order_type": "StopLimit", "price": 1.0}, "a StopLimit order needs stop_price"),
        ({"price": 1.0}, "a Market order takes no price"),
        ({"order_type": "Iceberg"}, "order_type must be one of"),
        ({"order_type": "Limit", "price": float("nan")}, "price must be a finite number"),
        ({"time_in_force": "GTD"}, "expire_time is required with time_in_force='GTD'"),
        ({"time_in_force": "Week"}, "time_in_force must be one of"),
        ({"symbol": ""}, "symbol must be a contract name or id"),
        ({"account_id": 0}, "account_id must be a positive integer id"),
        ({"cl_ord_id": "x" * 65}, "cl_ord_id must be a non-empty string of at most 64"),
    ],
)
async def test_bad_arguments_fail_fast_saying_what_to_fix(
    sim: Simulator,
    engine: Engine,
    autojump_clock: trio.testing.MockClock,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    arguments: dict[str, Any] = {
        "account_id": account_of(engine),
        "symbol": SYMBOL,
        "action": "Buy",
        "qty": 1,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        await engine.orders.place(**arguments)
    assert sent(sim, "order/placeorder") == []


async def test_bad_brackets_and_modify_arguments_fail_fast(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ConfigError, match="bracket: a Limit order needs price"):
        Bracket("Sell", "Limit")
    with pytest.raises(ConfigError, match="bracket action must be 'Buy' or 'Sell'"):
        Bracket("sell", "Market")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=re.escape("needs take_profit=..., stop_loss=..., or both")
    ):
        await engine.orders.bracket(account_of(engine), SYMBOL, "Buy", 1)
    with pytest.raises(ConfigError, match="qty must be"):
        await engine.orders.modify(1, qty=0, order_type="Market")
    with pytest.raises(ConfigError, match="order_id must be a positive integer"):
        await engine.orders.cancel(-3)
    assert sent(sim, "order/placeoso") == []
    assert sent(sim, "order/modifyorder") == []
    assert sent(sim, "order/cancelorder") == []
