"""Typed entity views: parsing every type, tolerance of bad data, store queries, the cache."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

import pytest
import trio

from trio_tradovate import State, open_engine
from trio_tradovate.entities import (
    VIEW_TYPES,
    Account,
    AccountRiskStatus,
    CashBalance,
    EntityView,
    Fill,
    Order,
    Position,
    _spec_of,
)
from trio_tradovate.protocol import parse_entity_event
from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.store import EntityStore
from trio_tradovate.views import StoreViews

from ..conftest import config_for, settle

TS = "2026-03-02T14:30:00.123Z"
TS_PARSED = datetime(2026, 3, 2, 14, 30, 0, 123000, tzinfo=UTC)
TRADE_DATE = {"year": 2026, "month": 3, "day": 2}

#: One realistic mapping per view type, carrying every field the class models (per the OAS).
SAMPLES: dict[str, dict[str, Any]] = {
    "account": {
        "id": 11,
        "name": "DEMO12345",
        "userId": 2000001,
        "accountType": "Customer",
        "active": True,
        "clearingHouseId": 2,
        "riskCategoryId": 2,
        "autoLiqProfileId": 2,
        "marginAccountType": "Speculator",
        "legalStatus": "Individual",
        "archived": False,
        "timestamp": TS,
    },
    "cashBalance": {
        "id": 21,
        "accountId": 11,
        "timestamp": TS,
        "tradeDate": TRADE_DATE,
        "currencyId": 1,
        "amount": 50_012.5,
        "realizedPnL": 12.5,
        "weekRealizedPnL": -37.5,
        "amountSOD": 50_000,
    },
    "position": {
        "id": 31,
        "accountId": 11,
        "contractId": 41,
        "timestamp": TS,
        "tradeDate": TRADE_DATE,
        "netPos": 2,
        "netPrice": 6900.25,
        "bought": 3,
        "boughtValue": 20_700.75,
        "sold": 1,
        "soldValue": 6900.5,
        "prevPos": 0,
        "prevPrice": 6899.0,
    },
    "order": {
        "id": 51,
        "accountId": 11,
        "contractId": 41,
        "spreadDefinitionId": 7,
        "timestamp": TS,
        "action": "Buy",
        "ordStatus": "Working",
        "executionProviderId": 3,
        "ocoId": 52,
        "parentId": 50,
        "linkedId": 53,
        "admin": False,
        "archived": False,
        "external": False,
    },
    "orderVersion": {
        "id": 61,
        "orderId": 51,
        "orderQty": 2,
        "orderType": "StopLimit",
        "price": 6901.0,
        "stopPrice": 6900.75,
        "maxShow": 1,
        "pegDifference": 0.5,
        "timeInForce": "GTD",
        "expireTime": "2026-03-03T21:00:00.000Z",
        "text": "entry",
    },
    "fill": {
        "id": 71,
        "orderId": 51,
        "contractId": 41,
        "timestamp": TS,
        "tradeDate": TRADE_DATE,
        "action": "Buy",
        "qty": 2,
        "price": 6900.25,
        "active": True,
        "finallyPaired": 0,
    },
    "fillPair": {
        "id": 81,
        "positionId": 31,
        "buyFillId": 71,
        "sellFillId": 72,
        "qty": 1,
        "buyPrice": 6900.25,
        "sellPrice": 6902,
        "active": True,
    },
    "executionReport": {
        "id": 91,
        "commandId": 101,
        "name": "Fill",
        "accountId": 11,
        "contractId": 41,
        "timestamp": TS,
        "tradeDate": TRADE_DATE,
        "orderId": 51,
        "execType": "Trade",
        "execRefId": 9001,
        "ordStatus": "Filled",
        "action": "Buy",
        "cumQty": 2,
        "avgPx": 6900.25,
        "lastQty": 2,
        "lastPx": 6900.25,
        "rejectReason": "None",
        "text": "",
        "exchangeOrderId": "X-123",
    },
    "command": {
        "id": 101,
        "orderId": 51,
        "timestamp": TS,
        "clOrdId": "abc-1",
        "commandType": "New",
        "commandStatus": "ExecutionStopped",
        "senderId": 2000001,
        "userSessionId": 555,
        "activationTime": TS,
        "customTag50": "bot",
        "isAutomated": True,
    },
    "commandReport": {
        "id": 111,
        "commandId": 101,
        "timestamp": TS,
        "commandStatus": "RiskRejected",
        "rejectReason": "RiskCheck",
        "text": "Insufficient margin",
        "ordStatus": "Rejected",
    },
    "contract": {
        "id": 41,
        "name": "ESZ6",
        "contractMaturityId": 121,
        "status": "DefinitionChecked",
        "providerTickSize": 0.25,
    },
    "product": {
        "id": 131,
        "name": "ES",
        "currencyId": 1,
        "productType": "Futures",
        "description": "E-mini S&P 500",
        "exchangeId": 1,
        "contractGroupId": 141,
        "riskDiscountContractGroupId": 142,
        "status": "Verified",
        "months": "HMUZ",
        "isSecured": False,
        "valuePerPoint": 50,
        "priceFormatType": "Decimal",
        "priceFormat": -2,
        "tickSize": 0.25,
    },
    "marginSnapshot": {
        "id": 11,
        "timestamp": TS,
        "riskTimePeriodId": 3,
        "initialMargin": 26_000.0,
        "maintenanceMargin": 23_600.0,
        "autoLiqLevel": 1000.0,
        "liqOnlyLevel": 2000.0,
        "totalUsedMargin": 23_600.0,
        "fullInitialMargin": 26_000.0,
        "positionMargin": 23_600.0,
    },
    "accountRiskStatus": {
        "id": 11,
        "adminAction": "Normal",
        "adminTimestamp": TS,
        "liquidateOnly": TS,
        "userTriggeredLiqOnly": False,
    },
}


def value_type(cls: type[EntityView], attr: str) -> type:
    """The non-None member of an attribute's ``X | None`` annotation."""
    [member] = [t for t in typing.get_args(typing.get_type_hints(cls)[attr]) if t is not type(None)]
    return typing.cast(type, member)


