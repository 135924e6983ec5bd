"""The simulated server's entity store and its seeded activity generator (sans-I/O).

All state changes happen here, synchronously, and come back as *batches* of ``props`` events
(one batch = one ``a[...]`` frame, §2). The caller fans batches out to synced sockets, so a
client that applied the snapshot and every batch holds exactly :meth:`World.truth`.

Determinism: the only randomness is the ``random.Random`` handed in, and the only time is the
``now`` argument, so the same seed and the same call sequence give the same entities.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["COLLECTIONS", "Props", "WallClock", "World"]

Entity = dict[str, Any]

#: Plural sync collection name -> singular ``entityType`` (docs/protocol.md §6, OAS).
COLLECTIONS: dict[str, str] = {
    "users": "user",
    "userProperties": "userProperty",
    "properties": "property",
    "accounts": "account",
    "accountRiskStatuses": "accountRiskStatus",
    "marginSnapshots": "marginSnapshot",
    "userAccountAutoLiqs": "userAccountAutoLiq",
    "cashBalances": "cashBalance",
    "currencies": "currency",
    "positions": "position",
    "fillPairs": "fillPair",
    "orders": "order",
    "contracts": "contract",
    "contractMaturities": "contractMaturity",
    "products": "product",
    "exchanges": "exchange",
    "spreadDefinitions": "spreadDefinition",
    "commands": "command",
    "commandReports": "commandReport",
    "executionReports": "executionReport",
    "orderVersions": "orderVersion",
    "fills": "fill",
    "fillFees": "fillFee",
    "orderStrategies": "orderStrategy",
    "orderStrategyLinks": "orderStrategyLink",
    "userPlugins": "userPlugin",
    "contractGroups": "contractGroup",
    "orderStrategyTypes": "orderStrategyType",
}
_SINGULAR_TO_PLURAL = {singular: plural for plural, singular in COLLECTIONS.items()}

# (product, description, value per point, reference price, exchange id)
_PRODUCTS: tuple[tuple[str, str, float, float, int], ...] = (
    ("MES", "Micro E-mini S&P 500", 5.0, 6900.0, 1),
    ("ES", "E-mini S&P 500", 50.0, 6900.0, 1),
    ("NQ", "E-mini Nasdaq-100", 20.0, 25000.0, 1),
)
_TICK = 0.25


class WallClock:
    """Maps trio time to the simulated UTC wall clock: ``epoch + (now - start)``.

    Using a fixed epoch (not the host clock) keeps timestamps reproducible under MockClock.
    """

    def __init__(self, epoch: str, start: float) -> None:
        self._epoch = datetime.fromisoformat(epoch.replace("Z", "+00:00")).astimezone(UTC)
        self._start = start

    def at(self, now: float) -> datetime:
        """The simulated wall time at trio time ``now``."""
        return self._epoch + timedelta(seconds=now - self._start)

    def iso(self, now: float) -> str:
        """ISO-8601 UTC with milliseconds and ``Z``, as Tradovate formats timestamps."""
        return (
            self.at(now).strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.at(now).microsecond // 1000:03d}Z"
        )

    def trade_date(self, now: float) -> dict[str, int]:
        """Tradovate's ``tradeDate`` object (CME session roll-over is not modelled)."""
        day = self.at(now).date()
        return {"year": day.year, "month": day.month, "day": day.day}


@dataclass(frozen=True)
class Props:
    """One ``props`` event (§6): ``entity`` is a private copy frozen at emission time."""

    entity_type: str
    event_type: str
    entity: Entity

    def message(self) -> dict[str, Any]:
        """The event object as it appears inside an ``a[...]`` frame."""
        return {
            "e": "props",
            "d": {
                "entityType": self.entity_type,
                "eventType": self.event_type,
                "entity": self.entity,
            },
        }


