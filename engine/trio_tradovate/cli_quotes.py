"""``trio-tradovate quotes SYMBOL... [--dom SYMBOL]... [--chart SYMBOL]...``.

One JSON line per market-data update (and per transition of the market-data socket), until a
signal (exit 0) or until the engine stops by policy (one line on stderr, exit 1), like
``stream``. It takes the same credentials (``TRADOVATE_*``) and connection flags
(``--env``, ``--rest-url``) plus ``--md-url``. Kept apart from ``cli.py`` so the two evolve
separately; ``cli.py`` only registers the command.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import fields, is_dataclass, replace
from functools import partial
from typing import Any, TextIO

import orjson
import trio

from .config import EngineConfig
from .engine import open_engine
from .errors import EngineStopped, SubscriptionRefused
from .marketdata import Bar, Dom, Quote
from .mdsocket import MarketDataFeed, Subscription
from .statechart import State
from .subscriptions import ChartSpec, EndOfHistory, Update


def add_arguments(quotes: argparse.ArgumentParser) -> None:
    """The ``quotes`` command's own arguments (``cli.py`` adds the connection and logging
    flags every command shares)."""
    quotes.add_argument("symbols", nargs="*", metavar="SYMBOL", help="quotes of these contracts")
    quotes.add_argument(
        "--dom", action="append", default=[], metavar="SYMBOL", help="DOM of SYMBOL (repeatable)"
    )
    quotes.add_argument(
        "--chart",
        action="append",
        default=[],
        metavar="SYMBOL",
        help="minute bars of SYMBOL (repeatable)",
    )
    quotes.add_argument("--md-url", help="market-data websocket URL (default: Tradovate's)")


def _plain(value: Any) -> Any:
    """JSON-ready form of a market-data value (orjson's ``default``)."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    raise TypeError(type(value).__name__)


def update_line(update: Update) -> str:
    """One JSON line for ``update``: its kind, symbol, gap flag and typed value."""
    value = update.value
    payload: dict[str, Any] = {
        "type": "eoh" if isinstance(value, EndOfHistory) else type(value).__name__.lower(),
        "kind": update.key.kind.value,
        "symbol": update.key.symbol,
    }
    if update.gap:
        payload["gap"] = True
    if not isinstance(value, EndOfHistory):
        payload["value"] = value
    return (
        orjson.dumps(payload, default=_plain, option=orjson.OPT_PASSTHROUGH_DATACLASS).decode()
        + "\n"
    )


def summary(update: Update) -> str:
    """One human line for the live table: the latest of one subscription."""
    value = update.value
    name = f"{update.key.kind.value:9} {update.key.symbol!s:10}"
    if isinstance(value, Quote):
        bid, offer, trade = value.bid, value.offer, value.trade
        return (
            f"{name} bid {_price(bid)} x {_size(bid)}  offer {_price(offer)} x {_size(offer)}"
            f"  last {_price(trade)}"
        )
    if isinstance(value, Dom):
        best_bid = value.bids[0].price if value.bids else None
        best_offer = value.offers[0].price if value.offers else None
        return f"{name} best bid {best_bid}  best offer {best_offer}  ({len(value.bids)} levels)"
    if isinstance(value, Bar):
        ohlc = f"O {value.open:g} H {value.high:g} L {value.low:g} C {value.close:g}"
        return f"{name} {value.timestamp:%H:%M} {ohlc}"
    if isinstance(value, EndOfHistory):
        return f"{name} history complete"
    return f"{name} {type(value).__name__}"


def _price(entry: Any) -> str:
    return "-" if entry is None or entry.price is None else f"{entry.price:g}"


def _size(entry: Any) -> str:
    return "-" if entry is None or entry.size is None else f"{entry.size:g}"


#: Redraw the live table at most this often (seconds).
REDRAW = 0.25


def subscriptions_for(
    md: MarketDataFeed, symbols: Sequence[str], doms: Sequence[str], charts: Sequence[str]
) -> list[Subscription]:
    subs = [md.quotes(_symbol(s)) for s in symbols]
    subs += [md.dom(_symbol(s)) for s in doms]
    spec = ChartSpec("MinuteBar", 1, "UnderlyingUnits", as_much_as_elements=60)
    subs += [md.chart(_symbol(s), spec) for s in charts]
    return subs


def _symbol(text: str) -> str | int:
    return int(text) if text.isdigit() else text


async def run_quotes(
    config: EngineConfig,
    symbols: Sequence[str],
    doms: Sequence[str],
    charts: Sequence[str],
    out: TextIO,
    *,
    stop_signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    until: Callable[[int], bool] | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Print every update of the asked subscriptions; see the module docstring.

    ``until(lines)`` (tests) stops after a number of update lines. When ``out`` is a terminal
    the updates are shown as a live table (one row per subscription) instead of JSON lines.
    """
    from .cli import stopped_status, wait_for_stop

    printed = 0
    table = out.isatty()
    #: The live table's rows, per subscription in the order asked (not in the order their
    #: first values happen to arrive), then by key.
    rows: list[dict[Any, str]] = []
    drawn_at = -REDRAW
    config = replace(config, market_data=True, user_sync=False)
    async with trio.open_nursery() as nursery, open_engine(config) as engine:
        transitions = engine.watch_transitions()
        md = engine.market_data
        assert md is not None
        subs = subscriptions_for(md, symbols, doms, charts)

        async def print_transitions() -> None:
            async for record in transitions:
                if not table:
                    line = {"type": "transition", **record.as_dict()}
                    out.write(orjson.dumps(line).decode() + "\n")
                    out.flush()

        async def print_updates(subscription: Subscription, mine: dict[Any, str]) -> None:
            nonlocal printed
            try:
                async for update in subscription:
                    nonlocal drawn_at
                    printed += 1
                    if table:
                        mine[update.key] = summary(update)
                        if trio.current_time() - drawn_at >= REDRAW:
                            drawn_at = trio.current_time()
                            lines = [line for own in rows for line in own.values()]
                            out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
                            out.flush()
                    else:
                        out.write(update_line(update))
                        out.flush()
                    if until is not None and until(printed):
                        nursery.cancel_scope.cancel()
            except SubscriptionRefused as exc:
                err.write(f"trio-tradovate: {exc}\n")

        async def stop_with_the_engine() -> None:
            with suppress(EngineStopped):
                await engine.wait_for(State.STOPPED)
            nursery.cancel_scope.cancel()

        nursery.start_soon(print_transitions)
        for subscription in subs:
            rows.append({})
            nursery.start_soon(print_updates, subscription, rows[-1])
        nursery.start_soon(stop_with_the_engine)
        await wait_for_stop(stop_signals)
    return stopped_status(engine, err)


def quotes_body(
    args: argparse.Namespace, env: Mapping[str, str], out: TextIO
) -> Callable[[], Awaitable[int]]:
    """What ``quotes`` runs for parsed ``args``, checked now: a configuration error is raised
    here (``ConfigError``, one line and exit 2), before anything connects. The command line
    runs it under ``cli.until_stopped`` (a signal stops it with exit 0)."""
    from .cli import config_from_env
    from .errors import ConfigError

    if not (args.symbols or args.dom or args.chart):
        raise ConfigError("name at least one SYMBOL, --dom SYMBOL or --chart SYMBOL")
    config = config_from_env(args, env)
    if args.md_url:
        config = replace(config, md_url=args.md_url)
    # the signals are cli.until_stopped's: it cancels the run, which leaves like any exit
    return partial(run_quotes, config, args.symbols, args.dom, args.chart, out, stop_signals=())


class QuoteBoard:
    """The latest quote of a few subscriptions, as one line each (``make demo``)."""

    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        self._subscriptions = subscriptions
        self._latest: dict[Subscription, Any] = {}

    def lines(self) -> str:
        text = []
        for subscription in self._subscriptions:
            with suppress(trio.WouldBlock):
                self._latest[subscription] = subscription.receive_nowait().value
            quote = self._latest.get(subscription)
            bid = getattr(getattr(quote, "bid", None), "price", None)
            offer = getattr(getattr(quote, "offer", None), "price", None)
            stale = " (stale)" if subscription.status.stale else ""
            text.append(f"  {subscription.key.symbol}: bid {bid} / offer {offer}{stale}\n")
        return "".join(text)


__all__ = ["QuoteBoard", "add_arguments", "quotes_body", "run_quotes", "update_line"]
