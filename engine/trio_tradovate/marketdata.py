"""Market-data values and their parsers, sans-I/O: ``md``, ``chart`` and ``clock`` pushes in,
typed frozen values out.

Theory of operation
-------------------
Tradovate's market-data socket (and the replay socket) pushes three event kinds
(https://api.tradovate.com, "Market Data" and "Market Replay"; example-api-js EX-08 to EX-11):

``md``
    ``{"quotes": [...]}``, ``{"doms": [...]}`` or ``{"histograms": [...]}``: one value per
    contract, each stamped with ``contractId`` and ``timestamp``. A quote's ``entries`` maps a
    kind (``Bid``, ``Offer``, ``Trade``, ``TotalTradeVolume``, ``OpenInterest``,
    ``OpeningPrice``, ``HighPrice``, ``LowPrice``, ``SettlementPrice``, ``EmptyBook``, and any
    kind added later) to ``{price?, size?}``.
``chart``
    ``{"charts": [...]}``, each packet tagged with the subscription ``id`` that
    ``md/getChart`` answered (``historicalId`` or ``realtimeId``): bars
    (``{id, td, bars}``), compact ticks (``{id, s, td, bp, bt, ts, tks}``) or the end of
    history (``{id, eoh: true}``).
``clock``
    the replay clock, whose ``d`` is itself a JSON *string* ``{"t": time, "s": speed}``.

Compact ticks are rebuilt here: a packet gives a base price ``bp`` in ticks, a base time
``bt`` in epoch milliseconds and the tick size ``ts``; each tick gives its price ``p``, bid
``b`` and ask ``a`` relative to ``bp`` (in ticks) and its time ``t`` relative to ``bt``
(example-api-js EX-11). So a tick's price is ``(bp + p) * ts``.

Every parser raises :class:`RemoteProtocolError` for an element it cannot read; the caller
turns one bad element into one malformed-input count and keeps the good ones of the frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

from .errors import RemoteProtocolError, excerpt

__all__ = [
    "ENTRY_KINDS",
    "Bar",
    "ChartPacket",
    "ClockTick",
    "Dom",
    "DomLevel",
    "Histogram",
    "MarketValue",
    "Quote",
    "QuoteEntry",
    "Tick",
    "parse_chart",
    "parse_clock",
    "parse_md",
    "parse_time",
]

#: The ``entries`` kinds of a quote Tradovate documents; others are kept as they come.
ENTRY_KINDS = (
    "Bid",
    "Offer",
    "Trade",
    "TotalTradeVolume",
    "OpenInterest",
    "OpeningPrice",
    "HighPrice",
    "LowPrice",
    "SettlementPrice",
    "EmptyBook",
)


def _bad(what: str, data: Any) -> RemoteProtocolError:
    try:
        shown = orjson.dumps(data).decode()
    except TypeError:  # pragma: no cover - parsed JSON always dumps
        shown = repr(data)
    return RemoteProtocolError(what, excerpt(shown, 200))


def _optional(value: Any, what: str, data: Any) -> float | None:
    return None if value is None else _number(value, what, data)


def _number(value: Any, what: str, data: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} is not a number", data)
    number = float(value)
    if not math.isfinite(number):
        raise _bad(f"{what} is not finite", data)
    return number


def _int(value: Any, what: str, data: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{what} is not an integer", data)
    return value


def parse_time(value: Any) -> datetime:
    """An ISO-8601 time as Tradovate writes it (``2024-03-01T14:30:00.000Z``), aware UTC.

    Raises:
        RemoteProtocolError: not a string, not ISO, or without a time zone.
    """
    if not isinstance(value, str) or len(value) > 64:
        raise _bad("timestamp is not an ISO time", value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad("timestamp is not an ISO time", value) from None
    if moment.tzinfo is None:
        raise _bad("timestamp has no time zone", value)
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """The ISO form Tradovate writes (milliseconds, ``Z``), for ``timeRange`` bounds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- md ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuoteEntry:
    """One ``entries`` value of a quote; either field may be absent."""

    price: float | None = None
    size: float | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    """A quote of one contract: every ``entries`` kind the server sent, by name.

    ``conflated`` is set on delivery when newer quotes replaced older ones the consumer had not
    taken yet (see ``docs/market-data.md``).
    """

    contract_id: int
    timestamp: datetime
    entries: Mapping[str, QuoteEntry]
    conflated: bool = False

    def entry(self, kind: str) -> QuoteEntry | None:
        """The entry of ``kind`` (``"Bid"``, ``"Offer"``, ``"Trade"``, ...), if sent."""
        return self.entries.get(kind)

    @property
    def bid(self) -> QuoteEntry | None:
        return self.entries.get("Bid")

    @property
    def offer(self) -> QuoteEntry | None:
        return self.entries.get("Offer")

    @property
    def trade(self) -> QuoteEntry | None:
        return self.entries.get("Trade")


@dataclass(frozen=True, slots=True)
class DomLevel:
    """One price level of the book."""

    price: float
    size: float


