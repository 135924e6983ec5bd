"""Quotes and a minute chart that survive a dropped market-data socket.

The engine talks to the embedded simulator in memory, so this runs anywhere, offline::

    .venv/bin/python examples/quotes_and_chart.py

Two consumers read ESZ6 quotes (one server subscription between them) and one reads a
one-minute chart of ESZ6. After a while the simulator drops the market-data socket without a
close frame; the engine reconnects, asks for exactly the same subscriptions once more, and
resumes the chart from its last bar: no bar twice, none missing (or the update says ``gap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import trio

from trio_tradovate import Bar, ChartSpec, Quote, open_market_data
from trio_tradovate.sim import open_simulator


@dataclass(frozen=True)
class QuotesResult:
    """What one run saw, for a reader or a test to check."""

    quotes: int
    bar_times: tuple[datetime, ...]
    gaps: int
    subscribe_requests: tuple[str, ...]


async def main() -> QuotesResult:
    quotes = 0
    bars: list[datetime] = []
    gaps = 0
    async with open_simulator() as sim:
        async with open_market_data(sim.engine_config()) as md:
            spec = ChartSpec("MinuteBar", 1, "UnderlyingUnits", as_much_as_elements=5)
            async with (
                md.quotes("ESZ6") as first,
                md.quotes("ESZ6") as second,
                md.chart("ESZ6", spec) as chart,
            ):

                async def read_chart() -> None:
                    nonlocal gaps
                    async for update in chart:
                        if isinstance(update.value, Bar):
                            gaps += update.gap
                            if not bars or update.value.timestamp > bars[-1]:
                                bars.append(update.value.timestamp)
                                bar = update.value
                                print(f"bar {bar.timestamp:%H:%M} close {bar.close}")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_chart)
                    for moment in range(240):
                        for subscription in (first, second):
                            update = await subscription.receive()
                            assert isinstance(update.value, Quote)
                            quotes += 1
                        if moment == 120:
                            print("-- the simulator drops the market-data socket --")
                            await sim.drop_connections(where=lambda audit: audit.role == "md")
                        await trio.sleep(1)
                    nursery.cancel_scope.cancel()
        asked = tuple(r.endpoint for r in sim.md_requests if r.endpoint.startswith("md/"))
    print(f"{quotes} quotes, {len(bars)} bars, {gaps} gaps; requests: {', '.join(asked)}")
    return QuotesResult(quotes, tuple(bars), gaps, asked)


if __name__ == "__main__":
    trio.run(main)
