"""Orders as a typed API: place, modify, cancel and liquidate, each followed by a handle.

Theory of operation
-------------------
:class:`Orders` (``engine.orders``) turns typed arguments into Tradovate's order requests
(``order/placeOrder``, ``order/placeOSO``, ``order/modifyOrder``, ``order/cancelOrder``,
``order/liquidatePosition``; https://partner.tradovate.com/api/rest-api-endpoints/orders/place-order
and the pages beside it), checks the arguments before anything is sent, and reads the answer:
a refusal inside a ``200`` (``failureReason``/``failureText``, or ``errorText``) becomes
:class:`~trio_tradovate.errors.OrderRejected`. Every request carries ``isAutomated: true``,
which Tradovate requires of orders a program places
(https://partner.tradovate.com/resources/reference/best-practices).

A placement returns an :class:`OrderHandle`, in the spirit of ib_async's ``Trade``: a live
view of one order. The handle holds no copy of the order; its ``status``, ``fills`` and
``versions`` are read from the engine's store (the synced ``order``, ``fill``,
``orderVersion`` and ``executionReport`` entities) each time they are asked for, so they can
never disagree with the account. Waiting (``wait_filled``, ``wait_final``) happens in the
caller's task: the engine calls :meth:`Orders.store_written` after every store write and
:meth:`Orders.on_transition` for every transition record, which only wake waiters. No task
runs per order, and nothing here reads the change feed, so consumers of ``events()`` lose
nothing.

Unknown outcomes are reconciled, never resent. The engine never re-sends a money-moving
request whose connection died before the answer (:class:`~trio_tradovate.errors.OutcomeUnknown`).
Each placement therefore carries a ``clOrdId`` of our own, which Tradovate keeps on the
order's ``command`` entity. A handle whose placement ended unknown looks for that ``clOrdId``
in the synced commands: found, it follows the order; still absent once every socket has synced
again after the loss, the order never reached the server and the handle says ``NotPlaced``.
The decision is taken from the server's snapshot, not from a guess about timing.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import count
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import trio

from .entities import ExecutionReport, Fill, Order, OrderVersion
from .errors import (
    ConfigError,
    EngineStopped,
    OrderNotFilled,
    OrderNotPlaced,
    OrderRejected,
    OutcomeUnknown,
    RemoteProtocolError,
    excerpt,
)
from .statechart import State, TransitionRecord

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger("trio_tradovate.orders")

__all__ = [
    "ACCEPTED",
    "FINAL_STATUSES",
    "NOT_PLACED",
    "UNKNOWN",
    "Action",
    "Bracket",
    "CommandResult",
    "LiquidateResult",
    "OrderHandle",
    "OrderType",
    "Orders",
    "PlaceOrderResult",
    "PlaceOsoResult",
    "TimeInForce",
    "parse_command_result",
    "parse_liquidate_result",
    "parse_place_order_result",
    "parse_place_oso_result",
]

Action = Literal["Buy", "Sell"]
OrderType = Literal[
    "Market", "Limit", "Stop", "StopLimit", "MIT", "TrailingStop", "TrailingStopLimit"
]
TimeInForce = Literal["Day", "FOK", "GTC", "GTD", "IOC"]

_ACTIONS: frozenset[str] = frozenset(get_args(Action))
_ORDER_TYPES: frozenset[str] = frozenset(get_args(OrderType))
_TIME_IN_FORCE: frozenset[str] = frozenset(get_args(TimeInForce))
#: Which types need ``price`` and which ``stopPrice`` (placeOrder reference: ``price`` is
#: "required for non-Market" types; ``stopPrice`` for the stop and trailing-stop types).
_NEEDS_PRICE = frozenset({"Limit", "StopLimit", "TrailingStopLimit", "MIT"})
_NEEDS_STOP = frozenset({"Stop", "StopLimit", "TrailingStop", "TrailingStopLimit"})
#: Tradovate limits ``clOrdId`` and ``customTag50`` to short strings; 64 is the documented
#: bound of ``customTag50`` and a safe one for both.
_MAX_TAG = 64

#: Handle status before the store holds the order the server accepted.
ACCEPTED = "Accepted"
#: Handle status while a placement's outcome is unknown (the connection died before its answer).
UNKNOWN = "Unknown"
#: Handle status once reconciliation showed the order never reached the server.
NOT_PLACED = "NotPlaced"
#: Statuses after which nothing more happens to an order (Tradovate's final ``ordStatus``
#: values, plus :data:`NOT_PLACED`).
FINAL_STATUSES: frozenset[str] = frozenset(
    {"Filled", "Canceled", "Rejected", "Expired", "Completed", NOT_PLACED}
)


# -- typed answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceOrderResult:
    """``order/placeOrder``'s answer (``PlaceOrderResult``) once it is not a refusal."""

    order_id: int


