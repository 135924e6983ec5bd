"""The subscription registry of a market-data socket, sans-I/O: what the application wants,
what this connection has asked the server for, and what reaches each consumer.

Theory of operation
-------------------
The registry lives as long as the engine, across every connection (*generation*) of the
market-data socket; it imports nothing of trio and takes ``now`` as an argument, so every
property is tested synchronously over generated scripts (``tests/engine/test_subscriptions.py``).

**Wanted set.** A subscription is keyed by :class:`SubKey` (kind, symbol or contract id, and
for charts the whole request). :meth:`SubscriptionRegistry.acquire` counts a consumer and
:meth:`~SubscriptionRegistry.release` uncounts one: two consumers of one key share one server
subscription, released when the last one leaves. Acquiring is idempotent per consumer: the
registry never sends a second subscribe for a key it has on this connection.

**Server set.** Per connection, each key is ``absent``, ``subscribing`` (request out),
``active`` or ``unsubscribing``. :meth:`~SubscriptionRegistry.begin` starts a connection:
every key is ``absent`` again (the server forgot everything with the old socket) and keys
nobody wants any more are forgotten, so a subscription cancelled while the socket was down is
never brought back. :meth:`~SubscriptionRegistry.plan` is a reconciler: it compares both sets
and names the requests to send now (subscribe what is wanted and absent, unsubscribe what is
active and unwanted), paced by the caller's rate budget. Each key is asked for at most once
per connection unless the application releases and re-acquires it, or a stale subscription
is re-subscribed (once per episode, see below). The *restore set* is the wanted set at
:meth:`~SubscriptionRegistry.begin`; :attr:`~SubscriptionRegistry.restored` turns true once
every key of it has its answer (or was released).

**Charts resume.** A chart remembers the last bar (its timestamp) or tick (its id) it
delivered. After a reconnect it is asked again from that point (``timeRange`` becomes
``asFarAsTimestamp`` of the last element), and what comes back is filtered: elements older
than the last delivered are dropped as duplicates; the last one itself proves the new stream
overlaps the old one; when the first newer element arrives and no overlap was seen, the
update is marked ``gap=True``: the consumer knows bars or ticks may be missing there.

**Staleness.** Each key remembers when its last value came. A key that has been active for
``stale_after`` seconds without a value is *stale*; :meth:`~SubscriptionRegistry.stale_keys`
names it once, the caller re-subscribes it once (unsubscribe, subscribe), and it stays stale
without further requests until a value comes: never a reconnect, never a storm.

**Observable discarding.** Tradovate drops out-of-date data for slow clients
(community.tradovate.com/t/understanding-how-tradovate-may-throttle-market-data/2124). What
the registry can see of that is counted: jumps in tick ids (``tick_id_gaps``), bars whose
timestamps jump past the chart's bar size (``bar_time_gaps``), duplicates dropped after a
resume, values for contracts nobody subscribed (``unrouted``).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .errors import ConfigError, excerpt
from .marketdata import (
    Bar,
    ChartPacket,
    Dom,
    Histogram,
    MarketValue,
    Quote,
    Tick,
    format_time,
)
from .protocol import Response
from .scheduler import PENALTY_MARGIN, server_ticket, server_wait

#: The longest a key subscribed by name waits for another of its kind to learn its contract
#: id (seconds; see :meth:`SubscriptionRegistry._binding`).
BIND_WAIT = 5.0


class Kind(enum.StrEnum):
    """What a subscription streams."""

    QUOTE = "quote"
    DOM = "dom"
    HISTOGRAM = "histogram"
    CHART = "chart"


#: The request that starts each kind (P-MD; the server is case-insensitive, these are the
#: documented spellings).
SUBSCRIBE: Mapping[Kind, str] = {
    Kind.QUOTE: "md/subscribeQuote",
    Kind.DOM: "md/subscribeDOM",
    Kind.HISTOGRAM: "md/subscribeHistogram",
    Kind.CHART: "md/getChart",
}
#: The request that ends each kind.
UNSUBSCRIBE: Mapping[Kind, str] = {
    Kind.QUOTE: "md/unsubscribeQuote",
    Kind.DOM: "md/unsubscribeDOM",
    Kind.HISTOGRAM: "md/unsubscribeHistogram",
    Kind.CHART: "md/cancelChart",
}

#: ``chartDescription.underlyingType`` values Tradovate documents.
UNDERLYING_TYPES = ("Tick", "DailyBar", "MinuteBar", "Custom", "DOM")
#: ``chartDescription.elementSizeUnit`` values Tradovate documents.
ELEMENT_SIZE_UNITS = (
    "Volume",
    "Range",
    "UnderlyingUnits",
    "Renko",
    "MomentumRange",
    "PointAndFigure",
    "OFARange",
)
#: ``timeRange`` fields Tradovate documents.
TIME_RANGE_FIELDS = ("closestTimestamp", "closestTickId", "asFarAsTimestamp", "asMuchAsElements")

Symbol = str | int


def check_symbol(symbol: object) -> Symbol:
    """A symbol name (``"ESZ6"``) or a contract id, or a :class:`ConfigError` saying what
    to pass."""
    if isinstance(symbol, bool) or not isinstance(symbol, str | int):
        raise ConfigError(
            f"symbol must be a contract name like 'ESZ6' or a contract id, got {symbol!r}"
        )
    if isinstance(symbol, str) and not symbol.strip():
        raise ConfigError("symbol is empty: give a contract name like 'ESZ6' or a contract id")
    if isinstance(symbol, int) and symbol <= 0:
        raise ConfigError(f"a contract id is a positive integer, got {symbol}")
    return symbol.strip() if isinstance(symbol, str) else symbol


@dataclass(frozen=True)
class ChartSpec:
    """An ``md/getChart`` request: ``chartDescription`` and ``timeRange`` (P-MD).

    Tick charts need ``element_size=1`` and ``element_size_unit="UnderlyingUnits"``. The time
    range is given by any documented combination of ``closest_timestamp`` (the newest point,
    default now), ``closest_tick_id``, ``as_far_as_timestamp`` (the oldest point) and
    ``as_much_as_elements`` (a count).
    """

    underlying_type: str = "MinuteBar"
    element_size: int = 1
    element_size_unit: str = "UnderlyingUnits"
    with_histogram: bool = False
    closest_timestamp: datetime | None = None
    closest_tick_id: int | None = None
    as_far_as_timestamp: datetime | None = None
    as_much_as_elements: int | None = None

    def __post_init__(self) -> None:
        if self.underlying_type not in UNDERLYING_TYPES:
            raise ConfigError(
                f"underlying_type must be one of {UNDERLYING_TYPES}, got {self.underlying_type!r}"
            )
        if self.element_size_unit not in ELEMENT_SIZE_UNITS:
            raise ConfigError(
                f"element_size_unit must be one of {ELEMENT_SIZE_UNITS}, "
                f"got {self.element_size_unit!r}"
            )
        if isinstance(self.element_size, bool) or not (
            isinstance(self.element_size, int) and self.element_size >= 1
        ):
            raise ConfigError(f"element_size must be an int >= 1, got {self.element_size!r}")
        if self.underlying_type == "Tick" and self.element_size != 1:
            raise ConfigError("a Tick chart needs element_size=1 (P-MD)")
        for name in ("closest_timestamp", "as_far_as_timestamp"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ConfigError(f"{name} must be a timezone-aware datetime")
        if self.as_much_as_elements is not None and self.as_much_as_elements < 1:
            raise ConfigError("as_much_as_elements must be >= 1")
        if all(
            getattr(self, name) is None
            for name in (
                "closest_timestamp",
                "closest_tick_id",
                "as_far_as_timestamp",
                "as_much_as_elements",
            )
        ):
            raise ConfigError(
                "a chart needs a time range: as_much_as_elements=N, as_far_as_timestamp=..., "
                "closest_timestamp=... or closest_tick_id=..."
            )

    @property
    def ticks(self) -> bool:
        """Whether this chart streams ticks (compact form) rather than bars."""
        return self.underlying_type == "Tick"

    def bar_seconds(self) -> float | None:
        """The time one bar spans, where the description says (minute and daily bars)."""
        if self.underlying_type == "MinuteBar":
            return 60.0 * self.element_size
        if self.underlying_type == "DailyBar":
            return 86400.0 * self.element_size
        return None

    def description(self) -> dict[str, Any]:
        """``chartDescription`` as sent."""
        return {
            "underlyingType": self.underlying_type,
            "elementSize": self.element_size,
            "elementSizeUnit": self.element_size_unit,
            "withHistogram": self.with_histogram,
        }

    def time_range(self) -> dict[str, Any]:
        """``timeRange`` as sent (only the fields given)."""
        out: dict[str, Any] = {}
        if self.closest_timestamp is not None:
            out["closestTimestamp"] = format_time(self.closest_timestamp)
        if self.closest_tick_id is not None:
            out["closestTickId"] = self.closest_tick_id
        if self.as_far_as_timestamp is not None:
            out["asFarAsTimestamp"] = format_time(self.as_far_as_timestamp)
        if self.as_much_as_elements is not None:
            out["asMuchAsElements"] = self.as_much_as_elements
        return out

    def resumed_from(self, moment: datetime) -> ChartSpec:
        """The same chart asked from ``moment`` on (the last element delivered), up to now."""
        return replace(
            self,
            closest_timestamp=None,
            closest_tick_id=None,
            as_far_as_timestamp=moment,
            as_much_as_elements=None,
        )


@dataclass(frozen=True)
class SubKey:
    """What identifies one server subscription: consumers of equal keys share it."""

    kind: Kind
    symbol: Symbol
    chart: ChartSpec | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.symbol}"


class ServerState(enum.Enum):
    """Where one key stands with the server on the current connection."""

    ABSENT = "absent"
    SUBSCRIBING = "subscribing"
    ACTIVE = "active"
    UNSUBSCRIBING = "unsubscribing"


@dataclass(frozen=True, slots=True)
class EndOfHistory:
    """The chart's history is complete (``eoh``); realtime elements follow."""