@dataclass(frozen=True, slots=True)
class Dom:
    """The depth of market of one contract: bids best first, offers best first."""

    contract_id: int
    timestamp: datetime
    bids: tuple[DomLevel, ...]
    offers: tuple[DomLevel, ...]
    conflated: bool = False


@dataclass(frozen=True, slots=True)
class Histogram:
    """Traded volume by price of one contract: ``items`` maps an offset from ``base`` (in
    ticks) to volume; ``refresh`` says the items replace earlier ones."""

    contract_id: int
    timestamp: datetime
    trade_date: str | None
    base: float
    items: Mapping[int, float]
    refresh: bool = False
    conflated: bool = False


def _contract(item: Any, what: str) -> tuple[int, datetime]:
    if not isinstance(item, dict):
        raise _bad(f"{what} is not an object", item)
    return _int(item.get("contractId"), f"{what} contractId", item), parse_time(
        item.get("timestamp")
    )


def _quote(item: Any) -> Quote:
    contract_id, moment = _contract(item, "quote")
    raw = item.get("entries")
    if not isinstance(raw, dict):
        raise _bad("quote entries is not an object", item)
    entries: dict[str, QuoteEntry] = {}
    for kind, value in raw.items():
        if not isinstance(value, dict):
            raise _bad(f"quote entry {kind} is not an object", item)
        entries[kind] = QuoteEntry(
            _optional(value.get("price"), f"{kind} price", item),
            _optional(value.get("size"), f"{kind} size", item),
        )
    return Quote(contract_id, moment, MappingProxyType(entries))


def _levels(raw: Any, what: str, item: Any) -> tuple[DomLevel, ...]:
    if not isinstance(raw, list):
        raise _bad(f"dom {what} is not an array", item)
    levels = []
    for level in raw:
        if not isinstance(level, dict):
            raise _bad(f"dom {what} level is not an object", item)
        price = _number(level.get("price"), "dom price", item)
        size = _number(level.get("size"), "dom size", item)
        levels.append(DomLevel(price, size))
    return tuple(levels)


def _dom(item: Any) -> Dom:
    contract_id, moment = _contract(item, "dom")
    return Dom(
        contract_id,
        moment,
        _levels(item.get("bids"), "bids", item),
        _levels(item.get("offers"), "offers", item),
    )


def _trade_date(value: Any) -> str | None:
    if isinstance(value, dict):
        try:
            return f"{int(value['year']):04d}-{int(value['month']):02d}-{int(value['day']):02d}"
        except (KeyError, TypeError, ValueError):
            return None
    if isinstance(value, str | int):
        return str(value)
    return None


def _histogram(item: Any) -> Histogram:
    contract_id, moment = _contract(item, "histogram")
    base = _number(item.get("base"), "histogram base", item)
    raw = item.get("items")
    if not isinstance(raw, dict):
        raise _bad("histogram items is not an object", item)
    items: dict[int, float] = {}
    for offset, volume in raw.items():
        try:
            key = int(offset)
        except ValueError:
            raise _bad("histogram offset is not an integer", item) from None
        value = _number(volume, "histogram volume", item)
        items[key] = value
    return Histogram(
        contract_id,
        moment,
        _trade_date(item.get("tradeDate")),
        base,
        MappingProxyType(items),
        bool(item.get("refresh", False)),
    )


MarketValue = Quote | Dom | Histogram

_MD_KINDS: dict[str, Callable[[Any], MarketValue]] = {
    "quotes": _quote,
    "doms": _dom,
    "histograms": _histogram,
}


def parse_md(data: Any) -> tuple[list[MarketValue], list[RemoteProtocolError]]:
    """The values of one ``md`` event's ``d``, and an error for each element that is bad."""
    if not isinstance(data, dict):
        return [], [_bad("md payload is not an object", data)]
    values: list[MarketValue] = []
    errors: list[RemoteProtocolError] = []
    known = False
    for name, parse in _MD_KINDS.items():
        items = data.get(name)
        if items is None:
            continue
        known = True
        if not isinstance(items, list):
            errors.append(_bad(f"md {name} is not an array", data))
            continue
        for item in items:
            try:
                values.append(parse(item))
            except RemoteProtocolError as exc:
                errors.append(exc)
    if not known:
        errors.append(_bad("md payload has no quotes, doms or histograms", data))
    return values, errors