def modelled(cls: type[EntityView]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in ("id", "raw")]


# -- entities -----------------------------------------------------------------------------------


def test_registry_covers_every_type_once() -> None:
    assert set(VIEW_TYPES) == set(SAMPLES)
    assert all(name == cls.ENTITY_TYPE for name, cls in VIEW_TYPES.items())


@pytest.mark.parametrize("entity_type", sorted(SAMPLES))
def test_every_field_parses_from_a_full_mapping(entity_type: str) -> None:
    cls = VIEW_TYPES[entity_type]
    raw = MappingProxyType(SAMPLES[entity_type])
    view = cls.from_raw(raw)
    assert view.id == raw["id"]
    assert view.raw is raw  # the store's read-only proxy is kept, not copied
    # The keys read are exactly the sample's (the brief's list): no misspelled camelCase.
    assert sorted(key for _, key, _ in _spec_of(cls)) == sorted(k for k in raw if k != "id")
    read = {name: getattr(view, name) for name in modelled(cls)}
    for name, value in read.items():
        assert isinstance(value, value_type(cls, name)), (name, value)
        assert not (value_type(cls, name) is int and isinstance(value, bool)), name


def test_values_and_conversions() -> None:
    balance = CashBalance.from_raw(SAMPLES["cashBalance"])
    assert balance.trade_date == date(2026, 3, 2)
    assert balance.timestamp == TS_PARSED
    assert balance.realized_pnl == 12.5
    assert balance.week_realized_pnl == -37.5
    assert balance.amount_sod == 50_000.0  # a JSON integer where a float is expected
    assert isinstance(balance.amount_sod, float)
    order = Order.from_raw(SAMPLES["order"])
    assert (order.account_id, order.ord_status, order.oco_id) == (11, "Working", 52)
    assert order.is_working
    risk = AccountRiskStatus.from_raw(SAMPLES["accountRiskStatus"])
    assert risk.liquidate_only == TS_PARSED
    assert risk.user_triggered_liq_only is False


