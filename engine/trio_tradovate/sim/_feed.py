"""One socket's market-data subscriptions and what they stream (sans-I/O).

A :class:`MdFeed` belongs to a market-data or replay socket. It answers the ``md/*`` requests
(Tradovate's market-data request reference,
https://partner.tradovate.com/overview/core-concepts/web-sockets/market-data/market-data-request-reference,
and the chart tutorials EX-10/EX-11 of https://github.com/tradovate/example-api-js) and, each
time :meth:`MdFeed.advance` is called with the socket's
market time, returns the ``md`` and ``chart`` events that became due since the last call.

Choices where the reference is silent (documented in ``docs/simulator.md``):

* a successful subscribe, unsubscribe or ``cancelChart`` answers ``{"s":200,"i":n}`` with no
  ``d`` (like ``authorize``); the current value follows at once as an event;
* subscribing twice to one contract is idempotent (one stream); unsubscribing something not
  subscribed is a 200 as well (the audit shows it);
* an unknown symbol is ``s:404`` with ``d`` ``"Unknown symbol: <symbol>"``; a bad body is
  ``s:400`` with a string ``d`` saying what is wrong (non-2xx ``d`` is a string, as
  everywhere on Tradovate's websocket).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ._audit import MdRecord
from ._market import TICK_ID_BASE, Instrument, Market, MinuteSummary, PriceProcess, price

__all__ = ["ChartSub", "FeedFaults", "MdFeed", "MdRequestError"]

#: Kinds of streamed subscription and the endpoints that manage them.
_SUBSCRIBE: Final = {
    "md/subscribequote": "quote",
    "md/subscribedom": "dom",
    "md/subscribehistogram": "histogram",
}
_UNSUBSCRIBE: Final = {
    "md/unsubscribequote": "quote",
    "md/unsubscribedom": "dom",
    "md/unsubscribehistogram": "histogram",
}
MD_ENDPOINTS: Final = frozenset({*_SUBSCRIBE, *_UNSUBSCRIBE, "md/getchart", "md/cancelchart"})
_UNDERLYING: Final = frozenset({"Tick", "DailyBar", "MinuteBar", "Custom", "DOM"})
_UNITS: Final = frozenset(
    {
        "Volume",
        "Range",
        "UnderlyingUnits",
        "Renko",
        "MomentumRange",
        "PointAndFigure",
        "OFARange",
    }
)
_MINUTES_PER_DAY: Final = 1440


class MdRequestError(Exception):
    """Answer the request with ``status`` and this text as ``d``."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass
class FeedFaults:
    """Market-data faults shared by every feed of one simulator (set by the trio layer)."""

    #: ``(kind, contract id) -> cleared by a new subscribe?`` for frozen subscriptions.
    frozen: dict[tuple[str, int], bool] = field(default_factory=dict)
    #: Send quote/DOM/histogram updates only on every Nth step (the rest are discarded).
    conflate_every: int | None = None
    #: While set, md feeds send nothing at all and their sockets send no ``h`` either.
    silent: bool = False
    #: While set, the market is quiet: no updates, so the socket sends ``h`` when idle.
    quiet: bool = False


@dataclass
class ChartSub:
    """One ``md/getChart`` subscription (its realtime part)."""

    historical_id: int
    realtime_id: int
    contract_id: int
    kind: str  # "Tick", "MinuteBar" or "DailyBar"
    minutes: int  # bar length in minutes (0 for ticks)
    #: Realtime steps still to discard (``chart_gap``).
    gap: int = 0


@dataclass(frozen=True)
class _Range:
    closest: float | None
    closest_tick: int | None
    as_far: float | None
    as_much: int | None


