"""Typed, read-only views of the entities the server sends (docs/protocol.md §6).

The :class:`~trio_tradovate.store.EntityStore` keeps exactly what the server said, as JSON
mappings, because that is what must be diffed and replayed faithfully. Application code wants
attributes with types instead of ``entity["ordStatus"]`` lookups that fail at run time on a
typo. The classes here are that second layer: each is a frozen dataclass built by
:meth:`EntityView.from_raw`, which keeps the original mapping in ``raw`` for every field we
do not model.

Design choices, and why:

* **Server data never raises.** Tradovate documents almost every field as optional and has
  changed schemas between releases, so a missing or wrongly typed field becomes ``None``
  instead of an exception in the middle of an event handler. ``bool`` is not accepted as an
  ``int`` (JSON ``true`` is not a quantity); an ``int`` is accepted where a float is expected
  (JSON does not distinguish ``1`` from ``1.0``).
* **Floats, not ``Decimal``.** The wire format is JSON numbers, which the JSON decoder already
  turned into ``float`` before we see them; converting to ``Decimal`` afterwards would only
  dress the same binary value in false precision. Round with the product's ``tickSize`` (or
  use ``Decimal(str(x))``) where exact arithmetic matters.
* **One declaration per field.** Each class lists its attributes once, with their types; the
  parser derives the JSON key (camelCase of the attribute, or ``_key("...")`` where
  Tradovate's spelling is irregular, e.g. ``realizedPnL``) and the converter (from the
  annotation) from that declaration, so the type a reader sees is the type the parser checks.
* **Timestamps are aware UTC datetimes**; ``tradeDate`` objects (``{year, month, day}``)
  become :class:`datetime.date`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, ClassVar, Self

__all__ = [
    "VIEW_TYPES",
    "WORKING_ORD_STATUSES",
    "Account",
    "AccountRiskStatus",
    "CashBalance",
    "Command",
    "CommandReport",
    "Contract",
    "EntityView",
    "ExecutionReport",
    "Fill",
    "FillPair",
    "MarginSnapshot",
    "Order",
    "OrderVersion",
    "Position",
    "Product",
]

#: ``ordStatus`` values of an order that is still live at the exchange (or about to be).
WORKING_ORD_STATUSES: frozenset[str] = frozenset(
    {"Working", "PendingNew", "PendingReplace", "PendingCancel", "Suspended"}
)


# -- converters: JSON value -> typed value or None, never raising ---------------------------


def _to_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _to_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _to_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_datetime(value: object) -> datetime | None:
    """ISO-8601 (Tradovate sends ``2026-03-02T14:30:00.123Z``); naive values are taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _to_date(value: object) -> date | None:
    """Tradovate's ``{year, month, day}`` object (an ISO date string is accepted too)."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping):
        return None
    parts = [_to_int(value.get(k)) for k in ("year", "month", "day")]
    if parts[0] is None or parts[1] is None or parts[2] is None:
        return None
    try:
        return date(parts[0], parts[1], parts[2])
    except ValueError:
        return None


def _to_id(value: object) -> int:
    """The id, coerced the way the store keys it (``int(raw["id"])``); ``-1`` if unusable.

    Mappings taken from the store always have one, so ``-1`` only shows up for hand-made data.
    """
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | str):
        try:
            return int(value)
        except (ValueError, OverflowError):
            return -1
    return -1


#: The converter for each annotated value type (the non-``None`` member of ``X | None``).
_CONVERTERS: dict[object, Callable[[object], object]] = {
    int: _to_int,
    float: _to_float,
    str: _to_str,
    bool: _to_bool,
    datetime: _to_datetime,
    date: _to_date,
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _key(json_key: str) -> Any:
    """A field whose JSON key is not the camelCase of its attribute name."""
    return field(default=None, metadata={"key": json_key})


_Spec = tuple[tuple[str, str, Callable[[object], object]], ...]


_SPECS: dict[type[EntityView], _Spec] = {}


def _spec_of(cls: type[EntityView]) -> _Spec:
    """``(attribute, json key, converter)`` for every modelled field of ``cls``, derived once.

    Raises ``TypeError`` for an annotation without a converter: that is a programming error
    in this module, caught at import time because every class is checked below.
    """
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    spec = []
    for f in dataclasses.fields(cls):
        if f.name in ("id", "raw"):
            continue
        members = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
        if len(members) != 1 or members[0] not in _CONVERTERS:
            raise TypeError(f"{cls.__name__}.{f.name}: no converter for {hints[f.name]!r}")
        spec.append((f.name, f.metadata.get("key", _camel(f.name)), _CONVERTERS[members[0]]))
    _SPECS[cls] = tuple(spec)
    return _SPECS[cls]


@dataclass(frozen=True, slots=True)
class EntityView:
    """Common base: the entity's ``id`` and the server's mapping it was built from.

    ``raw`` is excluded from ``repr`` (it repeats every field) and from the hash (mappings are
    not hashable); it still takes part in equality, so two views are equal only when the
    server sent the same thing.
    """

    #: The singular ``entityType`` string this class views (``"cashBalance"``, ...).
    ENTITY_TYPE: ClassVar[str] = ""

    id: int
    raw: Mapping[str, Any] = field(repr=False, hash=False)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> Self:
        """Build the view from the server's JSON mapping; never raises on its contents.

        The mapping is kept as ``raw``: the store's values (already read-only proxies) as they
        are, anything else as a read-only copy, so a view never changes under its reader.
        """
        kept = raw if isinstance(raw, MappingProxyType) else MappingProxyType(dict(raw))
        values: dict[str, Any] = {
            attr: convert(kept.get(key)) for attr, key, convert in _spec_of(cls)
        }
        return cls(_to_id(kept.get("id")), kept, **values)


@dataclass(frozen=True, slots=True)
class Account(EntityView):
    """A trading account (``account``)."""

    ENTITY_TYPE: ClassVar[str] = "account"

    name: str | None = None
    user_id: int | None = None
    account_type: str | None = None
    active: bool | None = None
    clearing_house_id: int | None = None
    risk_category_id: int | None = None
    auto_liq_profile_id: int | None = None
    margin_account_type: str | None = None
    legal_status: str | None = None
    archived: bool | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class CashBalance(EntityView):
    """An account's balance in one currency for one trade date (``cashBalance``)."""

    ENTITY_TYPE: ClassVar[str] = "cashBalance"

    account_id: int | None = None
    timestamp: datetime | None = None
    trade_date: date | None = None
    currency_id: int | None = None
    amount: float | None = None
    realized_pnl: float | None = _key("realizedPnL")
    week_realized_pnl: float | None = _key("weekRealizedPnL")
    amount_sod: float | None = _key("amountSOD")