#: Per annotated type, JSON values of the wrong type (or unparsable) that must become None.
WRONG: dict[type, list[object]] = {
    int: [True, "5", 5.0, None, [5], {"v": 5}],
    float: [True, False, "6900.25", None, [1.0]],
    str: [5, 1.5, True, None, ["x"], {"x": 1}],
    bool: [1, 0, "true", None, [True]],
    datetime: [1_700_000_000, "yesterday", "2026-13-01T00:00:00Z", None, {"ts": TS}],
    date: [
        "2026-02-30",
        {"year": 2026, "month": 13, "day": 1},
        {"year": "2026", "month": 3, "day": 2},
        {"year": 2026, "month": True, "day": 2},
        {"year": 2026},
        20260302,
        None,
    ],
}


@pytest.mark.parametrize("entity_type", sorted(SAMPLES))
@pytest.mark.parametrize("attempt", range(7))
def test_wrong_types_become_none_without_raising(entity_type: str, attempt: int) -> None:
    cls = VIEW_TYPES[entity_type]
    raw: dict[str, object] = {"id": 1}
    for name, key, _ in _spec_of(cls):
        bad = WRONG[value_type(cls, name)]
        raw[key] = bad[attempt % len(bad)]
    view = cls.from_raw(raw)
    assert all(getattr(view, name) is None for name in modelled(cls)), view


def test_missing_fields_and_odd_ids() -> None:
    empty = Position.from_raw({})
    assert empty.id == -1
    assert all(getattr(empty, name) is None for name in modelled(Position))
    assert not empty.is_open
    assert Order.from_raw({"id": "7"}).id == 7  # keyed as the store would, int(raw["id"])
    assert Order.from_raw({"id": [7]}).id == -1
    assert Order.from_raw({"id": float("inf")}).id == -1


def test_naive_timestamp_is_utc_and_raw_is_a_private_read_only_copy() -> None:
    source = {"id": 3, "timestamp": "2026-03-02T14:30:00", "name": "DEMO1"}
    account = Account.from_raw(source)
    assert account.timestamp == datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    source["name"] = "changed"
    assert account.raw["name"] == "DEMO1"
    with pytest.raises(TypeError):
        account.raw["name"] = "x"  # type: ignore[index]