@dataclass(frozen=True)
class PlaceOsoResult:
    """``order/placeOSO``'s answer: the entry order and its brackets' ids."""

    order_id: int
    oso1_id: int | None
    oso2_id: int | None


@dataclass(frozen=True)
class CommandResult:
    """``order/modifyOrder`` and ``order/cancelOrder``'s answer: the command the server made."""

    command_id: int | None


@dataclass(frozen=True)
class LiquidateResult:
    """``order/liquidatePosition``'s answer: the closing order, when one was needed."""

    order_id: int | None


def _refusal(endpoint: str, data: object) -> OrderRejected | None:
    """The refusal inside a ``200`` answer, if it is one (Tradovate's error-handling page:
    https://partner.tradovate.com/overview/core-concepts/error-handling)."""
    if not isinstance(data, Mapping):
        return None
    reason = data.get("failureReason")
    if reason is not None and reason != "Success":
        text = data.get("failureText")
        return OrderRejected(endpoint, str(reason), text if isinstance(text, str) else "")
    error_text = data.get("errorText")
    if isinstance(error_text, str) and error_text:
        return OrderRejected(endpoint, None, error_text)
    return None


def _answer(endpoint: str, data: object) -> Mapping[str, Any]:
    refused = _refusal(endpoint, data)
    if refused is not None:
        raise refused
    if not isinstance(data, Mapping):
        raise RemoteProtocolError(f"{endpoint} answered with a non-object", repr(data))
    return data


def _id(endpoint: str, data: Mapping[str, Any], key: str, *, required: bool) -> int | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RemoteProtocolError(f"{endpoint} answered without a usable {key}", repr(data))
    return value


def parse_place_order_result(data: object, endpoint: str = "order/placeorder") -> PlaceOrderResult:
    """``d`` of a placeOrder answer as a :class:`PlaceOrderResult`.

    Raises:
        OrderRejected: the answer is a refusal.
        RemoteProtocolError: it is neither a refusal nor carries an ``orderId``.
    """
    data = _answer(endpoint, data)
    order_id = _id(endpoint, data, "orderId", required=True)
    assert order_id is not None
    return PlaceOrderResult(order_id)


def parse_place_oso_result(data: object) -> PlaceOsoResult:
    """``d`` of a placeOSO answer as a :class:`PlaceOsoResult` (raises as
    :func:`parse_place_order_result`)."""
    endpoint = "order/placeoso"
    data = _answer(endpoint, data)
    order_id = _id(endpoint, data, "orderId", required=True)
    assert order_id is not None
    return PlaceOsoResult(
        order_id,
        _id(endpoint, data, "oso1Id", required=False),
        _id(endpoint, data, "oso2Id", required=False),
    )


def parse_command_result(data: object, endpoint: str) -> CommandResult:
    """``d`` of a modifyOrder or cancelOrder answer (raises :class:`OrderRejected` for a
    refusal)."""
    data = _answer(endpoint, data)
    return CommandResult(_id(endpoint, data, "commandId", required=False))


def parse_liquidate_result(data: object) -> LiquidateResult:
    """``d`` of a liquidatePosition answer (raises :class:`OrderRejected` for a refusal)."""
    endpoint = "order/liquidateposition"
    data = _answer(endpoint, data)
    return LiquidateResult(_id(endpoint, data, "orderId", required=False))


# -- arguments, checked before anything is sent -----------------------------------------------


def _check_action(action: object, what: str = "action") -> str:
    if action not in _ACTIONS:
        raise ConfigError(f"{what} must be 'Buy' or 'Sell' (exactly), got {action!r}")
    return str(action)


