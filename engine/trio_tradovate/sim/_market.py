"""The simulated market (sans-I/O): one seeded price process per contract, on its tick size.

Every contract trades on one shared time grid: step ``g`` happens at ``origin + g * interval``
(seconds since the Unix epoch), where ``origin`` is UTC midnight ``history_days`` days before
the simulator's epoch. Each step is exactly one trade, so tick ids (``TICK_ID_BASE + g``) are
consecutive and a gap in them always means data the server discarded.

The process is built in two levels so that any moment can be produced on demand, cheaply and
identically whenever it is asked for (the determinism tests rely on that):

* per minute, a seeded *summary* (open, high, low, close, volume and the up/down split of
  the bar fields), drawn in order from one generator per contract: each minute opens at the
  previous minute's close, so bars join up;
* inside a minute, the path of its steps is drawn from a generator seeded by
  ``(seed, contract, minute)``: it starts at the open, touches the high and the low, ends at
  the close and never leaves ``[low, high]``, and the trade sizes add up to the volume. A bar
  built from ticks therefore equals the bar built from summaries.

Prices are kept in whole ticks (``int``) and turned into prices only on the wire, so every
price the simulator sends is a multiple of the contract's tick size.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "TICK_ID_BASE",
    "Instrument",
    "Market",
    "MinuteSummary",
    "PriceProcess",
    "Step",
]

#: Tick ids are ``TICK_ID_BASE + step index``.
TICK_ID_BASE: Final = 10_000_000
_MINUTES_PER_DAY: Final = 1440
_DOM_LEVELS: Final = 10
_CACHE_MINUTES: Final = 512
_MASK: Final = (1 << 64) - 1


def _mix(*values: int) -> int:
    """A small deterministic integer hash (splitmix-style); ``hash()`` of ints would do too,
    but this one is stable by construction and cheaper than seeding a ``Random``."""
    x = 0x9E3779B97F4A7C15
    for value in values:
        x = ((x ^ (value & _MASK)) * 0xBF58476D1CE4E5B9) & _MASK
        x ^= x >> 31
    return x


@dataclass(frozen=True)
class Instrument:
    """What the market needs to know about a contract."""

    contract_id: int
    name: str
    tick_size: float
    reference_price: float


@dataclass(frozen=True)
class MinuteSummary:
    """One minute of one contract, in ticks; the split fields are drawn per minute."""

    open: int
    high: int
    low: int
    close: int
    volume: int
    up_volume: int
    up_ticks: int
    down_ticks: int
    bid_volume: int


@dataclass(frozen=True)
class Step:
    """One step (one trade) of one contract; prices in ticks."""

    index: int
    time: float
    price: int
    size: int
    bid: int
    ask: int
    bid_size: int
    ask_size: int


class PriceProcess:
    """The seeded process of one contract (see the module docstring)."""

    def __init__(self, seed: int, instrument: Instrument, origin: float, interval: float) -> None:
        self.instrument = instrument
        self.origin = origin
        self.interval = interval
        self.per_minute = round(60 / interval)
        self._seed = seed
        self._rng = random.Random(f"{seed}:md:{instrument.name}")
        self._summaries: list[MinuteSummary] = []
        self._day_high: list[int] = []
        self._day_low: list[int] = []
        self._day_volume: list[int] = []
        self._paths: dict[int, list[Step]] = {}
        self._last = round(instrument.reference_price / instrument.tick_size)

    # -- minute summaries -----------------------------------------------------------------

    def minute(self, m: int) -> MinuteSummary:
        """The summary of minute ``m`` (``m >= 0``), drawing the ones before it if needed."""
        if m < 0:
            raise ValueError("before the start of the simulated history")
        rng, n = self._rng, self.per_minute
        while len(self._summaries) <= m:
            index = len(self._summaries)
            open_ = self._last
            close = open_ + rng.randint(-6, 6)
            high = max(open_, close) + rng.randint(0, 3)
            low = min(open_, close) - rng.randint(0, 3)
            volume = n + rng.randrange(0, 4 * n)
            up_ticks = rng.randint(0, n // 2)
            summary = MinuteSummary(
                open=open_,
                high=high,
                low=low,
                close=close,
                volume=volume,
                up_volume=rng.randint(0, volume),
                up_ticks=up_ticks,
                down_ticks=rng.randint(0, n // 2),
                bid_volume=rng.randint(0, volume),
            )
            self._summaries.append(summary)
            same_day = index % _MINUTES_PER_DAY != 0
            self._day_high.append(max(high, self._day_high[-1]) if same_day else high)
            self._day_low.append(min(low, self._day_low[-1]) if same_day else low)
            self._day_volume.append(volume + (self._day_volume[-1] if same_day else 0))
            self._last = close
        return self._summaries[m]

    def day_stats(self, m: int) -> tuple[int, int, int]:
        """(high, low, volume) of minute ``m``'s day over its minutes before ``m``; the
        high/low are ``None``-free: with no earlier minute they are the minute's open."""
        if m % _MINUTES_PER_DAY == 0:
            opening = self.minute(m).open
            return opening, opening, 0
        self.minute(m)
        return self._day_high[m - 1], self._day_low[m - 1], self._day_volume[m - 1]

    # -- steps ----------------------------------------------------------------------------

    def steps_of(self, m: int) -> list[Step]:
        """The steps of minute ``m`` (cached; regenerated identically when evicted)."""
        cached = self._paths.get(m)
        if cached is not None:
            return cached
        summary = self.minute(m)
        rng = random.Random(f"{self._seed}:md:{self.instrument.name}:{m}")
        n = self.per_minute
        ends = (summary.high, summary.low)
        if rng.random() < 0.5:
            ends = (summary.low, summary.high)
        points = (summary.open, *ends, summary.close)
        distances = [abs(b - a) for a, b in itertools.pairwise(points)]
        slack = n - 1 - sum(distances)
        cut1, cut2 = sorted((rng.randint(0, slack), rng.randint(0, slack)))
        lengths = (distances[0] + cut1, distances[1] + cut2 - cut1, distances[2] + slack - cut2)
        prices = [summary.open]
        for target, length in zip(points[1:], lengths, strict=True):
            for remaining in range(length, 0, -1):
                current = prices[-1]
                moves = [
                    move
                    for move in (-1, 0, 1)
                    if abs(target - current - move) <= remaining - 1
                    and summary.low <= current + move <= summary.high
                ]
                prices.append(current + rng.choice(moves))
        base, extra = divmod(summary.volume, n)
        bumped = set(rng.sample(range(n), extra))
        start = m * n
        steps: list[Step] = []
        for j, price in enumerate(prices):
            buy = rng.random() < 0.5
            bid = price - 1 if buy else price
            steps.append(
                Step(
                    index=start + j,
                    time=self.origin + (start + j) * self.interval,
                    price=price,
                    size=base + (1 if j in bumped else 0),
                    bid=bid,
                    ask=bid + 1,
                    bid_size=rng.randint(1, 150),
                    ask_size=rng.randint(1, 150),
                )
            )
        if len(self._paths) >= _CACHE_MINUTES:
            self._paths.pop(next(iter(self._paths)))
        self._paths[m] = steps
        return steps

    def step(self, g: int) -> Step:
        return self.steps_of(g // self.per_minute)[g % self.per_minute]

    # -- derived views (prices in ticks) --------------------------------------------------

    def partial(self, g: int) -> MinuteSummary:
        """Minute ``g // per_minute`` as it stands after step ``g`` (the forming minute).

        OHLC and volume come from the steps so far; the split fields are the minute's drawn
        values prorated, so the last step of a minute reproduces its summary exactly."""
        m, j = divmod(g, self.per_minute)
        steps = self.steps_of(m)[: j + 1]
        full = self.minute(m)
        if j == self.per_minute - 1:
            return full
        prices = [s.price for s in steps]
        volume = sum(s.size for s in steps)
        share = (j + 1) / self.per_minute
        return MinuteSummary(
            open=prices[0],
            high=max(prices),
            low=min(prices),
            close=prices[-1],
            volume=volume,
            up_volume=min(volume, int(full.up_volume * share)),
            up_ticks=int(full.up_ticks * share),
            down_ticks=int(full.down_ticks * share),
            bid_volume=min(volume, int(full.bid_volume * share)),
        )

    def dom_size(self, g: int, side: int, level: int) -> int:
        """Seeded size of DOM level ``level`` (0 = best) on ``side`` (0 bid, 1 offer)."""
        if level == 0:
            step = self.step(g)
            return step.bid_size if side == 0 else step.ask_size
        return 1 + _mix(self._seed, self.instrument.contract_id, g, side, level) % 400

    def open_interest(self, day: int) -> int:
        return 100_000 + _mix(self._seed, self.instrument.contract_id, day) % 400_000


class Market:
    """Every contract's process on one grid, plus the ids charts are given."""

    def __init__(
        self,
        *,
        seed: int,
        instruments: list[Instrument],
        epoch: datetime,
        history_days: int,
        interval: float,
    ) -> None:
        per_minute = 60 / interval if interval > 0 else 0.0
        if abs(per_minute - round(per_minute)) > 1e-9 or round(per_minute) < 40:
            raise ValueError("md_step_interval must divide 60 s into at least 40 steps")
        if history_days < 0:
            raise ValueError("md_history_days must be >= 0")
        midnight = epoch.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.origin = midnight.timestamp() - history_days * 86_400.0
        self.interval = interval
        self.per_minute = round(per_minute)
        self._seed = seed
        self._instruments = {i.contract_id: i for i in instruments}
        self._by_name = {i.name.lower(): i for i in instruments}
        self._processes: dict[int, PriceProcess] = {}
        self._next_chart_id = 1 + _mix(seed, 7) % 90_000

    # -- lookup ---------------------------------------------------------------------------

    def resolve(self, symbol: object) -> Instrument | None:
        """A contract by name (case-insensitive) or id (``{"symbol": "ESM7" | 123456}``)."""
        if isinstance(symbol, bool):
            return None
        if isinstance(symbol, int):
            return self._instruments.get(symbol)
        if isinstance(symbol, str):
            found = self._by_name.get(symbol.lower())
            if found is None and symbol.isdigit():
                return self._instruments.get(int(symbol))
            return found
        return None

    def instrument(self, contract_id: int) -> Instrument:
        return self._instruments[contract_id]

    def process(self, contract_id: int) -> PriceProcess:
        found = self._processes.get(contract_id)
        if found is None:
            found = PriceProcess(
                self._seed, self._instruments[contract_id], self.origin, self.interval
            )
            self._processes[contract_id] = found
        return found

    def new_chart_id(self) -> int:
        value = self._next_chart_id
        self._next_chart_id += 1
        return value

    # -- the grid -------------------------------------------------------------------------

    def step_at(self, wall: float) -> int:
        """The last step at or before wall time ``wall`` (seconds since the Unix epoch)."""
        return int((wall - self.origin) // self.interval)

    def step_time(self, g: int) -> float:
        return self.origin + g * self.interval

    @staticmethod
    def iso(wall: float) -> str:
        moment = datetime.fromtimestamp(wall, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    @staticmethod
    def trade_date(wall: float) -> dict[str, int]:
        day = datetime.fromtimestamp(wall, UTC).date()
        return {"year": day.year, "month": day.month, "day": day.day}

    @staticmethod
    def td(wall: float) -> int:
        """The ``td`` of a chart packet: trade date as ``YYYYMMDD``."""
        day = datetime.fromtimestamp(wall, UTC).date()
        return day.year * 10_000 + day.month * 100 + day.day

    # -- wire values ----------------------------------------------------------------------

    def quote(self, contract_id: int, g: int) -> dict[str, Any]:
        """The quote after step ``g``: every documented entry kind except ``EmptyBook`` (the
        simulated book is never empty)."""
        proc = self.process(contract_id)
        ts = proc.instrument.tick_size
        m, j = divmod(g, self.per_minute)
        high, low, volume = proc.day_stats(m)
        steps = proc.steps_of(m)[: j + 1]
        last = steps[-1]
        day = m // _MINUTES_PER_DAY
        opening = proc.minute(day * _MINUTES_PER_DAY).open
        settlement = proc.minute(day * _MINUTES_PER_DAY - 1).close if day > 0 else opening
        return {
            "timestamp": self.iso(last.time),
            "contractId": contract_id,
            "entries": {
                "Bid": {"price": price(last.bid, ts), "size": last.bid_size},
                "Offer": {"price": price(last.ask, ts), "size": last.ask_size},
                "Trade": {"price": price(last.price, ts), "size": last.size},
                "TotalTradeVolume": {"size": volume + sum(s.size for s in steps)},
                "OpenInterest": {"size": proc.open_interest(day)},
                "OpeningPrice": {"price": price(opening, ts)},
                "HighPrice": {"price": price(max(high, *(s.price for s in steps)), ts)},
                "LowPrice": {"price": price(min(low, *(s.price for s in steps)), ts)},
                "SettlementPrice": {"price": price(settlement, ts)},
            },
        }

    def dom(self, contract_id: int, g: int) -> dict[str, Any]:
        """The DOM after step ``g``: ten levels a side, best first."""
        proc = self.process(contract_id)
        ts = proc.instrument.tick_size
        step = proc.step(g)
        return {
            "contractId": contract_id,
            "timestamp": self.iso(step.time),
            "bids": [
                {"price": price(step.bid - i, ts), "size": proc.dom_size(g, 0, i)}
                for i in range(_DOM_LEVELS)
            ],
            "offers": [
                {"price": price(step.ask + i, ts), "size": proc.dom_size(g, 1, i)}
                for i in range(_DOM_LEVELS)
            ],
        }

    def histogram(self, contract_id: int, g: int) -> dict[str, Any]:
        """The histogram of the trade date, over its *completed* minutes: each minute's volume
        spread evenly over its ``[low, high]`` (the remainder at its close). ``items`` maps
        the offset in ticks from ``base`` (the last trade) to the volume at that price."""
        proc = self.process(contract_id)
        m = g // self.per_minute
        first = m - m % _MINUTES_PER_DAY
        volumes: dict[int, int] = {}
        for minute in range(first, m):
            s = proc.minute(minute)
            width = s.high - s.low + 1
            each, rest = divmod(s.volume, width)
            for level in range(s.low, s.high + 1):
                volumes[level] = volumes.get(level, 0) + each
            volumes[s.close] = volumes.get(s.close, 0) + rest
        step = proc.step(g)
        base = step.price
        return {
            "contractId": contract_id,
            "timestamp": self.iso(step.time),
            "tradeDate": self.trade_date(step.time),
            "base": price(base, proc.instrument.tick_size),
            "items": {str(level - base): volume for level, volume in sorted(volumes.items())},
            "refresh": True,
        }


def price(ticks: int, tick_size: float) -> float:
    """A price on the wire: a whole number of ticks (rounded to clear float noise)."""
    return round(ticks * tick_size, 10)
