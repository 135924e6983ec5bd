"""trio-tradovate: keep a Trio application connected to the Tradovate websocket API.

Start with :func:`open_engine` and :class:`EngineConfig`; read ``docs/`` for the guarantees.
"""

from .config import ENVIRONMENTS, BackoffPolicy, Credentials, EngineConfig, SyncOptions
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
from .scheduler import MONEY_MOVING, Priority, Window
from .statechart import State, TransitionRecord
from .store import EntityChange, EntityStore
from .transport import Connector, TcpConnector
from .views import StoreViews

__version__ = "0.1.0"

__all__ = [
    "ENVIRONMENTS",
    "MONEY_MOVING",
    "AuthenticationError",
    "AuthenticationTimeout",
    "BackoffPolicy",
    "CaptchaRequired",
    "ClosedByServer",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionLost",
    "ConnectionRefused",
    "Connector",
    "Credentials",
    "DNSError",
    "Engine",
    "EngineConfig",
    "EngineStopped",
    "EntityChange",
    "EntityStore",
    "HandshakeRejected",
    "InvalidTransition",
    "LocalProtocolError",
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
    "Window",
    "open_engine",
]