@dataclass(frozen=True, slots=True)
class Position(EntityView):
    """An account's position in one contract (``position``)."""

    ENTITY_TYPE: ClassVar[str] = "position"

    account_id: int | None = None
    contract_id: int | None = None
    timestamp: datetime | None = None
    trade_date: date | None = None
    net_pos: int | None = None
    net_price: float | None = None
    bought: int | None = None
    bought_value: float | None = None
    sold: int | None = None
    sold_value: float | None = None
    prev_pos: int | None = None
    prev_price: float | None = None

    @property
    def is_open(self) -> bool:
        """Whether the position holds contracts (a flat or unknown ``netPos`` is not open)."""
        return self.net_pos is not None and self.net_pos != 0


@dataclass(frozen=True, slots=True)
class Order(EntityView):
    """An order's identity and status (``order``); quantities and prices live in its
    :class:`OrderVersion` entities."""

    ENTITY_TYPE: ClassVar[str] = "order"

    account_id: int | None = None
    contract_id: int | None = None
    spread_definition_id: int | None = None
    timestamp: datetime | None = None
    action: str | None = None
    ord_status: str | None = None
    execution_provider_id: int | None = None
    oco_id: int | None = None
    parent_id: int | None = None
    linked_id: int | None = None
    admin: bool | None = None
    archived: bool | None = None
    external: bool | None = None

    @property
    def is_working(self) -> bool:
        """Whether ``ordStatus`` is one of :data:`WORKING_ORD_STATUSES`."""
        return self.ord_status in WORKING_ORD_STATUSES


@dataclass(frozen=True, slots=True)
class OrderVersion(EntityView):
    """One version of an order's terms (``orderVersion``); a modify creates a new one."""

    ENTITY_TYPE: ClassVar[str] = "orderVersion"

    order_id: int | None = None
    order_qty: int | None = None
    order_type: str | None = None
    price: float | None = None
    stop_price: float | None = None
    max_show: int | None = None
    peg_difference: float | None = None
    time_in_force: str | None = None
    expire_time: datetime | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Fill(EntityView):
    """One execution (``fill``). It has no ``accountId``: the account is its order's."""

    ENTITY_TYPE: ClassVar[str] = "fill"

    order_id: int | None = None
    contract_id: int | None = None
    timestamp: datetime | None = None
    trade_date: date | None = None
    action: str | None = None
    qty: int | None = None
    price: float | None = None
    active: bool | None = None
    finally_paired: int | None = None