def _check_qty(qty: object) -> int:
    if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
        raise ConfigError(f"qty must be a whole number of contracts above 0, got {qty!r}")
    return qty


def _check_price(value: object, name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_tag(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TAG:
        raise ConfigError(f"{name} must be a non-empty string of at most {_MAX_TAG} characters")
    return value


def _terms(
    order_type: object,
    price: object,
    stop_price: object,
    time_in_force: object,
    expire_time: object,
    *,
    what: str = "",
) -> dict[str, Any]:
    """The order-version fields, checked: the right prices for the type, a known
    ``timeInForce``, ``expireTime`` with ``GTD``."""
    prefix = f"{what}: " if what else ""
    if order_type not in _ORDER_TYPES:
        raise ConfigError(
            f"{prefix}order_type must be one of {sorted(_ORDER_TYPES)}, got {order_type!r}"
        )
    fields: dict[str, Any] = {"orderType": order_type}
    checked_price = _check_price(price, "price")
    checked_stop = _check_price(stop_price, "stop_price")
    if order_type in _NEEDS_PRICE and checked_price is None:
        raise ConfigError(f"{prefix}a {order_type} order needs price=...")
    if order_type in _NEEDS_STOP and checked_stop is None:
        raise ConfigError(f"{prefix}a {order_type} order needs stop_price=...")
    if order_type not in _NEEDS_PRICE and checked_price is not None:
        raise ConfigError(f"{prefix}a {order_type} order takes no price; leave price out")
    if order_type not in _NEEDS_STOP and checked_stop is not None:
        raise ConfigError(f"{prefix}a {order_type} order takes no stop_price; leave it out")
    if checked_price is not None:
        fields["price"] = checked_price
    if checked_stop is not None:
        fields["stopPrice"] = checked_stop
    if time_in_force is not None:
        if time_in_force not in _TIME_IN_FORCE:
            raise ConfigError(
                f"{prefix}time_in_force must be one of {sorted(_TIME_IN_FORCE)}, "
                f"got {time_in_force!r}"
            )
        fields["timeInForce"] = time_in_force
    if (time_in_force == "GTD") != (expire_time is not None):
        raise ConfigError(
            f"{prefix}expire_time is required with time_in_force='GTD', and only then"
        )
    if expire_time is not None:
        if not isinstance(expire_time, str):
            raise ConfigError(f"{prefix}expire_time must be an ISO 8601 string")
        fields["expireTime"] = expire_time
    return fields


@dataclass(frozen=True)
class Bracket:
    """One bracket of an OSO order (Tradovate's ``RestrainedOrderVersion``): sent once the
    entry fills, for the entry's quantity. Checked when it is made."""

    action: Action
    order_type: OrderType
    price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce | None = None

    def __post_init__(self) -> None:
        _check_action(self.action, "bracket action")
        _terms(
            self.order_type, self.price, self.stop_price, self.time_in_force, None, what="bracket"
        )

    def body(self, cl_ord_id: str) -> dict[str, Any]:
        """The bracket as sent in ``bracket1``/``bracket2``."""
        fields = _terms(self.order_type, self.price, self.stop_price, self.time_in_force, None)
        return {"action": self.action, "clOrdId": cl_ord_id, **fields}


# -- the handle ---------------------------------------------------------------------------------


class OrderHandle:
    """One order, as the account shows it now (see the module docstring).

    Read :attr:`status`, :attr:`order`, :attr:`fills`, :attr:`versions` at any time; await
    :meth:`wait_placed`, :meth:`wait_filled`, :meth:`wait_final`; act with :meth:`modify`
    and :meth:`cancel`. Brackets of an OSO order are handles too (:attr:`brackets`).
    """

    def __init__(
        self,
        orders: Orders,
        endpoint: str,
        cl_ord_id: str | None,
        order_id: int | None,
        unknown: OutcomeUnknown | None = None,
        marks: Counter[int] | None = None,
    ) -> None:
        self._orders = orders
        #: The request that created the order (``order/placeorder``, ...).
        self.endpoint = endpoint
        #: The client tag sent as ``clOrdId`` (``None`` for a liquidation's order).
        self.cl_ord_id = cl_ord_id
        self._order_id = order_id
        #: Why the outcome was unknown, while it was (kept after reconciliation, for logs).
        self.outcome_unknown = unknown
        self._marks = marks
        self._not_placed = False
        #: The bracket orders of an OSO placement, in ``bracket1``, ``bracket2`` order.
        self.brackets: tuple[OrderHandle, ...] = ()

    def __repr__(self) -> str:
        return f"<OrderHandle {self.cl_ord_id} order={self._order_id} status={self.status}>"

    # -- what the account says ------------------------------------------------------------------

    @property
    def order_id(self) -> int | None:
        """The server's order id (``None`` while the outcome is unknown or when not placed)."""
        self._reconcile()
        return self._order_id

    @property
    def status(self) -> str:
        """The order's ``ordStatus`` from the store (``Working``, ``Filled``, ``Canceled``,
        ...); :data:`ACCEPTED` before the store holds it, :data:`UNKNOWN` while a lost
        answer is being reconciled, :data:`NOT_PLACED` when it never reached the server."""
        self._reconcile()
        if self._not_placed:
            return NOT_PLACED
        if self._order_id is None:
            return UNKNOWN
        order = self._orders.views.order(self._order_id)
        if order is None or order.ord_status is None:
            return ACCEPTED
        return order.ord_status

    @property
    def is_done(self) -> bool:
        """Whether :attr:`status` is final (nothing more will happen to the order)."""
        return self.status in FINAL_STATUSES

    @property
    def order(self) -> Order | None:
        """The order entity, when the store holds it."""
        order_id = self.order_id
        return None if order_id is None else self._orders.views.order(order_id)

    @property
    def fills(self) -> list[Fill]:
        """The order's fills so far, by id."""
        order_id = self.order_id
        return [] if order_id is None else self._orders.views.fills(order_id)

    @property
    def filled_qty(self) -> int:
        """Contracts filled so far."""
        return sum(fill.qty or 0 for fill in self.fills)

    @property
    def avg_fill_price(self) -> float | None:
        """The quantity-weighted fill price, or ``None`` before any fill."""
        fills = [f for f in self.fills if f.qty and f.price is not None]
        total = sum(f.qty or 0 for f in fills)
        if not total:
            return None
        return sum((f.qty or 0) * (f.price or 0.0) for f in fills) / total

    @property
    def versions(self) -> list[OrderVersion]:
        """The order's versions (its terms), oldest first: the last is current."""
        order_id = self.order_id
        return [] if order_id is None else self._orders.views.order_versions(order_id)

    @property
    def execution_reports(self) -> list[ExecutionReport]:
        """The exchange's reports on the order, when the server sends them."""
        order_id = self.order_id
        return [] if order_id is None else self._orders.views.execution_reports(order_id)

    # -- waiting ------------------------------------------------------------------------------

    async def wait_placed(self) -> int:
        """The order id, once known; resolves an unknown outcome from the re-synced account.

        Raises:
            OrderNotPlaced: the order never reached the server.
            OutcomeUnknown: the engine syncs no ``command`` entities, so the ``clOrdId``
                cannot be looked up (see ``docs/orders.md``).
            EngineStopped: the engine stopped first.
        """
        if self.outcome_unknown is not None and not self._orders.can_reconcile:
            raise self.outcome_unknown
        await self._orders.wait(self._settled)
        if self._not_placed:
            assert self.cl_ord_id is not None
            raise OrderNotPlaced(self.endpoint, self.cl_ord_id)
        assert self._order_id is not None
        return self._order_id

    async def wait_final(self) -> str:
        """Wait until nothing more can happen to the order; return its final status
        (``Filled``, ``Canceled``, ``Rejected``, ``Expired``, ``Completed`` or
        :data:`NOT_PLACED`)."""
        if self.outcome_unknown is not None and not self._orders.can_reconcile:
            raise self.outcome_unknown
        await self._orders.wait(lambda: self.is_done)
        return self.status

    async def wait_filled(self) -> list[Fill]:
        """Wait until the order is ``Filled``; return its fills.

        Raises:
            OrderNotFilled: it ended otherwise (``status`` on the error says how).
            OrderNotPlaced: it never reached the server.
        """
        status = await self.wait_final()
        if status == NOT_PLACED:
            assert self.cl_ord_id is not None
            raise OrderNotPlaced(self.endpoint, self.cl_ord_id)
        if status != "Filled":
            raise OrderNotFilled(self._order_id, status)
        return self.fills

    async def wait_until(self, predicate: Callable[[OrderHandle], bool]) -> None:
        """Wait until ``predicate(self)`` holds (re-checked after every store change)."""
        await self._orders.wait(lambda: predicate(self))

    # -- acting ----------------------------------------------------------------------------------

    async def cancel(self, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        """Cancel the order (``order/cancelOrder``); see :meth:`Orders.cancel`."""
        return await self._orders.cancel(self._known_id("cancel"), timeout=timeout)

    async def modify(
        self,
        *,
        qty: int | None = None,
        order_type: OrderType | None = None,
        price: float | None = None,
        stop_price: float | None = None,
        time_in_force: TimeInForce | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> CommandResult:
        """Change the order's terms (``order/modifyOrder``). What is not given is kept from
        the current version (:attr:`versions`); see :meth:`Orders.modify`."""
        order_id = self._known_id("modify")
        current = self.versions[-1] if self.versions else None
        kept_type = current.order_type if current is not None else None
        new_type = order_type if order_type is not None else kept_type
        new_qty = qty if qty is not None else (current.order_qty if current is not None else None)
        if new_type not in _ORDER_TYPES or new_qty is None:
            raise ConfigError(
                f"order {order_id} has no usable version in the store: give qty= and order_type="
            )
        if current is not None:  # prices the new type needs and the caller did not give
            if new_type in _NEEDS_PRICE and price is None:
                price = current.price
            if new_type in _NEEDS_STOP and stop_price is None:
                stop_price = current.stop_price
        return await self._orders.modify(
            order_id,
            qty=new_qty,
            order_type=cast(OrderType, new_type),
            price=price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            timeout=timeout,
        )

    def _known_id(self, what: str) -> int:
        order_id = self.order_id
        if order_id is None:
            raise ConfigError(
                f"cannot {what} an order whose id is not known (status {self.status}); "
                "await wait_placed() first"
            )
        return order_id

    # -- reconciliation ---------------------------------------------------------------------------

    def _settled(self) -> bool:
        """Whether the order's existence is known (either way)."""
        self._reconcile()
        return self._order_id is not None or self._not_placed

    def _reconcile(self) -> None:
        """Settle an unknown outcome from the store, when it can be settled (never raises).

        A handle settled as not placed keeps looking: should the order still show up (the
        server acted on the request after the snapshot that settled it), the handle follows
        it, since the account is the truth, and says so in the log.
        """
        if self._order_id is not None or self.outcome_unknown is None:
            return
        assert self.cl_ord_id is not None
        found = self._orders.find(self.cl_ord_id)
        if found is not None:
            if self._not_placed:
                logger.warning(
                    "order %d with clOrdId %r appeared after it was settled as not placed",
                    found,
                    self.cl_ord_id,
                )
                self._not_placed = False
            self._order_id = found
        elif (
            not self._not_placed
            and self._marks is not None
            and self._orders.resynced_since(self._marks)
        ):
            self._not_placed = True


class Orders:
    """The engine's order desk: ``engine.orders``. See the module docstring."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: Typed views of the engine's store (what handles read).
        self.views = engine.views
        self._changed: trio.Event | None = None
        #: How many times each socket (by shard index) has gone live, i.e. synced.
        self._syncs: Counter[int] = Counter()
        self._prefix = secrets.token_hex(4)
        self._numbers = count(1)

    # -- the engine's side (the one hook) ---------------------------------------------------------

    def store_written(self) -> None:
        """The store changed: wake whoever waits on a handle (cheap when nobody does)."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def on_transition(self, record: TransitionRecord) -> None:
        """A transition was recorded: count syncs (a socket entering ``live`` has just applied
        its snapshot), and wake waiters (the engine may have stopped)."""
        if (
            record.region == "connection"
            and record.dest is State.LIVE
            and record.source is not State.LIVE
        ):
            self._syncs[record.shard] += 1
        self.store_written()

    # -- what handles use --------------------------------------------------------------------------

    @property
    def can_reconcile(self) -> bool:
        """Whether ``command`` entities are synced, so a ``clOrdId`` can be looked up."""
        types = self._engine.config.sync.entity_types
        return types is None or "command" in types

    def find(self, cl_ord_id: str) -> int | None:
        """The id of the order the synced ``command`` with this ``clOrdId`` created."""
        for command in self._engine.store.of_type("command"):
            if command.get("clOrdId") == cl_ord_id and command.get("commandType") == "New":
                order_id = command.get("orderId")
                if isinstance(order_id, int) and not isinstance(order_id, bool):
                    return order_id
        return None

    def resynced_since(self, marks: Counter[int]) -> bool:
        """Whether every socket synced again since ``marks`` was taken, and all are live: the
        store then reflects a snapshot taken after the loss."""
        if self._engine.state is not State.LIVE:
            return False
        return all(self._syncs[shard.index] > marks[shard.index] for shard in self._engine.shards)

    async def wait(self, done: Callable[[], bool]) -> None:
        """Wait in the caller's task until ``done()``, re-checked after each store write or
        transition."""
        await trio.lowlevel.checkpoint()
        while not done():
            engine = self._engine
            if engine.state is State.STOPPED:
                raise EngineStopped(engine.stop_reason or "stopped", engine.stop_error)
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    # -- placing -----------------------------------------------------------------------------------

    def new_tag(self) -> str:
        """A fresh ``clOrdId``: unique to this process run, short, no secret in it."""
        return f"tt-{self._prefix}-{next(self._numbers)}"

    async def place(
        self,
        account_id: int,
        symbol: str | int,
        action: Action,
        qty: int,
        *,
        order_type: OrderType = "Market",
        price: float | None = None,
        stop_price: float | None = None,
        time_in_force: TimeInForce | None = None,
        expire_time: str | None = None,
        text: str | None = None,
        cl_ord_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> OrderHandle:
        """Place one order (``order/placeOrder``) and return its handle.

        ``symbol`` is a contract name (``"MESZ6"``) or a contract id. ``price`` goes with
        ``Limit``/``StopLimit``/``MIT``, ``stop_price`` with ``Stop``/``StopLimit`` and the
        trailing stops; ``expire_time`` (ISO 8601) with ``time_in_force="GTD"``.

        If the connection dies before the answer, the handle comes back with status
        :data:`UNKNOWN` and settles from the re-synced account (:meth:`OrderHandle.wait_placed`).

        Raises:
            ConfigError: a bad argument (nothing was sent).
            OrderRejected: the server refused the order inside a ``200`` answer.
            RequestError: the server answered with an error status.
        """
        tag = _check_tag(cl_ord_id, "cl_ord_id") or self.new_tag()
        body = self._entry(
            account_id,
            symbol,
            action,
            qty,
            order_type,
            price,
            stop_price,
            time_in_force,
            expire_time,
            text,
            tag,
        )
        handles = await self._submit("order/placeorder", body, [tag], timeout)
        return handles[0]

    async def market(
        self, account_id: int, symbol: str | int, action: Action, qty: int, **options: Any
    ) -> OrderHandle:
        """:meth:`place` a ``Market`` order."""
        return await self.place(account_id, symbol, action, qty, order_type="Market", **options)

    async def limit(
        self,
        account_id: int,
        symbol: str | int,
        action: Action,
        qty: int,
        price: float,
        **options: Any,
    ) -> OrderHandle:
        """:meth:`place` a ``Limit`` order at ``price``."""
        return await self.place(
            account_id, symbol, action, qty, order_type="Limit", price=price, **options
        )

    async def stop(
        self,
        account_id: int,
        symbol: str | int,
        action: Action,
        qty: int,
        stop_price: float,
        **options: Any,
    ) -> OrderHandle:
        """:meth:`place` a ``Stop`` order triggered at ``stop_price``."""
        return await self.place(
            account_id, symbol, action, qty, order_type="Stop", stop_price=stop_price, **options
        )

    async def stop_limit(
        self,
        account_id: int,
        symbol: str | int,
        action: Action,
        qty: int,
        stop_price: float,
        price: float,
        **options: Any,
    ) -> OrderHandle:
        """:meth:`place` a ``StopLimit`` order: triggered at ``stop_price``, limited at
        ``price``."""
        return await self.place(
            account_id,
            symbol,
            action,
            qty,
            order_type="StopLimit",
            stop_price=stop_price,
            price=price,
            **options,
        )

    async def place_oso(
        self,
        account_id: int,
        symbol: str | int,
        action: Action,
        qty: int,
        bracket1: Bracket,
        bracket2: Bracket | None = None,
        *,
        order_type: OrderType = "Market",
        price: float | None = None,
        stop_price: float | None = None,
        time_in_force: TimeInForce | None = None,
        expire_time: str | None = None,
        text: str | None = None,
        cl_ord_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> OrderHandle:
        """Place an entry order with one or two brackets (``order/placeOSO``); the brackets
        are sent once the entry fills. Returns the entry's handle; its :attr:`~OrderHandle.brackets`
        are the brackets' handles. Raises as :meth:`place`."""
        if not isinstance(bracket1, Bracket) or not (
            bracket2 is None or isinstance(bracket2, Bracket)
        ):
            raise ConfigError("bracket1 (and bracket2, if given) must be Bracket(...) values")
        tag = _check_tag(cl_ord_id, "cl_ord_id") or self.new_tag()
        if len(tag) > _MAX_TAG - 3:
            raise ConfigError(
                f"cl_ord_id of an OSO order may have at most {_MAX_TAG - 3} characters"
            )
        body = self._entry(
            account_id,
            symbol,
            action,
            qty,
            order_type,
            price,
            stop_price,
            time_in_force,
            expire_time,
            text,
            tag,
        )
        tags = [tag]
        for index, bracket in enumerate((bracket1, bracket2), start=1):
            if bracket is not None:
                tags.append(f"{tag}-b{index}")
                body[f"bracket{index}"] = bracket.body(tags[-1])
        handles = await self._submit("order/placeoso", body, tags, timeout)
        handles[0].brackets = tuple(handles[1:])
        return handles[0]

    async def bracket(
        self,
        account_id: int,
        symbol: str | int,
        action: Action,
        qty: int,
        *,
        take_profit: float | None = None,
        stop_loss: float | None = None,
        **options: Any,
    ) -> OrderHandle:
        """An entry with a take-profit ``Limit`` and/or a protective ``Stop`` on the other
        side (``order/placeOSO``); entry options as :meth:`place`."""
        if take_profit is None and stop_loss is None:
            raise ConfigError("a bracket order needs take_profit=..., stop_loss=..., or both")
        other: Action = "Sell" if _check_action(action) == "Buy" else "Buy"
        legs = []
        if take_profit is not None:
            legs.append(Bracket(other, "Limit", price=take_profit))
        if stop_loss is not None:
            legs.append(Bracket(other, "Stop", stop_price=stop_loss))
        return await self.place_oso(
            account_id,
            symbol,
            action,
            qty,
            legs[0],
            legs[1] if len(legs) > 1 else None,
            **options,
        )

    # -- acting on orders --------------------------------------------------------------------------

    async def modify(
        self,
        order_id: int,
        *,
        qty: int | None,
        order_type: OrderType | None,
        price: float | None = None,
        stop_price: float | None = None,
        time_in_force: TimeInForce | None = None,
        expire_time: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> CommandResult:
        """``order/modifyOrder``: the order's new terms, whole (Tradovate requires
        ``orderQty`` and ``orderType``). Never re-sent: a lost answer raises
        :class:`OutcomeUnknown`, and the order's handle shows what happened once re-synced.

        Raises:
            ConfigError: a bad argument. OrderRejected: refused (e.g. ``TooLate``).
        """
        body: dict[str, Any] = {"orderId": _check_order_id(order_id), "orderQty": _check_qty(qty)}
        body.update(_terms(order_type, price, stop_price, time_in_force, expire_time))
        body["isAutomated"] = True
        data = await self._engine.request("order/modifyorder", body=body, timeout=timeout)
        return parse_command_result(data, "order/modifyorder")

    async def cancel(self, order_id: int, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        """``order/cancelOrder``. Cancellations go first in the queue and still go out during
        a rate-limit lockout. Raises as :meth:`modify`."""
        body = {"orderId": _check_order_id(order_id), "isAutomated": True}
        data = await self._engine.request("order/cancelorder", body=body, timeout=timeout)
        return parse_command_result(data, "order/cancelorder")

    async def liquidate(
        self,
        account_id: int,
        contract_id: int,
        *,
        admin: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> OrderHandle | None:
        """``order/liquidatePosition``: cancel the account's orders in the contract and close
        its position. Returns the closing order's handle, or ``None`` when the server placed
        none (nothing to close). A lost answer raises :class:`OutcomeUnknown` (there is no
        ``clOrdId`` to look for): read ``engine.views.position(...)`` once live again."""
        body = {
            "accountId": _check_order_id(account_id, "account_id"),
            "contractId": _check_order_id(contract_id, "contract_id"),
            "admin": bool(admin),
            "isAutomated": True,
        }
        data = await self._engine.request("order/liquidateposition", body=body, timeout=timeout)
        result = parse_liquidate_result(data)
        if result.order_id is None:
            return None
        return OrderHandle(self, "order/liquidateposition", None, result.order_id)

    # -- internals -----------------------------------------------------------------------------

    def _entry(
        self,
        account_id: int,
        symbol: str | int,
        action: object,
        qty: object,
        order_type: object,
        price: object,
        stop_price: object,
        time_in_force: object,
        expire_time: object,
        text: object,
        tag: str,
    ) -> dict[str, Any]:
        """The checked body of a new order (placeOrder, or placeOSO's entry)."""
        account_id = _check_order_id(account_id, "account_id")
        if not (
            (isinstance(symbol, str) and symbol.strip())
            or (isinstance(symbol, int) and not isinstance(symbol, bool) and symbol > 0)
        ):
            raise ConfigError(f"symbol must be a contract name or id, got {symbol!r}")
        body: dict[str, Any] = {"accountId": account_id}
        account = self.views.account(account_id)
        if account is not None and account.name:
            body["accountSpec"] = account.name
        body.update(
            clOrdId=tag,
            action=_check_action(action),
            symbol=symbol,
            orderQty=_check_qty(qty),
        )
        body.update(_terms(order_type, price, stop_price, time_in_force, expire_time))
        checked_text = _check_tag(text, "text")
        if checked_text is not None:
            body["text"] = checked_text
        body["isAutomated"] = True
        return body

    async def _submit(
        self,
        endpoint: str,
        body: dict[str, Any],
        tags: list[str],
        timeout: float | None,  # noqa: ASYNC109 - passed on to Engine.request
    ) -> list[OrderHandle]:
        """Send a placement once; one handle per order it creates (entry, then brackets)."""
        try:
            data = await self._engine.request(endpoint, body=body, timeout=timeout)
            if endpoint == "order/placeoso":
                oso = parse_place_oso_result(data)
                ids: list[int | None] = [oso.order_id, oso.oso1_id, oso.oso2_id][: len(tags)]
            else:
                ids = [parse_place_order_result(data, endpoint).order_id]
        except OutcomeUnknown as lost:
            return self._unknown(endpoint, tags, lost)
        except RemoteProtocolError as garbled:
            # An answer we cannot read says nothing about whether the order exists.
            unreadable = OutcomeUnknown(endpoint, MappingProxyType(body))
            unreadable.__cause__ = garbled
            return self._unknown(endpoint, tags, unreadable)
        handles = []
        for tag, order_id in zip(tags, ids, strict=True):
            if order_id is None:  # a bracket id the answer left out: find it by its tag
                handles.append(self._unknown(endpoint, [tag], None)[0])
            else:
                handles.append(OrderHandle(self, endpoint, tag, order_id))
        return handles

    def _unknown(
        self, endpoint: str, tags: list[str], lost: OutcomeUnknown | None
    ) -> list[OrderHandle]:
        marks = Counter(self._syncs)
        cause = lost or OutcomeUnknown(endpoint, None)
        return [OrderHandle(self, endpoint, tag, None, cause, marks) for tag in tags]


def _check_order_id(value: object, name: str = "order_id") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer id, got {excerpt(repr(value), 40)}")
    return value
