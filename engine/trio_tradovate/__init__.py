"""trio-tradovate: keep a Trio application connected to the Tradovate websocket API.

Start with :func:`open_engine` and :class:`EngineConfig`; read ``docs/`` for the guarantees.

The names below are loaded on first use (PEP 562), not when the package is imported: importing
a sans-I/O module such as ``trio_tradovate.protocol`` or ``trio_tradovate.errors`` must not
load trio, trio-websocket or httpx, and Python imports this package first whatever submodule
is asked for. ``from trio_tradovate import open_engine`` works exactly as before.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

# A library emits and leaves handling to the application: without this, Python's last-resort
# handler would print the engine's warnings to stderr for an application that configured
# nothing. No other package's logger is touched (see trio_tradovate/logs.py).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .config import ENVIRONMENTS, BackoffPolicy, Credentials, EngineConfig, SyncOptions
    from .delivery import ChangeStream
    from .endpoints import Endpoints, UserInfo
    from .engine import Engine, open_engine
    from .errors import (
        AuthenticationError,
        AuthenticationTimeout,
        CaptchaRequired,
        ClosedByServer,
        ConfigError,
        ConnectError,
        ConnectionLost,
        ConnectionRefused,
        ConnectTimeout,
        DNSError,
        EngineStopped,
        HandshakeRejected,
        InvalidTransition,
        LocalProtocolError,
        OrderError,
        OrderNotFilled,
        OrderNotPlaced,
        OrderRejected,
        OutcomeUnknown,
        Penalized,
        ProtocolError,
        RateLimited,
        RemoteProtocolError,
        RequestError,
        RequestTimeout,
        ServerShutdown,
        Stalled,
        SyncTimeout,
        Timeout,
        TLSError,
        TradovateError,
    )
    from .orders import Bracket, CommandResult, OrderHandle, Orders
    from .scheduler import MONEY_MOVING, Priority, Window
    from .statechart import State, TransitionRecord
    from .store import EntityChange, EntityStore
    from .transport import Connector, TcpConnector
    from .views import StoreViews

#: Which submodule defines each public name.
_SOURCES: dict[str, str] = {
    "AuthenticationError": "errors",
    "AuthenticationTimeout": "errors",
    "BackoffPolicy": "config",
    "CaptchaRequired": "errors",
    "ChangeStream": "delivery",
    "ClosedByServer": "errors",
    "ConfigError": "errors",
    "ConnectError": "errors",
    "ConnectTimeout": "errors",
    "ConnectionLost": "errors",
    "ConnectionRefused": "errors",
    "Connector": "transport",
    "Credentials": "config",
    "DNSError": "errors",
    "ENVIRONMENTS": "config",
    "Endpoints": "endpoints",
    "Engine": "engine",
    "EngineConfig": "config",
    "EngineStopped": "errors",
    "EntityChange": "store",
    "EntityStore": "store",
    "HandshakeRejected": "errors",
    "InvalidTransition": "errors",
    "LocalProtocolError": "errors",
    "MONEY_MOVING": "scheduler",
    "OrderError": "errors",
    "OrderNotFilled": "errors",
    "OrderNotPlaced": "errors",
    "OrderRejected": "errors",
    "Bracket": "orders",
    "CommandResult": "orders",
    "OrderHandle": "orders",
    "Orders": "orders",
    "OutcomeUnknown": "errors",
    "Penalized": "errors",
    "Priority": "scheduler",
    "ProtocolError": "errors",
    "RateLimited": "errors",
    "RemoteProtocolError": "errors",
    "RequestError": "errors",
    "RequestTimeout": "errors",
    "ServerShutdown": "errors",
    "Stalled": "errors",
    "State": "statechart",
    "StoreViews": "views",
    "SyncOptions": "config",
    "SyncTimeout": "errors",
    "TLSError": "errors",
    "TcpConnector": "transport",
    "Timeout": "errors",
    "TradovateError": "errors",
    "TransitionRecord": "statechart",
    "UserInfo": "endpoints",
    "Window": "scheduler",
    "open_engine": "engine",
}

__version__ = "0.1.0"

__all__ = [
    "ENVIRONMENTS",
    "MONEY_MOVING",
    "AuthenticationError",
    "AuthenticationTimeout",
    "BackoffPolicy",
    "Bracket",
    "CaptchaRequired",
    "ClosedByServer",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectionRefused",
    "CommandResult",
    "Connector",
    "Credentials",
    "DNSError",
    "Endpoints",
    "Engine",
    "EngineConfig",
    "EngineStopped",
    "ChangeStream",
    "EntityChange",
    "EntityStore",
    "HandshakeRejected",
    "InvalidTransition",
    "LocalProtocolError",
    "OrderError",
    "OrderHandle",
    "OrderNotFilled",
    "OrderNotPlaced",
    "OrderRejected",
    "Orders",
    "OutcomeUnknown",
    "Penalized",
    "Priority",
    "ProtocolError",
    "RateLimited",
    "RemoteProtocolError",
    "RequestError",
    "RequestTimeout",
    "ServerShutdown",
    "Stalled",
    "State",
    "StoreViews",
    "SyncOptions",
    "SyncTimeout",
    "TLSError",
    "TcpConnector",
    "Timeout",
    "TradovateError",
    "TransitionRecord",
    "UserInfo",
    "Window",
    "open_engine",
]


# Market data (docs/market-data.md), kept in one block so it merges apart from the above.
if TYPE_CHECKING:
    from .config import MARKET_DATA_URL as MARKET_DATA_URL
    from .errors import ReplayRefused as ReplayRefused
    from .errors import SubscriptionRefused as SubscriptionRefused
    from .marketdata import Bar as Bar
    from .marketdata import ClockTick as ClockTick
    from .marketdata import Dom as Dom
    from .marketdata import DomLevel as DomLevel
    from .marketdata import Histogram as Histogram
    from .marketdata import Quote as Quote
    from .marketdata import QuoteEntry as QuoteEntry
    from .marketdata import Tick as Tick
    from .mdsocket import MarketDataFeed as MarketDataFeed
    from .mdsocket import Subscription as Subscription
    from .mdsocket import SubscriptionStatus as SubscriptionStatus
    from .mdsocket import open_market_data as open_market_data
    from .mdsocket import open_replay as open_replay
    from .replay import ReplayOptions as ReplayOptions
    from .subscriptions import ChartSpec as ChartSpec
    from .subscriptions import EndOfHistory as EndOfHistory
    from .subscriptions import StaleConfig as StaleConfig
    from .subscriptions import SubKey as SubKey
    from .subscriptions import Update as Update

_MARKET_DATA = {
    "MARKET_DATA_URL": "config",
    "SubscriptionRefused": "errors",
    "Bar": "marketdata",
    "ClockTick": "marketdata",
    "Dom": "marketdata",
    "DomLevel": "marketdata",
    "Histogram": "marketdata",
    "Quote": "marketdata",
    "QuoteEntry": "marketdata",
    "Tick": "marketdata",
    "MarketDataFeed": "mdsocket",
    "Subscription": "mdsocket",
    "SubscriptionStatus": "mdsocket",
    "open_market_data": "mdsocket",
    "open_replay": "mdsocket",
    "ReplayOptions": "replay",
    "ReplayRefused": "errors",
    "ChartSpec": "subscriptions",
    "EndOfHistory": "subscriptions",
    "StaleConfig": "subscriptions",
    "SubKey": "subscriptions",
    "Update": "subscriptions",
}
_SOURCES.update(_MARKET_DATA)
__all__ += sorted(_MARKET_DATA)

if not TYPE_CHECKING:
    # Hidden from type checkers, which see the imports above: a typo in
    # ``from trio_tradovate import ...`` must stay a type error, not become ``Any``.

    def __getattr__(name: str) -> Any:
        """Import the submodule that defines ``name`` on first access, then cache the value."""
        module = _SOURCES.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