@dataclass(frozen=True, slots=True)
class FillPair(EntityView):
    """A buy fill matched with a sell fill within a position (``fillPair``)."""

    ENTITY_TYPE: ClassVar[str] = "fillPair"

    position_id: int | None = None
    buy_fill_id: int | None = None
    sell_fill_id: int | None = None
    qty: int | None = None
    buy_price: float | None = None
    sell_price: float | None = None
    active: bool | None = None


@dataclass(frozen=True, slots=True)
class ExecutionReport(EntityView):
    """The exchange's report on an order (``executionReport``)."""

    ENTITY_TYPE: ClassVar[str] = "executionReport"

    command_id: int | None = None
    name: str | None = None
    account_id: int | None = None
    contract_id: int | None = None
    timestamp: datetime | None = None
    trade_date: date | None = None
    order_id: int | None = None
    exec_type: str | None = None
    exec_ref_id: int | None = None
    ord_status: str | None = None
    action: str | None = None
    cum_qty: int | None = None
    avg_px: float | None = None
    last_qty: int | None = None
    last_px: float | None = None
    reject_reason: str | None = None
    text: str | None = None
    exchange_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Command(EntityView):
    """A request sent on an order's behalf: new, modify, cancel (``command``)."""

    ENTITY_TYPE: ClassVar[str] = "command"

    order_id: int | None = None
    timestamp: datetime | None = None
    cl_ord_id: str | None = None
    command_type: str | None = None
    command_status: str | None = None
    sender_id: int | None = None
    user_session_id: int | None = None
    activation_time: datetime | None = None
    custom_tag50: str | None = None
    is_automated: bool | None = None


@dataclass(frozen=True, slots=True)
class CommandReport(EntityView):
    """The outcome of a :class:`Command` (``commandReport``)."""

    ENTITY_TYPE: ClassVar[str] = "commandReport"

    command_id: int | None = None
    timestamp: datetime | None = None
    command_status: str | None = None
    reject_reason: str | None = None
    text: str | None = None
    ord_status: str | None = None


@dataclass(frozen=True, slots=True)
class Contract(EntityView):
    """A tradable contract such as ``ESZ6`` (``contract``)."""

    ENTITY_TYPE: ClassVar[str] = "contract"

    name: str | None = None
    contract_maturity_id: int | None = None
    status: str | None = None
    provider_tick_size: float | None = None


@dataclass(frozen=True, slots=True)
class Product(EntityView):
    """The product a contract belongs to through its maturity, e.g. ``ES`` (``product``)."""

    ENTITY_TYPE: ClassVar[str] = "product"

    name: str | None = None
    currency_id: int | None = None
    product_type: str | None = None
    description: str | None = None
    exchange_id: int | None = None
    contract_group_id: int | None = None
    risk_discount_contract_group_id: int | None = None
    status: str | None = None
    months: str | None = None
    is_secured: bool | None = None
    value_per_point: float | None = None
    price_format_type: str | None = None
    price_format: int | None = None
    tick_size: float | None = None


@dataclass(frozen=True, slots=True)
class MarginSnapshot(EntityView):
    """An account's margin figures (``marginSnapshot``); its ``id`` is the account's id."""

    ENTITY_TYPE: ClassVar[str] = "marginSnapshot"

    timestamp: datetime | None = None
    risk_time_period_id: int | None = None
    initial_margin: float | None = None
    maintenance_margin: float | None = None
    auto_liq_level: float | None = None
    liq_only_level: float | None = None
    total_used_margin: float | None = None
    full_initial_margin: float | None = None
    position_margin: float | None = None


@dataclass(frozen=True, slots=True)
class AccountRiskStatus(EntityView):
    """An account's risk state (``accountRiskStatus``); its ``id`` is the account's id.

    ``liquidate_only`` is a timestamp in Tradovate's schema (when liquidate-only mode was set),
    not a flag.
    """

    ENTITY_TYPE: ClassVar[str] = "accountRiskStatus"

    admin_action: str | None = None
    admin_timestamp: datetime | None = None
    liquidate_only: datetime | None = None
    user_triggered_liq_only: bool | None = None


#: entityType string -> view class, for every type this module models.
VIEW_TYPES: Mapping[str, type[EntityView]] = MappingProxyType(
    {
        cls.ENTITY_TYPE: cls
        for cls in (
            Account,
            CashBalance,
            Position,
            Order,
            OrderVersion,
            Fill,
            FillPair,
            ExecutionReport,
            Command,
            CommandReport,
            Contract,
            Product,
            MarginSnapshot,
            AccountRiskStatus,
        )
    }
)

for _cls in VIEW_TYPES.values():  # fail at import, not on the first event, if a spec is wrong
    _spec_of(_cls)
del _cls