# --- chart -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a bar chart (minute, daily, volume, range, ... bars alike)."""

    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    up_volume: float = 0.0
    down_volume: float = 0.0
    up_ticks: float = 0.0
    down_ticks: float = 0.0
    bid_volume: float = 0.0
    offer_volume: float = 0.0


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade of a tick chart, rebuilt from the compact form (prices in price units)."""

    id: int
    timestamp: datetime
    price: float
    size: float
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None


@dataclass(frozen=True, slots=True)
class ChartPacket:
    """One element of a ``chart`` event: bars, ticks, or the end-of-history marker."""

    subscription_id: int
    bars: tuple[Bar, ...] = ()
    ticks: tuple[Tick, ...] = ()
    eoh: bool = False
    #: ``td``: the trade date the packet belongs to, as sent.
    trade_date: int | None = None


_BAR_FIELDS = (
    ("upVolume", "up_volume"),
    ("downVolume", "down_volume"),
    ("upTicks", "up_ticks"),
    ("downTicks", "down_ticks"),
    ("bidVolume", "bid_volume"),
    ("offerVolume", "offer_volume"),
)


def _bar(item: Any, packet: Any) -> Bar:
    if not isinstance(item, dict):
        raise _bad("bar is not an object", packet)
    prices = [_number(item.get(name), f"bar {name}", packet) for name in _OHLC]
    extra = {
        attr: _number(item.get(name, 0.0), f"bar {name}", packet) for name, attr in _BAR_FIELDS
    }
    return Bar(parse_time(item.get("timestamp")), *prices, **extra)


_OHLC = ("open", "high", "low", "close")


def _price(base: float, offset: Any, size: float, packet: Any) -> float | None:
    if offset is None:
        return None
    relative = _number(offset, "tick offset", packet)
    return round((base + relative) * size, 10)


def _ticks(packet: dict[str, Any]) -> tuple[Tick, ...]:
    base = _number(packet.get("bp"), "tick chart bp", packet)
    base_time = _int(packet.get("bt"), "tick chart bt", packet)
    size = _number(packet.get("ts"), "tick chart ts", packet)
    if size <= 0:
        raise _bad("tick chart ts is not positive", packet)
    raw = packet.get("tks")
    if not isinstance(raw, list):
        raise _bad("tick chart tks is not an array", packet)
    ticks = []
    for tick in raw:
        if not isinstance(tick, dict):
            raise _bad("tick is not an object", packet)
        offset = _int(tick.get("t"), "tick t", packet)
        price = _price(base, tick.get("p"), size, packet)
        if price is None:
            raise _bad("tick has no price", packet)
        try:
            moment = datetime.fromtimestamp((base_time + offset) / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise _bad("tick time out of range", packet) from None
        ticks.append(
            Tick(
                _int(tick.get("id"), "tick id", packet),
                moment,
                price,
                _number(tick.get("s"), "tick size", packet) or 0.0,
                _price(base, tick.get("b"), size, packet),
                _price(base, tick.get("a"), size, packet),
                _optional(tick.get("bs"), "tick bid size", packet),
                _optional(tick.get("as"), "tick ask size", packet),
            )
        )
    return tuple(ticks)


def _packet(item: Any) -> ChartPacket:
    if not isinstance(item, dict):
        raise _bad("chart packet is not an object", item)
    subscription = _int(item.get("id"), "chart id", item)
    td = item.get("td")
    trade_date = td if isinstance(td, int) and not isinstance(td, bool) else None
    if item.get("eoh") is True:
        return ChartPacket(subscription, eoh=True, trade_date=trade_date)
    if "tks" in item:
        return ChartPacket(subscription, ticks=_ticks(item), trade_date=trade_date)
    bars = item.get("bars")
    if not isinstance(bars, list):
        raise _bad("chart packet has no bars, tks or eoh", item)
    return ChartPacket(
        subscription, bars=tuple(_bar(bar, item) for bar in bars), trade_date=trade_date
    )


def parse_chart(data: Any) -> tuple[list[ChartPacket], list[RemoteProtocolError]]:
    """The packets of one ``chart`` event's ``d``, and an error for each bad element."""
    if not isinstance(data, dict) or not isinstance(data.get("charts"), list):
        return [], [_bad("chart payload has no charts array", data)]
    packets: list[ChartPacket] = []
    errors: list[RemoteProtocolError] = []
    for item in data["charts"]:
        try:
            packets.append(_packet(item))
        except RemoteProtocolError as exc:
            errors.append(exc)
    return packets, errors


# --- clock -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClockTick:
    """The replay clock: the replayed time and the speed (0: throttled by the server)."""

    time: datetime
    speed: float
    raw: str = field(default="", repr=False)

    @property
    def throttled(self) -> bool:
        """Speed 0: the server slowed the replay; ``replay/changeSpeed`` resets it."""
        return self.speed == 0


def parse_clock(data: Any) -> ClockTick:
    """A ``clock`` event's ``d``: a JSON string (as documented) or, leniently, an object.

    Raises:
        RemoteProtocolError: neither holds ``t`` and ``s``.
    """
    raw = data if isinstance(data, str) else ""
    if isinstance(data, str):
        if len(data) > 4096:
            raise _bad("clock payload too long", data[:100])
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _bad("clock payload is not JSON", raw) from None
    if not isinstance(data, dict):
        raise _bad("clock payload is not an object", data)
    speed = _number(data.get("s"), "clock speed", data)
    return ClockTick(parse_time(data.get("t")), speed, raw)