class OrderRejected(Exception):
    """A business failure reported as ``s:200`` with ``failureReason``/``failureText`` (§3)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass(frozen=True)
class OrderTerms:
    """What a client asked of an order (``order/placeOrder`` and friends:
    https://partner.tradovate.com/api/rest-api-endpoints/orders/place-order).

    Orders placed with terms get the entities Tradovate keeps beside an order (a ``command``
    carrying the client's ``clOrdId``, and an ``orderVersion`` with the quantity and prices);
    the activity generator's own orders carry none (a simplification of the simulator).
    """

    order_type: str
    price: float | None = None
    stop_price: float | None = None
    time_in_force: str | None = None
    cl_ord_id: str | None = None
    is_automated: bool | None = None
    text: str | None = None


#: ``ordStatus`` values of an order that can still be modified or cancelled.
_LIVE_STATUSES = ("Working", "Suspended")
#: Entity types created only for orders placed with :class:`OrderTerms`; their ids come from a
#: separate generator so they never shift the seeded activity.
_ORDER_DETAIL_TYPES = frozenset({"command", "orderVersion"})


class World:
    """Entities of one demo user, keyed by singular entity type then id."""

    def __init__(
        self,
        *,
        rng: random.Random,
        clock: WallClock,
        username: str,
        accounts: int,
        batch_probability: float,
        now: float,
    ) -> None:
        self._rng = rng
        self._batch_probability = batch_probability
        self._clock = clock
        self._store: dict[str, dict[int, Entity]] = {t: {} for t in COLLECTIONS.values()}
        self._next_id: dict[str, int] = {}
        self._prices: dict[int, float] = {}
        self._value_per_point: dict[int, float] = {}
        self._reference: dict[int, float] = {}
        self.user_id = rng.randrange(1_000_000, 3_000_000)
        self._detail_rng = random.Random(f"details:{self.user_id}")
        self._seed_entities(username, accounts, now)

    # -- queries --------------------------------------------------------------------------

    def truth(self) -> dict[tuple[str, int], Entity]:
        """Deep copy of every entity, keyed ``(entityType, id)``."""
        return {
            (etype, eid): copy.deepcopy(entity)
            for etype, entities in self._store.items()
            for eid, entity in entities.items()
        }

    def get(self, entity_type: str, entity_id: int) -> Entity | None:
        """One entity (a copy) or ``None``."""
        entity = self._store.get(entity_type, {}).get(entity_id)
        return copy.deepcopy(entity) if entity is not None else None

    def entities(self, entity_type: str) -> list[Entity]:
        """All entities of a type (copies), ordered by id."""
        store = self._store.get(entity_type, {})
        return [copy.deepcopy(store[k]) for k in sorted(store)]

    def account_ids(self) -> list[int]:
        """Ids of the user's accounts, in creation order."""
        return sorted(self._store["account"])

    def account_of(self, entity_type: str, entity: Entity) -> int | None:
        """The account an entity belongs to, for ``accounts`` sync filtering (§6).

        Fills, commands and order versions carry no ``accountId`` in Tradovate's schema, so
        they inherit their order's.
        Entities that belong to no account (contracts, products, the user) return ``None``.
        """
        if entity_type == "account":
            return int(entity["id"])
        if "accountId" in entity:
            return int(entity["accountId"])
        if entity_type in ("fill", "command", "orderVersion"):
            order = self._store["order"].get(int(entity["orderId"]))
            return int(order["accountId"]) if order is not None else None
        return None

    def user_of(self, entity_type: str, entity: Entity) -> int | None:
        """The user an entity belongs to, for ``modUserId`` sharding (§6).

        The user itself, anything with a ``userId``, and anything tied to an account (through
        the account's ``userId``); ``None`` for shared reference data (contracts, products).
        """
        if entity_type == "user":
            return int(entity["id"])
        if "userId" in entity:
            return int(entity["userId"])
        account_id = self.account_of(entity_type, entity)
        if account_id is None:
            return None
        account = self._store["account"].get(account_id)
        return int(account["userId"]) if account is not None else None

    def snapshot(
        self, accounts: set[int] | None, entity_types: set[str] | None
    ) -> dict[str, list[Entity]]:
        """The ``user/syncrequest`` payload: every collection, filtered (§6)."""
        result: dict[str, list[Entity]] = {}
        for plural, singular in COLLECTIONS.items():
            if entity_types is not None and singular not in entity_types:
                result[plural] = []
                continue
            items = self.entities(singular)
            if accounts is not None:
                items = [
                    e
                    for e in items
                    if (acc := self.account_of(singular, e)) is None or acc in accounts
                ]
            result[plural] = items
        return result

    def find_contract(self, symbol: object) -> Entity | None:
        """A contract by name (case-insensitive) or id, as ``order/placeorder`` accepts both."""
        for contract in self._store["contract"].values():
            if (isinstance(symbol, int) and contract["id"] == symbol) or (
                isinstance(symbol, str) and contract["name"].lower() == symbol.lower()
            ):
                return copy.deepcopy(contract)
        return None

    def contract_specs(self) -> list[tuple[int, str, float, float]]:
        """``(contract id, name, tick size, reference price)`` of every contract, by id: what
        the market-data process (``_market``) needs. The reference price is the one the
        world was seeded with, not the drifting fill price."""
        return [
            (cid, str(c["name"]), float(c["providerTickSize"]), self._reference[cid])
            for cid, c in sorted(self._store["contract"].items())
        ]

    def find_account(self, spec: object) -> Entity | None:
        """An account by id or by name (``accountSpec``)."""
        for account in self._store["account"].values():
            if account["id"] == spec or account["name"] == spec:
                return copy.deepcopy(account)
        return None

    # -- mutations --------------------------------------------------------------------------

    def place_order(
        self,
        now: float,
        *,
        account_id: int,
        action: str,
        contract_id: int,
        qty: int,
        order_type: str,
        terms: OrderTerms | None = None,
    ) -> tuple[int, list[list[Props]]]:
        """Create an order; a ``Market`` order (or, with ``terms``, one whose price the market
        already reached) fills at once (a second batch).

        Returns the new order id and the batches to broadcast.
        """
        order, created = self._create_order(
            now, account_id, action, contract_id, qty, order_type, terms, status="Working"
        )
        batches = [created]
        if self._marketable(order):
            batches.append(self._fill(now, order["id"]))
        return int(order["id"]), batches

    def place_oso(
        self,
        now: float,
        *,
        account_id: int,
        action: str,
        contract_id: int,
        qty: int,
        terms: OrderTerms,
        brackets: list[tuple[str, OrderTerms]],
    ) -> tuple[list[int], list[list[Props]]]:
        """``order/placeOSO``: an entry order and one or two brackets that wait (``Suspended``)
        until the entry fills, then work as a pair: when one fills the other is cancelled.

        Tradovate documents the request and its ``PlaceOSOResult`` (``orderId``, ``oso1Id``,
        ``oso2Id``), not how the brackets' states and links appear in the entities; the
        simulator's choice: each bracket has ``parentId`` = the entry and ``linkedId`` = the
        other bracket, and takes the entry's quantity. Returns the ids, entry first.
        """
        entry, created = self._create_order(
            now, account_id, action, contract_id, qty, terms.order_type, terms, status="Working"
        )
        ids = [int(entry["id"])]
        for bracket_action, bracket_terms in brackets:
            child, events = self._create_order(
                now,
                account_id,
                bracket_action,
                contract_id,
                qty,
                bracket_terms.order_type,
                bracket_terms,
                status="Suspended",
                parentId=entry["id"],
            )
            ids.append(int(child["id"]))
            created.extend(events)
        if len(ids) == 3:
            for mine, other in ((ids[1], ids[2]), (ids[2], ids[1])):
                self._store["order"][mine]["linkedId"] = other
            created = [
                Props(
                    p.entity_type, p.event_type, copy.deepcopy(self._store["order"][p.entity["id"]])
                )
                if p.entity_type == "order"
                else p
                for p in created
            ]
        batches = [created]
        if self._marketable(entry):
            batches.append(self._fill(now, entry["id"]))
        return ids, batches

    def modify_order(
        self, now: float, order_id: int, qty: int, terms: OrderTerms
    ) -> tuple[int, list[list[Props]]]:
        """``order/modifyOrder``: a new ``orderVersion`` and a ``Modify`` command; raises
        :class:`OrderRejected` if the order is no longer working. Returns the command id."""
        order = self._store["order"].get(order_id)
        if order is None or order["ordStatus"] not in _LIVE_STATUSES:
            raise OrderRejected("TooLate", f"Order {order_id} is not working")
        version = self._version(now, order_id, qty, terms)
        order.update(timestamp=self._clock.iso(now))
        events = [Props("order", "Updated", copy.deepcopy(order)), version]
        command = self._command(now, order_id, "Modify", terms.cl_ord_id, terms.is_automated)
        events.append(command)
        batches = [events]
        if order["ordStatus"] == "Working" and self._marketable(order):
            batches.append(self._fill(now, order_id))
        return int(command.entity["id"]), batches

    def cancel_order(
        self, now: float, order_id: int, *, is_automated: bool | None = None, command: bool = False
    ) -> list[list[Props]]:
        """Cancel a working order (and the brackets still waiting on it); raises
        :class:`OrderRejected` if it is not working. With ``command`` (a client's request), a
        ``Cancel`` command entity comes first in the batch."""
        order = self._store["order"].get(order_id)
        if order is None or order["ordStatus"] not in _LIVE_STATUSES:
            raise OrderRejected("UnknownReason", f"Order {order_id} is not working")
        events: list[Props] = []
        if command:
            events.append(self._command(now, order_id, "Cancel", None, is_automated))
        events.extend(self._cancel(now, order))
        for child in self._children(order_id):
            if child["ordStatus"] == "Suspended":
                events.extend(self._cancel(now, child))
        return [events]

    def liquidate(
        self, now: float, account_id: int, contract_id: int, is_automated: bool | None
    ) -> tuple[int | None, list[list[Props]]]:
        """``order/liquidatePosition``: cancel the account's live orders in the contract, then
        close the position with a market order. Returns that order's id (``None`` when the
        position was flat: nothing to close) and the batches."""
        batches: list[list[Props]] = []
        live = sorted(
            i
            for i, o in self._store["order"].items()
            if o["accountId"] == account_id
            and o["contractId"] == contract_id
            and o["ordStatus"] in _LIVE_STATUSES
        )
        for order_id in live:
            if self._store["order"][order_id]["ordStatus"] in _LIVE_STATUSES:
                batches.extend(self.cancel_order(now, order_id, is_automated=is_automated))
        position = next(
            (
                p
                for p in self._store["position"].values()
                if p["accountId"] == account_id and p["contractId"] == contract_id
            ),
            None,
        )
        net = int(position["netPos"]) if position is not None else 0
        if net == 0:
            return None, batches
        terms = OrderTerms("Market", is_automated=is_automated)
        order_id, placed = self.place_order(
            now,
            account_id=account_id,
            action="Sell" if net > 0 else "Buy",
            contract_id=contract_id,
            qty=abs(net),
            order_type="Market",
            terms=terms,
        )
        return order_id, batches + placed

    def fill_order(self, now: float, order_id: int) -> list[list[Props]]:
        """Fill a working order at the current price (the market traded through it)."""
        order = self._store["order"].get(order_id)
        if order is None or order["ordStatus"] != "Working":
            raise OrderRejected("UnknownReason", f"Order {order_id} is not working")
        return [self._fill(now, order_id)]

    def price(self, contract_id: int) -> float:
        """The simulated market price of a contract."""
        return self._prices[contract_id]

    def activity_step(self, now: float) -> list[list[Props]]:
        """One tick of the seeded generator: one batch, sometimes with two mutations."""
        count = 2 if self._rng.random() < self._batch_probability else 1
        batch: list[Props] = []
        for _ in range(count):
            batch.extend(self._random_mutation(now))
        return [batch]

    # -- internals -----------------------------------------------------------------------

    def _create_order(
        self,
        now: float,
        account_id: int,
        action: str,
        contract_id: int,
        qty: int,
        order_type: str,
        terms: OrderTerms | None,
        *,
        status: str,
        **links: Any,
    ) -> tuple[Entity, list[Props]]:
        order = self._new(
            "order",
            now,
            accountId=account_id,
            contractId=contract_id,
            action=action,
            ordStatus=status,
            admin=False,
            archived=False,
            external=False,
            orderQty=qty,
            orderType=order_type,
            **links,
        )
        events = [Props("order", "Created", copy.deepcopy(order))]
        if terms is not None:
            events.append(self._version(now, int(order["id"]), qty, terms))
            events.append(
                self._command(now, int(order["id"]), "New", terms.cl_ord_id, terms.is_automated)
            )
        return order, events

    def _version(self, now: float, order_id: int, qty: int, terms: OrderTerms) -> Props:
        fields: dict[str, Any] = {
            "orderId": order_id,
            "orderQty": qty,
            "orderType": terms.order_type,
        }
        for key, value in (
            ("price", terms.price),
            ("stopPrice", terms.stop_price),
            ("timeInForce", terms.time_in_force),
            ("text", terms.text),
        ):
            if value is not None:
                fields[key] = value
        order = self._store["order"][order_id]
        order.update(orderQty=qty, orderType=terms.order_type)
        return Props(
            "orderVersion", "Created", copy.deepcopy(self._new("orderVersion", now, **fields))
        )

    def _command(
        self,
        now: float,
        order_id: int,
        command_type: str,
        cl_ord_id: str | None,
        is_automated: bool | None,
    ) -> Props:
        fields: dict[str, Any] = {
            "orderId": order_id,
            "commandType": command_type,
            "commandStatus": "RiskPassed",
            "isAutomated": bool(is_automated),
        }
        if cl_ord_id is not None:
            fields["clOrdId"] = cl_ord_id
        return Props("command", "Created", copy.deepcopy(self._new("command", now, **fields)))

    def _terms(self, order_id: int) -> Entity | None:
        versions = [v for v in self._store["orderVersion"].values() if v["orderId"] == order_id]
        return max(versions, key=lambda v: v["id"]) if versions else None

    def _marketable(self, order: Entity) -> bool:
        """Whether the market price already reached the order's (a ``Market`` order always)."""
        if order["ordStatus"] != "Working":
            return False
        if order["orderType"] == "Market":
            return True
        version = self._terms(int(order["id"]))
        if version is None:
            return False
        market = self._prices[int(order["contractId"])]
        buy = order["action"] == "Buy"
        stop = version.get("stopPrice")
        if stop is not None and order["orderType"] in ("Stop", "StopLimit"):
            if (market < stop) if buy else (market > stop):
                return False  # not triggered
            if order["orderType"] == "Stop":
                return True
        limit = version.get("price")
        if limit is None or order["orderType"] not in ("Limit", "StopLimit", "MIT"):
            return False
        return bool(market <= limit if buy else market >= limit)

    def _children(self, order_id: int) -> list[Entity]:
        return [o for i, o in sorted(self._store["order"].items()) if o.get("parentId") == order_id]

    def _cancel(self, now: float, order: Entity) -> list[Props]:
        order.update(ordStatus="Canceled", timestamp=self._clock.iso(now))
        return [Props("order", "Updated", copy.deepcopy(order))]

    def _after_fill(self, now: float, order: Entity) -> list[Props]:
        """Brackets waiting on a filled entry start working (and may fill at once); a filled
        bracket cancels its pair."""
        out: list[Props] = []
        linked = order.get("linkedId")
        if linked is not None:
            other = self._store["order"].get(int(linked))
            if other is not None and other["ordStatus"] in _LIVE_STATUSES:
                out.extend(self._cancel(now, other))
        for child in self._children(int(order["id"])):
            if child["ordStatus"] != "Suspended":
                continue
            child.update(ordStatus="Working", timestamp=self._clock.iso(now))
            out.append(Props("order", "Updated", copy.deepcopy(child)))
        for child in self._children(int(order["id"])):
            if self._marketable(child):
                out.extend(self._fill(now, int(child["id"])))
        return out

    def _random_mutation(self, now: float) -> list[Props]:
        for contract_id in sorted(self._prices):
            self._prices[contract_id] += self._rng.choice((-2, -1, 0, 1, 2)) * _TICK
        working = sorted(i for i, o in self._store["order"].items() if o["ordStatus"] == "Working")
        roll = self._rng.random()
        if not working or roll < 0.4:
            account_id = self._rng.choice(self.account_ids())
            contract_id = self._rng.choice(sorted(self._store["contract"]))
            _, batches = self.place_order(
                now,
                account_id=account_id,
                action=self._rng.choice(("Buy", "Sell")),
                contract_id=contract_id,
                qty=self._rng.randint(1, 3),
                order_type="Limit",
            )
            return [p for b in batches for p in b]
        order_id = self._rng.choice(working)
        if roll < 0.8:
            return self._fill(now, order_id)
        return self.cancel_order(now, order_id)[0]

    def _fill(self, now: float, order_id: int) -> list[Props]:
        order = self._store["order"][order_id]
        contract_id = int(order["contractId"])
        account_id = int(order["accountId"])
        qty = int(order["orderQty"])
        price = self._prices[contract_id]
        order.update(ordStatus="Filled", timestamp=self._clock.iso(now))
        out = [Props("order", "Updated", copy.deepcopy(order))]
        fill = self._new(
            "fill",
            now,
            orderId=order_id,
            contractId=contract_id,
            tradeDate=self._clock.trade_date(now),
            action=order["action"],
            qty=qty,
            price=price,
            active=True,
            finallyPaired=0,
        )
        out.append(Props("fill", "Created", copy.deepcopy(fill)))
        position, created, pnl = self._apply_to_position(
            now, account_id, contract_id, order["action"], qty, price
        )
        out.append(Props("position", "Created" if created else "Updated", copy.deepcopy(position)))
        balance = next(
            b for b in self._store["cashBalance"].values() if b["accountId"] == account_id
        )
        balance.update(
            amount=round(balance["amount"] + pnl, 2),
            realizedPnL=round(balance["realizedPnL"] + pnl, 2),
            weekRealizedPnL=round(balance["weekRealizedPnL"] + pnl, 2),
            timestamp=self._clock.iso(now),
        )
        out.append(Props("cashBalance", "Updated", copy.deepcopy(balance)))
        out.extend(self._after_fill(now, order))
        return out

    def _apply_to_position(
        self, now: float, account_id: int, contract_id: int, action: str, qty: int, price: float
    ) -> tuple[Entity, bool, float]:
        """Average-price position keeping; returns (position, created?, realized PnL)."""
        position = next(
            (
                p
                for p in self._store["position"].values()
                if p["accountId"] == account_id and p["contractId"] == contract_id
            ),
            None,
        )
        created = position is None
        if position is None:
            position = self._new(
                "position",
                now,
                accountId=account_id,
                contractId=contract_id,
                tradeDate=self._clock.trade_date(now),
                netPos=0,
                netPrice=None,
                bought=0,
                boughtValue=0.0,
                sold=0,
                soldValue=0.0,
                prevPos=0,
                prevPrice=None,
            )
        side = 1 if action == "Buy" else -1
        net = int(position["netPos"])
        net_price = position["netPrice"]
        pnl = 0.0
        if net == 0 or (net > 0) == (side > 0):
            held = abs(net) * (net_price or 0.0)
            net_price = (held + qty * price) / (abs(net) + qty)
        else:
            closing = min(qty, abs(net))
            direction = 1 if net > 0 else -1
            pnl = closing * (price - float(net_price or 0.0)) * direction
            pnl *= self._value_per_point[contract_id]
            if qty > abs(net):
                net_price = price
        net += side * qty
        if net == 0:
            net_price = None
        if side > 0:
            position.update(
                bought=position["bought"] + qty,
                boughtValue=round(position["boughtValue"] + qty * price, 2),
            )
        else:
            position.update(
                sold=position["sold"] + qty, soldValue=round(position["soldValue"] + qty * price, 2)
            )
        position.update(
            netPos=net,
            netPrice=round(net_price, 6) if net_price is not None else None,
            timestamp=self._clock.iso(now),
            tradeDate=self._clock.trade_date(now),
        )
        return position, created, round(pnl, 2)

    def _new(self, entity_type: str, now: float, **fields: Any) -> Entity:
        # Each type's ids start at a seeded, realistic-looking base and then count up.
        if entity_type not in self._next_id:
            rng = self._detail_rng if entity_type in _ORDER_DETAIL_TYPES else self._rng
            self._next_id[entity_type] = rng.randrange(10_000, 90_000) * 1000
        entity_id = self._next_id[entity_type]
        self._next_id[entity_type] = entity_id + 1
        entity: Entity = {"id": entity_id, "timestamp": self._clock.iso(now), **fields}
        self._store[entity_type][entity_id] = entity
        return entity

    def _seed_entities(self, username: str, accounts: int, now: float) -> None:
        self._store["user"][self.user_id] = {
            "id": self.user_id,
            "name": username,
            "timestamp": self._clock.iso(now),
            "email": f"{username}@example.invalid",
            "status": "Active",
            "professional": False,
            "organizationId": None,
            "twoFactorAuth": False,
        }
        self._store["currency"][1] = {"id": 1, "name": "USD", "symbol": "$"}
        self._store["exchange"][1] = {"id": 1, "name": "CME"}
        group = self._new("contractGroup", now, name="Equity Index")
        group.pop("timestamp")
        for name, description, value, reference, exchange_id in _PRODUCTS:
            product = self._new(
                "product",
                now,
                name=name,
                currencyId=1,
                productType="Futures",
                description=description,
                exchangeId=exchange_id,
                contractGroupId=group["id"],
                status="Verified",
                months="HMUZ",
                valuePerPoint=value,
                tickSize=_TICK,
                priceFormatType="Decimal",
                priceFormat=-2,
                isSecured=False,
            )
            maturity = self._new(
                "contractMaturity",
                now,
                productId=product["id"],
                expirationMonth=202612,
                expirationDate="2026-12-18T14:30:00.000Z",
                archived=False,
                seqNo=1,
                isFront=True,
            )
            contract = self._new(
                "contract",
                now,
                name=f"{name}Z6",
                contractMaturityId=maturity["id"],
                status="DefinitionChecked",
                providerTickSize=_TICK,
            )
            for entity in (product, maturity, contract):
                entity.pop("timestamp")
            self._prices[int(contract["id"])] = reference
            self._reference[int(contract["id"])] = reference
            self._value_per_point[int(contract["id"])] = value
        for _ in range(accounts):
            account = self._new(
                "account",
                now,
                name=f"DEMO{self._rng.randrange(10_000, 99_999)}",
                userId=self.user_id,
                accountType="Customer",
                active=True,
                clearingHouseId=2,
                riskCategoryId=2,
                autoLiqProfileId=2,
                marginAccountType="Speculator",
                legalStatus="Individual",
                archived=False,
            )
            self._new(
                "cashBalance",
                now,
                accountId=account["id"],
                tradeDate=self._clock.trade_date(now),
                currencyId=1,
                amount=50_000.0,
                realizedPnL=0.0,
                weekRealizedPnL=0.0,
                amountSOD=50_000.0,
            )
        # A little history so a fresh snapshot is not empty: one filled and one working order.
        first = self.account_ids()[0]
        contract_ids = sorted(self._store["contract"])
        self.place_order(
            now,
            account_id=first,
            action="Buy",
            contract_id=contract_ids[0],
            qty=1,
            order_type="Market",
        )
        self.place_order(
            now,
            account_id=first,
            action="Sell",
            contract_id=contract_ids[0],
            qty=1,
            order_type="Limit",
        )


def plural_of(entity_type: str) -> str:
    """The sync collection name of a singular entity type (``KeyError`` if unknown)."""
    return _SINGULAR_TO_PLURAL[entity_type]