ChartElement = Bar | Tick | EndOfHistory
Value = MarketValue | ChartElement


@dataclass(frozen=True, slots=True)
class Update:
    """One value for the consumers of ``key``; ``gap`` marks a resumed chart stream that could
    not be proven continuous (elements may be missing right before this one)."""

    key: SubKey
    value: Value
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A request :meth:`SubscriptionRegistry.plan` wants sent now."""

    key: SubKey
    endpoint: str
    body: Mapping[str, Any]
    subscribe: bool


@dataclass(frozen=True, slots=True)
class Failure:
    """The server refused a subscription of ``key``; its consumers are told once.

    With ``lockout`` (``"429"`` or ``"captcha"``) it was no refusal of the key but Tradovate's
    lockout (P-RL): the consumers are not failed, the key is asked again when the lockout,
    which the caller starts, is over.
    """

    key: SubKey
    error: str
    lockout: str | None = None


@dataclass
class _Sub:
    """One key's record (engine lifetime); ``server`` and ids are per connection."""

    key: SubKey
    order: int
    refs: int = 0
    server: ServerState = ServerState.ABSENT
    #: Needs one more unsubscribe then subscribe on this connection (staleness).
    resubscribe: bool = False
    #: Waiting for this time before asking again (a p-ticket), with the ticket to present.
    retry_at: float = 0.0
    ticket: str | None = None
    #: Refused by the server on this connection: not asked again until a new one.
    failed: str | None = None
    contract_id: int | None = None
    #: Chart ids of this connection.
    chart_ids: tuple[int, ...] = ()
    realtime_id: int | None = None
    #: Last chart element delivered (any connection).
    last_bar_at: datetime | None = None
    last_bar: Bar | None = None
    last_tick_id: int | None = None
    last_tick_at: datetime | None = None
    eoh_delivered: bool = False
    #: A resumed chart has not yet shown the element it was resumed from.
    resuming: bool = False
    #: When this key became active, and when its last value came (staleness).
    active_since: float | None = None
    last_value_at: float | None = None
    stale: bool = False
    stale_episode_resubscribed: bool = False
    values: int = 0