def test_views_are_frozen_hashable_and_compare_by_content() -> None:
    a = Fill.from_raw(SAMPLES["fill"])
    b = Fill.from_raw(dict(SAMPLES["fill"]))
    assert a == b
    assert hash(a) == hash(b)
    assert "raw" not in repr(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.qty = 3  # type: ignore[misc]


# -- views over a store ---------------------------------------------------------------------------


def props(store: EntityStore, entity_type: str, event_type: str, entity: object) -> None:
    event = parse_entity_event(
        {"entityType": entity_type, "eventType": event_type, "entity": entity}
    )
    store.apply_event(event, 1)


def sample_store() -> EntityStore:
    """Two accounts; account 11 has a working and a filled order, account 12 a canceled one."""
    store = EntityStore()
    order = SAMPLES["order"]
    fill = SAMPLES["fill"]
    store.apply_snapshot(
        {
            "accounts": [SAMPLES["account"], {**SAMPLES["account"], "id": 12, "name": "DEMO2"}],
            "orders": [
                order,
                {**order, "id": 54, "ordStatus": "Filled"},
                {**order, "id": 55, "accountId": 12, "ordStatus": "Canceled"},
                {**order, "id": 56, "accountId": 12, "ordStatus": "PendingReplace"},
            ],
            "fills": [
                {**fill, "id": 72, "orderId": 54},
                {**fill, "id": 73, "orderId": 55},
                {**fill, "id": 74, "orderId": 999},  # its order is not in the store
            ],
            "positions": [
                SAMPLES["position"],
                {**SAMPLES["position"], "id": 32, "contractId": 42, "netPos": 0},
                {**SAMPLES["position"], "id": 33, "accountId": 12, "netPos": -1},
            ],
            "cashBalances": [
                SAMPLES["cashBalance"],
                {**SAMPLES["cashBalance"], "id": 22, "accountId": 12},
            ],
            "orderVersions": [
                {**SAMPLES["orderVersion"], "id": 62},
                SAMPLES["orderVersion"],
                {**SAMPLES["orderVersion"], "id": 63, "orderId": 54},
            ],
            "executionReports": [SAMPLES["executionReport"]],
            "contracts": [SAMPLES["contract"], {**SAMPLES["contract"], "id": 42, "name": "NQZ6"}],
            "products": [SAMPLES["product"]],
            "marginSnapshots": [SAMPLES["marginSnapshot"]],
            "accountRiskStatuses": [SAMPLES["accountRiskStatus"]],
            "users": [{"id": 2000001, "name": "demo"}],
        },
        1,
        entity_types=None,
    )
    return store


def test_queries() -> None:
    views = StoreViews(sample_store())
    assert [a.id for a in views.accounts()] == [11, 12]
    assert views.account(12) is not None
    assert views.account(13) is None
    assert [o.id for o in views.orders()] == [51, 54, 55, 56]
    assert [o.id for o in views.orders(12)] == [55, 56]
    assert [o.id for o in views.orders(working_only=True)] == [51, 56]
    assert [o.id for o in views.orders(11, working_only=True)] == [51]
    assert [v.id for v in views.order_versions(51)] == [61, 62]
    assert [f.id for f in views.fills()] == [72, 73, 74]
    assert [f.id for f in views.fills(order_id=54)] == [72]
    assert [f.id for f in views.fills(account_id=11)] == [72]
    assert [f.id for f in views.fills(account_id=12)] == [73]
    assert views.fills(order_id=54, account_id=12) == []
    assert [p.id for p in views.positions()] == [31, 32, 33]
    assert [p.id for p in views.positions(11)] == [31, 32]
    assert [p.id for p in views.positions(open_only=True)] == [31, 33]
    assert [p.id for p in views.positions(11, open_only=True)] == [31]
    position = views.position(11, 42)
    assert position is not None
    assert position.id == 32
    assert views.position(12, 42) is None
    assert [b.account_id for b in views.cash_balances()] == [11, 12]
    assert [b.id for b in views.cash_balances(12)] == [22]
    assert [r.id for r in views.execution_reports(51)] == [91]
    assert views.execution_reports(54) == []
    contract = views.contract_by_name("nqz6")
    assert contract is not None
    assert contract.id == 42
    assert views.contract_by_name("CLZ6") is None
    assert views.contract(41) == views.contract_by_name("ESZ6")
    product = views.product(131)
    assert product is not None
    assert product.value_per_point == 50.0
    margin = views.margin_snapshot(11)
    assert margin is not None
    assert margin.initial_margin == 26_000.0
    assert views.margin_snapshot(12) is None
    risk = views.risk_status(11)
    assert risk is not None
    assert risk.admin_action == "Normal"


def test_view_falls_back_to_the_raw_mapping() -> None:
    store = sample_store()
    views = StoreViews(store)
    assert isinstance(views.view("order", 51), Order)
    user = views.view("user", 2000001)
    assert user == store.get("user", 2000001)
    with pytest.raises(TypeError):
        user["name"] = "changed"  # type: ignore[index]
    assert views.view("order", 999) is None
    assert views.view("user", 1) is None


def test_cache_reuses_until_the_store_changes() -> None:
    store = sample_store()
    views = StoreViews(store)
    first = views.order(51)
    assert first is not None
    assert views.order(51) is first
    assert views.orders()[0] is first  # lists and lookups share the cache
    listed = views.orders()
    props(store, "order", "Updated", {**SAMPLES["order"], "ordStatus": "Filled"})
    updated = views.order(51)
    assert updated is not None
    assert updated is not first
    assert updated.ord_status == "Filled"
    assert [o.id for o in views.orders(working_only=True)] == [56]
    again = views.orders()
    assert again[0] is updated
    assert again[1:] == listed[1:]
    assert all(a is b for a, b in zip(again[1:], listed[1:], strict=True))  # untouched: reused
    # An identical event leaves the store's mapping (and so the cached view) alone.
    props(store, "order", "Updated", {**SAMPLES["order"], "ordStatus": "Filled"})
    assert views.order(51) is updated


def test_cache_drops_deleted_entities() -> None:
    store = sample_store()
    views = StoreViews(store)
    assert len(views.orders()) == 4
    props(store, "order", "Deleted", {"id": 54})
    assert views.order(54) is None
    assert 54 not in views.cached_ids("order")
    props(store, "order", "Deleted", {"id": 55})
    assert [o.id for o in views.orders()] == [51, 56]
    assert views.cached_ids("order") == {51, 56}
    assert [f.id for f in views.fills(account_id=12)] == []  # fill 73's order is gone


def test_a_new_snapshot_is_seen_at_once() -> None:
    store = sample_store()
    views = StoreViews(store)
    assert len(views.positions()) == 3
    store.apply_snapshot({"positions": [SAMPLES["position"]]}, 2, entity_types=None)
    assert [p.id for p in views.positions()] == [31]
    assert views.position(11, 42) is None
    assert len(views.accounts()) == 2  # a type the snapshot did not carry is kept


# -- against the simulator ------------------------------------------------------------------


async def test_views_agree_with_a_live_store(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulator(SimConfig(seed=3)) as sim,
        open_engine(config_for(sim)) as engine,
    ):
        await engine.wait_for(State.LIVE)
        await trio.sleep(40)
        await settle(sim)
        store = engine.store
        views = StoreViews(store)

        accounts = views.accounts()
        assert [a.id for a in accounts] == [raw["id"] for raw in store.of_type("account")]
        assert all(a.name and a.active is True and a.timestamp for a in accounts)
        account_ids = {a.id for a in accounts}

        orders = views.orders()
        assert len(orders) == len(store.of_type("order")) > 2
        assert all(o.account_id in account_ids for o in orders)
        assert all(o.action in ("Buy", "Sell") and o.timestamp is not None for o in orders)
        working = views.orders(working_only=True)
        assert working
        assert {o.id for o in working} == {
            raw["id"] for raw in store.of_type("order") if raw["ordStatus"] == "Working"
        }

        fills = views.fills()
        assert fills
        for fill in fills:
            order = views.order(fill.order_id or -1)
            assert order is not None
            assert order.ord_status == "Filled"
            assert (fill.contract_id, fill.action) == (order.contract_id, order.action)
            assert fill.trade_date is not None
            assert fill in views.fills(account_id=order.account_id)
        assert sum(len(views.fills(account_id=a)) for a in account_ids) == len(fills)

        for position in views.positions():
            assert position.account_id is not None
            assert position.contract_id is not None
            assert views.position(position.account_id, position.contract_id) == position
            assert views.contract(position.contract_id) is not None
            bought, sold = position.bought or 0, position.sold or 0
            assert position.net_pos == bought - sold
        opened = views.positions(open_only=True)
        assert {p.id for p in opened} == {
            raw["id"] for raw in store.of_type("position") if raw["netPos"] != 0
        }

        for account_id in account_ids:
            [balance] = views.cash_balances(account_id)
            assert balance.amount is not None
            assert balance.amount_sod == 50_000.0
            assert balance.currency_id == 1

        for raw in store.of_type("contract"):
            contract = views.contract_by_name(raw["name"])
            assert contract is not None
            assert contract.id == raw["id"]
            assert contract.provider_tick_size == 0.25
        for raw in store.of_type("product"):
            product = views.product(raw["id"])
            assert product is not None
            assert product.value_per_point == raw["valuePerPoint"]

        # Every entity of a modelled type round-trips through view() to its store mapping.
        for (entity_type, entity_id), raw in store.items():
            shown = views.view(entity_type, entity_id)
            if entity_type in VIEW_TYPES:
                assert isinstance(shown, VIEW_TYPES[entity_type])
                assert shown.raw == raw
            else:
                assert shown == raw