def _parse_time(value: object, name: str) -> float:
    if not isinstance(value, str):
        raise MdRequestError(400, f"timeRange.{name} must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MdRequestError(400, f"timeRange.{name} is not an ISO-8601 time: {value}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MdRequestError(400, f"{name} must be a positive integer")
    return value


class MdFeed:
    """Market-data subscriptions of one socket."""

    def __init__(
        self,
        market: Market,
        faults: FeedFaults,
        records: list[MdRecord],
        log: list[MdRecord],
        *,
        socket: int,
        max_elements: int,
    ) -> None:
        self.market = market
        self.socket = socket
        self.faults = faults
        self.records = records
        self.log = log
        self.max_elements = max_elements
        self.quotes: set[int] = set()
        self.doms: set[int] = set()
        self.histograms: set[int] = set()
        self.charts: dict[int, ChartSub] = {}
        #: The last step this feed has sent (``None`` before the first advance).
        self.last_step: int | None = None
        self._last_minute: dict[int, int] = {}

    def reset(self) -> None:
        """Forget every subscription (a replay clock (re)started: a new market time line)."""
        self.quotes.clear()
        self.doms.clear()
        self.histograms.clear()
        self.charts.clear()
        self.last_step = None
        self._last_minute.clear()

    def active(self) -> bool:
        return bool(self.quotes or self.doms or self.histograms or self.charts)

    def live(self) -> frozenset[tuple[str, str]]:
        """``(kind, contract name)`` of every live subscription; charts as ``"chart"``."""
        names = {
            kind: {self.market.instrument(c).name for c in ids}
            for kind, ids in (
                ("quote", self.quotes),
                ("dom", self.doms),
                ("histogram", self.histograms),
            )
        }
        found = {(kind, name) for kind, group in names.items() for name in group}
        found |= {
            ("chart", self.market.instrument(c.contract_id).name) for c in self.charts.values()
        }
        return frozenset(found)

    # -- requests -------------------------------------------------------------------------

    def handle(
        self, lower: str, request_id: int, body: str, wall: float, now: float
    ) -> tuple[int, Any, list[dict[str, Any]]]:
        """Answer one ``md/*`` request at market time ``wall``: (status, d, events to send
        right after the answer, in order). ``d`` is ``None`` for a bare ``{"s":200,"i":n}``."""
        record = self._record(lower, request_id, body, now)
        if lower not in MD_ENDPOINTS:
            record.status = 404
            return 404, f"Not found: {lower}", []
        try:
            request = _object(body)
            if lower in _SUBSCRIBE:
                return self._subscribe(_SUBSCRIBE[lower], request, wall, record)
            if lower in _UNSUBSCRIBE:
                return self._unsubscribe(_UNSUBSCRIBE[lower], request, record)
            if lower == "md/getchart":
                return self._get_chart(request, wall, record)
            if lower == "md/cancelchart":
                return self._cancel_chart(request, record)
        except MdRequestError as exc:
            record.status = exc.status
            return exc.status, str(exc), []
        raise AssertionError(f"unhandled md endpoint {lower}")  # MD_ENDPOINTS is exhaustive

    def refuse(self, lower: str, request_id: int, body: str, now: float, status: int) -> None:
        """Audit a request the socket refused before the feed could handle it."""
        self._record(lower, request_id, body, now).status = status

    def _record(self, lower: str, request_id: int, body: str, now: float) -> MdRecord:
        record = MdRecord(now, self.socket, lower, request_id, body)
        self.records.append(record)
        self.log.append(record)
        return record

    def _instrument(self, request: dict[str, Any], record: MdRecord) -> Instrument:
        if "symbol" not in request:
            raise MdRequestError(400, "symbol is required")
        symbol = request["symbol"]
        if not isinstance(symbol, (str, int)) or isinstance(symbol, bool):
            raise MdRequestError(400, "symbol must be a contract name or id")
        record.symbol = symbol
        found = self.market.resolve(symbol)
        if found is None:
            raise MdRequestError(404, f"Unknown symbol: {symbol}")
        record.contract_id = found.contract_id
        return found

    def _group(self, kind: str) -> set[int]:
        return {"quote": self.quotes, "dom": self.doms, "histogram": self.histograms}[kind]

    def _subscribe(
        self, kind: str, request: dict[str, Any], wall: float, record: MdRecord
    ) -> tuple[int, Any, list[dict[str, Any]]]:
        instrument = self._instrument(request, record)
        cid = instrument.contract_id
        self._group(kind).add(cid)
        if self.faults.frozen.get((kind, cid)):
            del self.faults.frozen[(kind, cid)]  # a fresh subscribe cures this freeze
        record.status = 200
        g = self.market.step_at(wall)
        return 200, None, [self._event(kind, [cid], g)]

    def _unsubscribe(
        self, kind: str, request: dict[str, Any], record: MdRecord
    ) -> tuple[int, Any, list[dict[str, Any]]]:
        instrument = self._instrument(request, record)
        self._group(kind).discard(instrument.contract_id)
        record.status = 200
        return 200, None, []

    def _cancel_chart(
        self, request: dict[str, Any], record: MdRecord
    ) -> tuple[int, Any, list[dict[str, Any]]]:
        sub_id = request.get("subscriptionId")
        if not isinstance(sub_id, int) or isinstance(sub_id, bool):
            raise MdRequestError(400, "subscriptionId must be an integer")
        record.symbol = sub_id
        # The partner reference and EX-10 cancel by realtimeId; a historical id is accepted too
        # (one sample client sends it).
        for key, chart in list(self.charts.items()):
            if sub_id in (chart.realtime_id, chart.historical_id):
                record.contract_id = chart.contract_id
                del self.charts[key]
        record.status = 200
        return 200, None, []

    # -- events ---------------------------------------------------------------------------

    def _event(self, kind: str, contracts: list[int], g: int) -> dict[str, Any]:
        market = self.market
        if kind == "quote":
            return {"e": "md", "d": {"quotes": [market.quote(c, g) for c in contracts]}}
        if kind == "dom":
            return {"e": "md", "d": {"doms": [market.dom(c, g) for c in contracts]}}
        return {"e": "md", "d": {"histograms": [market.histogram(c, g) for c in contracts]}}

    def advance(self, wall: float) -> list[dict[str, Any]]:
        """Events due at market time ``wall`` since the last call (empty if none)."""
        g_now = self.market.step_at(wall)
        last = self.last_step
        self.last_step = g_now
        if last is None or g_now <= last or self.faults.quiet:
            return []
        events: list[dict[str, Any]] = []
        frozen = self.faults.frozen
        every = self.faults.conflate_every
        if every is None or g_now // every != last // every:
            for kind in ("quote", "dom", "histogram"):
                group = sorted(c for c in self._group(kind) if (kind, c) not in frozen)
                if kind == "histogram":
                    group = [c for c in group if self._minute_turned(c, g_now)]
                if group:
                    events.append(self._event(kind, group, g_now))
        packets: list[dict[str, Any]] = []
        for chart in self.charts.values():
            if ("chart", chart.contract_id) in frozen:
                continue
            packets.extend(self._realtime(chart, last + 1, g_now))
        if packets:
            events.append({"e": "chart", "d": {"charts": packets}})
        return events

    def _minute_turned(self, contract_id: int, g: int) -> bool:
        """Histograms change when a minute completes (see ``Market.histogram``)."""
        minute = g // self.market.per_minute
        before = self._last_minute.get(contract_id)
        self._last_minute[contract_id] = minute
        return before is not None and before != minute

    # -- charts ---------------------------------------------------------------------------

    def _get_chart(
        self, request: dict[str, Any], wall: float, record: MdRecord
    ) -> tuple[int, Any, list[dict[str, Any]]]:
        instrument = self._instrument(request, record)
        if self.faults.frozen.get(("chart", instrument.contract_id)):
            del self.faults.frozen[("chart", instrument.contract_id)]
        kind, minutes = self._description(request.get("chartDescription"))
        window = self._time_range(request.get("timeRange"))
        g_now = self.market.step_at(wall)
        historical, realtime = self.market.new_chart_id(), self.market.new_chart_id()
        sub = ChartSub(historical, realtime, instrument.contract_id, kind, minutes)
        proc = self.market.process(instrument.contract_id)
        if kind == "Tick":
            packets = self._tick_history(proc, sub, window, g_now)
        else:
            packets = self._bar_history(proc, sub, window, g_now)
        packets.append({"id": historical, "eoh": True})
        self.charts[realtime] = sub
        record.status = 200
        record.chart_ids = (historical, realtime)
        events = [{"e": "chart", "d": {"charts": [packet]}} for packet in packets]
        return 200, {"historicalId": historical, "realtimeId": realtime}, events

    @staticmethod
    def _description(value: object) -> tuple[str, int]:
        if not isinstance(value, dict):
            raise MdRequestError(400, "chartDescription must be an object")
        kind = value.get("underlyingType")
        if kind not in _UNDERLYING:
            raise MdRequestError(
                400, f"chartDescription.underlyingType must be one of {sorted(_UNDERLYING)}"
            )
        unit = value.get("elementSizeUnit", "UnderlyingUnits")
        if unit not in _UNITS:
            raise MdRequestError(
                400, f"chartDescription.elementSizeUnit must be one of {sorted(_UNITS)}"
            )
        size = _positive_int(value.get("elementSize"), "chartDescription.elementSize")
        with_histogram = value.get("withHistogram", False)
        if not isinstance(with_histogram, bool):
            raise MdRequestError(400, "chartDescription.withHistogram must be a boolean")
        if kind in ("Custom", "DOM") or unit != "UnderlyingUnits":
            raise MdRequestError(
                400,
                f"the simulator serves Tick, MinuteBar and DailyBar charts in UnderlyingUnits "
                f"only, not {kind} in {unit}",
            )
        if kind == "Tick":
            if size != 1:
                raise MdRequestError(400, "Tick charts need elementSize 1")
            return kind, 0
        if kind == "DailyBar":
            return kind, size * _MINUTES_PER_DAY
        return kind, size

    def _time_range(self, value: object) -> _Range:
        if not isinstance(value, dict):
            raise MdRequestError(400, "timeRange must be an object")
        known = ("closestTimestamp", "closestTickId", "asFarAsTimestamp", "asMuchAsElements")
        if not any(key in value for key in known):
            raise MdRequestError(400, f"timeRange needs at least one of {', '.join(known)}")
        closest = value.get("closestTimestamp")
        tick = value.get("closestTickId")
        as_far = value.get("asFarAsTimestamp")
        as_much = value.get("asMuchAsElements")
        return _Range(
            closest=None if closest is None else _parse_time(closest, "closestTimestamp"),
            closest_tick=None if tick is None else _positive_int(tick, "closestTickId"),
            as_far=None if as_far is None else _parse_time(as_far, "asFarAsTimestamp"),
            as_much=None if as_much is None else _positive_int(as_much, "asMuchAsElements"),
        )

    def _newest_step(self, window: _Range, g_now: int) -> int:
        newest = g_now
        if window.closest is not None:
            newest = min(newest, self.market.step_at(window.closest))
        if window.closest_tick is not None:
            newest = min(newest, window.closest_tick - TICK_ID_BASE)
        return newest

    def _count(self, window: _Range) -> int:
        if window.as_much is None:
            return self.max_elements
        return min(window.as_much, self.max_elements)

    def _tick_history(
        self, proc: PriceProcess, sub: ChartSub, window: _Range, g_now: int
    ) -> list[dict[str, Any]]:
        newest = self._newest_step(window, g_now)
        oldest = max(0, newest - self._count(window) + 1)
        if window.as_far is not None:
            # The first step at or after asFarAsTimestamp.
            since = (window.as_far - self.market.origin) / self.market.interval
            oldest = max(oldest, math.ceil(since - 1e-9))
        packets: list[dict[str, Any]] = []
        chunk = 500
        for start in range(oldest, newest + 1, chunk):
            steps = range(start, min(newest + 1, start + chunk))
            packets.append(self._tick_packet(proc, sub.historical_id, "db", steps))
        return packets

    def _tick_packet(
        self, proc: PriceProcess, chart_id: int, source: str, steps: range
    ) -> dict[str, Any]:
        """EX-11 compact form: ``bp``/``bt`` base price (ticks) and time (ms); per tick
        ``p``/``t`` relative to them, ``b``/``a`` bid/ask relative to ``bp``."""
        first = proc.step(steps[0])
        bp = first.price
        bt = round(first.time * 1000)
        ticks = []
        for g in steps:
            step = proc.step(g)
            ticks.append(
                {
                    "id": TICK_ID_BASE + g,
                    "t": round(step.time * 1000) - bt,
                    "p": step.price - bp,
                    "s": step.size,
                    "b": step.bid - bp,
                    "a": step.ask - bp,
                    "bs": step.bid_size,
                    "as": step.ask_size,
                }
            )
        return {
            "id": chart_id,
            "s": source,
            "td": self.market.td(first.time),
            "bp": bp,
            "bt": bt,
            "ts": proc.instrument.tick_size,
            "tks": ticks,
        }

    def _bar_history(
        self, proc: PriceProcess, sub: ChartSub, window: _Range, g_now: int
    ) -> list[dict[str, Any]]:
        newest = self._newest_step(window, g_now)
        per_bar = sub.minutes * self.market.per_minute
        last_bucket = newest // per_bar
        first_bucket = max(0, last_bucket - self._count(window) + 1)
        if window.as_far is not None:
            far_step = int(max(0.0, window.as_far - self.market.origin) // self.market.interval)
            first_bucket = max(first_bucket, far_step // per_bar)
        bars = [
            self._bar(proc, sub.minutes, bucket, min(newest, (bucket + 1) * per_bar - 1))
            for bucket in range(first_bucket, last_bucket + 1)
        ]
        packets = []
        for start in range(0, len(bars), 500):
            part = bars[start : start + 500]
            packets.append({"id": sub.historical_id, "td": self._td_of(part[-1]), "bars": part})
        return packets

    def _td_of(self, bar: dict[str, Any]) -> int:
        return self.market.td(_parse_time(bar["timestamp"], "timestamp"))

    def _bar(self, proc: PriceProcess, minutes: int, bucket: int, upto: int) -> dict[str, Any]:
        """Bar ``bucket`` (``minutes`` long) as it stands after step ``upto``."""
        per_minute = self.market.per_minute
        first = bucket * minutes
        last_minute = upto // per_minute
        parts: list[MinuteSummary] = [proc.minute(m) for m in range(first, last_minute)]
        parts.append(proc.partial(upto))
        volume = sum(p.volume for p in parts)
        up_volume = sum(p.up_volume for p in parts)
        bid_volume = sum(p.bid_volume for p in parts)
        ts = proc.instrument.tick_size
        return {
            "timestamp": self.market.iso(self.market.step_time(first * per_minute)),
            "open": price(parts[0].open, ts),
            "high": price(max(p.high for p in parts), ts),
            "low": price(min(p.low for p in parts), ts),
            "close": price(parts[-1].close, ts),
            "upVolume": up_volume,
            "downVolume": volume - up_volume,
            "upTicks": sum(p.up_ticks for p in parts),
            "downTicks": sum(p.down_ticks for p in parts),
            "bidVolume": bid_volume,
            "offerVolume": volume - bid_volume,
        }

    def add_gap(self, count: int) -> None:
        """``chart_gap``: each chart of this feed discards its next ``count`` steps."""
        for chart in self.charts.values():
            chart.gap += count

    def _realtime(self, chart: ChartSub, first: int, last: int) -> list[dict[str, Any]]:
        """Realtime packets for steps ``first..last``, less the steps a ``chart_gap`` still
        discards: tick ids a tick chart never sends, or bars that never arrive when whole
        bars fall in the gap."""
        skipped = min(chart.gap, last - first + 1)
        chart.gap -= skipped
        first += skipped
        if first > last:
            return []
        proc = self.market.process(chart.contract_id)
        if chart.kind == "Tick":
            return [self._tick_packet(proc, chart.realtime_id, "rt", range(first, last + 1))]
        per_bar = chart.minutes * self.market.per_minute
        # Each bar the steps touched, as it stands after its last touched step: a bar that
        # closed in between is sent in its final form before the next one starts.
        bars = []
        for bucket in range(first // per_bar, last // per_bar + 1):
            upto = min(last, (bucket + 1) * per_bar - 1)
            bars.append(self._bar(proc, chart.minutes, bucket, upto))
        return [{"id": chart.realtime_id, "td": self._td_of(bars[-1]), "bars": bars}]


def _object(body: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as exc:
        raise MdRequestError(400, f"Invalid JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise MdRequestError(400, "Request body must be a JSON object")
    return value