@dataclass(frozen=True)
class StaleConfig:
    """Seconds without a value, per kind, after which an active subscription is stale
    (``None``: never). Charts and histograms are quiet when the market is: off by default."""

    quote: float | None = 60.0
    dom: float | None = 60.0
    histogram: float | None = None
    chart: float | None = None

    def __post_init__(self) -> None:
        for name in ("quote", "dom", "histogram", "chart"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ConfigError(f"StaleConfig.{name} must be a positive number or None")

    def after(self, kind: Kind) -> float | None:
        value: float | None = getattr(self, kind.value)
        return value


@dataclass
class SubscriptionRegistry:
    """See the module docstring."""

    stale: StaleConfig = field(default_factory=StaleConfig)
    counters: Counter[str] = field(default_factory=Counter)
    _subs: dict[SubKey, _Sub] = field(default_factory=dict)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _generation: int = 0
    #: request id -> (key, subscribe?) on this connection.
    _requests: dict[int, tuple[SubKey, bool]] = field(default_factory=dict)
    _chart_ids: dict[int, SubKey] = field(default_factory=dict)
    _by_contract: dict[tuple[Kind, int], list[SubKey]] = field(default_factory=dict)
    _restore: set[SubKey] = field(default_factory=set)

    # ------------------------------------------------------------------ what the app wants

    def acquire(self, key: SubKey) -> bool:
        """One more consumer of ``key``; ``True`` when it is the first."""
        sub = self._subs.get(key)
        if sub is None:
            sub = self._subs[key] = _Sub(key, next(self._order))
            if isinstance(key.symbol, int):
                self.bind(key, key.symbol)
        sub.refs += 1
        if sub.refs == 1:
            sub.failed = None
        return sub.refs == 1

    def release(self, key: SubKey) -> bool:
        """One consumer of ``key`` fewer; ``True`` when it was the last (the server
        subscription is released by the next :meth:`plan`)."""
        sub = self._subs.get(key)
        if sub is None or sub.refs == 0:
            return False
        sub.refs -= 1
        if sub.refs == 0:
            self._restore.discard(key)
            if sub.server is ServerState.ABSENT:
                self._forget(sub)
            return True
        return False

    def bind(self, key: SubKey, contract_id: int) -> None:
        """``key``'s symbol is contract ``contract_id`` (from a lookup or an answer)."""
        sub = self._subs.get(key)
        if sub is not None and sub.contract_id is None:
            sub.contract_id = contract_id
            self._by_contract.setdefault((key.kind, contract_id), []).append(key)

    def _forget(self, sub: _Sub) -> None:
        del self._subs[sub.key]
        if sub.contract_id is None:
            return
        contract = (sub.key.kind, sub.contract_id)
        keys = self._by_contract.get(contract, [])
        if sub.key in keys:
            keys.remove(sub.key)
        if not keys:
            self._by_contract.pop(contract, None)

    # ------------------------------------------------------------------ read-only view

    def wanted(self) -> list[SubKey]:
        """Keys with at least one consumer, oldest first."""
        return [s.key for s in sorted(self._subs.values(), key=_by_order) if s.refs > 0]

    def refs(self, key: SubKey) -> int:
        sub = self._subs.get(key)
        return 0 if sub is None else sub.refs

    def server_state(self, key: SubKey) -> ServerState:
        sub = self._subs.get(key)
        return ServerState.ABSENT if sub is None else sub.server

    def is_stale(self, key: SubKey) -> bool:
        sub = self._subs.get(key)
        return sub is not None and sub.stale

    def last_value_at(self, key: SubKey) -> float | None:
        sub = self._subs.get(key)
        return None if sub is None else sub.last_value_at

    @property
    def restored(self) -> bool:
        """Every key wanted at :meth:`begin` has its answer (or was released)."""
        return not self._restore

    @property
    def pending_restore(self) -> int:
        return len(self._restore)

    # ------------------------------------------------------------------ one connection

    def begin(self, generation: int) -> int:
        """A new connection: the server holds nothing; return how many keys to restore."""
        self._generation = generation
        self._requests.clear()
        self._chart_ids.clear()
        for sub in list(self._subs.values()):
            sub.server = ServerState.ABSENT
            sub.resubscribe = False
            sub.failed = None
            sub.chart_ids = ()
            sub.realtime_id = None
            sub.active_since = None
            sub.retry_at = 0.0
            if sub.refs == 0:
                self._forget(sub)
            elif sub.key.kind is Kind.CHART and (
                sub.last_bar_at is not None or sub.last_tick_at is not None
            ):
                sub.resuming = True
        self._restore = {s.key for s in self._subs.values() if s.refs > 0}
        return len(self._restore)

    def plan(self, now: float, pace: Callable[[str, float], float]) -> tuple[list[Outgoing], float]:
        """The requests to send now, and when to ask again (``inf``: when something changes).

        ``pace(endpoint, now)`` is the rate budget: the seconds until ``endpoint`` may go; a
        request it lets go (0) is counted by it. A paced request waits, and so does every later
        one: requests go out in the order keys were acquired.
        """
        out: list[Outgoing] = []
        waits: list[float] = []
        for sub in sorted(self._subs.values(), key=_by_order):
            wanted = sub.refs > 0
            if sub.server is ServerState.ABSENT and not wanted:
                self._forget(sub)
                continue
            if sub.retry_at > now:
                continue
            request: Outgoing | None = None
            if sub.server is ServerState.ABSENT and wanted and sub.failed is None:
                binding = self._binding(sub, now)
                if binding > now:
                    waits.append(binding)
                    continue
                request = self._subscribe(sub)
            elif sub.server is ServerState.ACTIVE and (not wanted or sub.resubscribe):
                request = self._unsubscribe(sub)
            if request is None:
                continue
            delay = pace(request.endpoint, now)
            if delay > 0:
                return out, now + delay
            out.append(request)
        waits += [s.retry_at for s in self._subs.values() if s.retry_at > now]
        return out, min(waits, default=math.inf)

    def _binding(self, sub: _Sub, now: float) -> float:
        """Until when ``sub`` waits for another subscription's contract id to be learnt.

        Values carry a ``contractId``, never the symbol name, and the subscribe answer carries
        neither (P-MD). So a key subscribed by name learns its contract id from its first
        value; while one key of a kind is learning, no other key of that kind is subscribed
        by name (at most :data:`BIND_WAIT` seconds), or the first value could not be told
        apart. A key that learnt its id once (any connection) never waits again.
        """
        if sub.contract_id is not None or sub.key.kind is Kind.CHART:
            return 0.0
        until = 0.0
        for other in self._subs.values():
            if other is sub or other.key.kind is not sub.key.kind or other.contract_id is not None:
                continue
            if other.server is ServerState.SUBSCRIBING:
                return math.inf  # its answer will wake the plan
            if other.server is ServerState.ACTIVE and other.active_since is not None:
                until = max(until, other.active_since + BIND_WAIT)
        return until if until > now else 0.0

    def _subscribe(self, sub: _Sub) -> Outgoing:
        key = sub.key
        body: dict[str, Any] = {"symbol": key.symbol}
        if key.chart is not None:
            spec = key.chart
            resume = sub.last_tick_at if spec.ticks else sub.last_bar_at
            if sub.resuming and resume is not None:
                spec = spec.resumed_from(resume)
            body["chartDescription"] = spec.description()
            body["timeRange"] = spec.time_range()
        if sub.ticket is not None:
            body["p-ticket"] = sub.ticket
        return Outgoing(key, SUBSCRIBE[key.kind], body, True)

    def _unsubscribe(self, sub: _Sub) -> Outgoing | None:
        key = sub.key
        if key.kind is Kind.CHART:
            if sub.realtime_id is None:
                return None
            body: dict[str, Any] = {"subscriptionId": sub.realtime_id}
        else:
            body = {"symbol": key.symbol}
        return Outgoing(key, UNSUBSCRIBE[key.kind], body, False)

    def sent(self, request: Outgoing, request_id: int, now: float) -> None:
        """``request`` went out with ``request_id``."""
        sub = self._subs[request.key]
        sub.server = ServerState.SUBSCRIBING if request.subscribe else ServerState.UNSUBSCRIBING
        sub.ticket = None
        self._requests[request_id] = (request.key, request.subscribe)
        self.counters["subscribe_requests" if request.subscribe else "unsubscribe_requests"] += 1

    def owns(self, request_id: int) -> bool:
        """Whether ``request_id`` is a subscription request of this connection."""
        return request_id in self._requests

    def answered(self, response: Response, now: float) -> Failure | None:
        """The server answered one of our requests; a :class:`Failure` when it refused."""
        key, subscribe = self._requests.pop(response.request_id)
        sub = self._subs.get(key)
        if sub is None:  # pragma: no cover - a key with a request out is never forgotten
            return None
        data = response.data
        if (
            response.status == 200
            and isinstance(data, dict)
            and "p-ticket" in data
            and not data.get("p-captcha")
        ):
            wait = server_wait(data.get("p-time"), what=f"{SUBSCRIBE[key.kind]} p-time")
            sub.server = ServerState.ACTIVE if not subscribe else ServerState.ABSENT
            sub.retry_at = now + wait + PENALTY_MARGIN
            sub.ticket = server_ticket(data["p-ticket"]) if subscribe else None
            self.counters["penalties"] += 1
            return None
        lockout = _lockout(response)
        if lockout is not None:
            self._restore.discard(key)  # answered; asked again when the lockout is over
            sub.server = ServerState.ACTIVE if not subscribe else ServerState.ABSENT
            self.counters["lockouts"] += 1
            return Failure(key, f"{lockout}: Tradovate locked requests out", lockout)
        error = _refusal(response)
        if not subscribe:
            sub.server = ServerState.ABSENT
            for chart_id in sub.chart_ids:
                self._chart_ids.pop(chart_id, None)
            sub.chart_ids = ()
            sub.realtime_id = None
            if sub.refs == 0:
                self._forget(sub)
            elif sub.last_bar_at is not None or sub.last_tick_at is not None:
                sub.resuming = True  # asked again (staleness): resumed like after a drop
            return None
        self._restore.discard(key)
        if error is not None:
            sub.server = ServerState.ABSENT
            sub.failed = error
            self.counters["subscriptions_refused"] += 1
            return Failure(key, error)
        sub.server = ServerState.ACTIVE
        sub.active_since = now
        sub.resubscribe = False
        if isinstance(data, dict):
            contract = data.get("contractId")
            if isinstance(contract, int) and not isinstance(contract, bool):
                self.bind(key, contract)
            if key.kind is Kind.CHART:
                ids = [data.get("historicalId"), data.get("realtimeId")]
                sub.chart_ids = tuple(i for i in ids if isinstance(i, int))
                realtime = data.get("realtimeId")
                sub.realtime_id = realtime if isinstance(realtime, int) else None
                for chart_id in sub.chart_ids:
                    self._chart_ids[chart_id] = key
        return None

    # ------------------------------------------------------------------ data

    def route_md(self, values: Iterable[MarketValue], now: float) -> list[Update]:
        """The updates of one ``md`` event, for the keys that asked for them."""
        out: list[Update] = []
        for value in values:
            kind = _KIND_OF[type(value)]
            keys = self._by_contract.get((kind, value.contract_id))
            if not keys:
                learnt = self._learn(kind, value.contract_id)
                keys = [learnt] if learnt is not None else []
            routed = False
            for key in keys:
                sub = self._subs.get(key)
                if sub is None or sub.server is not ServerState.ACTIVE or sub.refs == 0:
                    continue
                self._seen(sub, now)
                out.append(Update(sub.key, value))
                routed = True
            if not routed:
                self.counters["unrouted"] += 1
        return out

    def _learn(self, kind: Kind, contract_id: int) -> SubKey | None:
        """A value for a contract no key is bound to: bind it to the one active key of that
        kind subscribed by name with no contract known, when there is exactly one."""
        unbound = [
            s
            for s in self._subs.values()
            if s.key.kind is kind and s.contract_id is None and s.server is ServerState.ACTIVE
        ]
        if len(unbound) != 1:
            return None
        self.bind(unbound[0].key, contract_id)
        return unbound[0].key

    def route_chart(self, packets: Iterable[ChartPacket], now: float) -> list[Update]:
        """The updates of one ``chart`` event: duplicates dropped, resumes checked."""
        out: list[Update] = []
        for packet in packets:
            key = self._chart_ids.get(packet.subscription_id)
            sub = self._subs.get(key) if key is not None else None
            if sub is None or sub.refs == 0 or sub.server is not ServerState.ACTIVE:
                self.counters["unrouted"] += 1
                continue
            self._seen(sub, now)
            if packet.eoh:
                if not sub.eoh_delivered:
                    sub.eoh_delivered = True
                    out.append(Update(sub.key, EndOfHistory()))
                continue
            for bar in packet.bars:
                update = self._bar(sub, bar)
                if update is not None:
                    out.append(update)
            for tick in packet.ticks:
                update = self._tick(sub, tick)
                if update is not None:
                    out.append(update)
        return out

    def _bar(self, sub: _Sub, bar: Bar) -> Update | None:
        last = sub.last_bar_at
        gap = False
        if last is not None:
            if bar.timestamp < last:
                self.counters["duplicates_dropped"] += 1
                return None
            if bar.timestamp == last:
                sub.resuming = False
                if bar == sub.last_bar:
                    self.counters["duplicates_dropped"] += 1
                    return None
            else:
                if sub.resuming:
                    gap = True
                    sub.resuming = False
                    self.counters["resume_gaps"] += 1
                step = sub.key.chart.bar_seconds() if sub.key.chart is not None else None
                if step is not None and bar.timestamp - last > timedelta(seconds=step * 1.5):
                    self.counters["bar_time_gaps"] += 1
        sub.last_bar_at = bar.timestamp
        sub.last_bar = bar
        return Update(sub.key, bar, gap)

    def _tick(self, sub: _Sub, tick: Tick) -> Update | None:
        last = sub.last_tick_id
        gap = False
        if last is not None:
            if tick.id < last or (tick.id == last):
                if tick.id == last:
                    sub.resuming = False
                self.counters["duplicates_dropped"] += 1
                return None
            if sub.resuming:
                gap = True
                sub.resuming = False
                self.counters["resume_gaps"] += 1
            if tick.id > last + 1:
                self.counters["tick_id_gaps"] += 1
        sub.last_tick_id = tick.id
        sub.last_tick_at = tick.timestamp
        return Update(sub.key, tick, gap)

    def _seen(self, sub: _Sub, now: float) -> None:
        previous = sub.last_value_at
        sub.last_value_at = now
        sub.values += 1
        if sub.stale:
            sub.stale = False
            self.counters["stale_recovered"] += 1
        if sub.stale_episode_resubscribed:
            # The episode ends when values flow again: two within stale_after. One value alone
            # is what a re-subscribe answers with (the current value), not a live stream, and
            # ending the episode on it would re-subscribe a frozen feed again and again.
            after = self.stale.after(sub.key.kind)
            if previous is not None and after is not None and now - previous < after:
                sub.stale_episode_resubscribed = False

    # ------------------------------------------------------------------ staleness

    def next_stale_check(self) -> float:
        """When :meth:`stale_keys` may next find a key stale (``inf``: none can be)."""
        soonest = math.inf
        for sub in self._subs.values():
            after = self.stale.after(sub.key.kind)
            if after is None or sub.stale or sub.server is not ServerState.ACTIVE:
                continue
            since = max(sub.active_since or 0.0, sub.last_value_at or -math.inf)
            soonest = min(soonest, since + after)
        return soonest

    def stale_keys(self, now: float) -> list[SubKey]:
        """Keys that just became stale; each is marked for one re-subscription."""
        found = []
        for sub in self._subs.values():
            after = self.stale.after(sub.key.kind)
            if after is None or sub.stale or sub.server is not ServerState.ACTIVE:
                continue
            if sub.refs == 0 or sub.active_since is None:
                continue
            since = max(sub.active_since, sub.last_value_at or -math.inf)
            if now >= since + after:
                sub.stale = True
                self.counters["stale"] += 1
                if not sub.stale_episode_resubscribed:
                    sub.stale_episode_resubscribed = True
                    sub.resubscribe = True
                    self.counters["stale_resubscribes"] += 1
                found.append(sub.key)
        return found


def _by_order(sub: _Sub) -> int:
    return sub.order


_KIND_OF: dict[type, Kind] = {Quote: Kind.QUOTE, Dom: Kind.DOM, Histogram: Kind.HISTOGRAM}


def _lockout(response: Response) -> str | None:
    """``"429"`` or ``"captcha"`` when the answer starts Tradovate's lockout (P-RL)."""
    if response.status == 429:
        return "429"
    data = response.data
    if response.status == 200 and isinstance(data, dict) and data.get("p-captcha"):
        return "captcha"
    return None


def _refusal(response: Response) -> str | None:
    """Why the server refused a subscription, or ``None`` when it accepted."""
    data = response.data
    if response.status != 200:
        text = data if isinstance(data, str) else f"status {response.status}"
        return f"status {response.status}: {excerpt(str(text), 200)}"
    if isinstance(data, dict):
        for name in ("errorText", "failureText", "failureReason"):
            if isinstance(data.get(name), str) and data[name]:
                return str(data[name])[:200]
    return None


__all__ = [
    "ELEMENT_SIZE_UNITS",
    "SUBSCRIBE",
    "TIME_RANGE_FIELDS",
    "UNDERLYING_TYPES",
    "UNSUBSCRIBE",
    "ChartSpec",
    "EndOfHistory",
    "Failure",
    "Kind",
    "Outgoing",
    "ServerState",
    "StaleConfig",
    "SubKey",
    "SubscriptionRegistry",
    "Update",
    "check_symbol",
]
