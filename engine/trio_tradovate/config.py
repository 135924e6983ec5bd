"""Engine configuration: every knob with its default, validated before anything runs.

Defaults follow docs/protocol.md §12 ("Recommended defaults"); where sources disagree the
value is a field, so a user can follow whichever source turns out right.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .replay import REPLAY_URL, ReplayOptions
from .scheduler import DEFAULT_LIMITS, Window
from .subscriptions import StaleConfig

if TYPE_CHECKING:
    # Types only: a config can be built, validated and inspected without loading the I/O
    # stack (httpx, and trio through the transport), like every sans-I/O module.
    import httpx

    from .transport import Connector

#: REST bases (docs/protocol.md §1). The websocket URL is the REST base with ``wss:`` and
#: ``/websocket`` appended, exactly as the official C# client builds it.
ENVIRONMENTS: dict[str, str] = {
    "demo": "https://demo.tradovateapi.com/v1",
    "live": "https://live.tradovateapi.com/v1",
}

#: The market-data websocket: one host for demo and live (P-ENV, P-CHEAT).
MARKET_DATA_URL = "wss://md.tradovateapi.com/v1/websocket"

#: The websocket layers an engine can run on (``EngineConfig.websocket_layer``), the default
#: first. ``transport.LINK_CLASSES`` maps each to its link; this module stays free of them.
WEBSOCKET_LAYERS = ("websockets", "trio-websocket")

MAX_HEARTBEAT_INTERVAL = 30.0  # Stage 2: "Heartbeat: Send heartbeats every 30 seconds" at most


def websocket_url_for(rest_url: str) -> str:
    """``https://host/v1`` -> ``wss://host/v1/websocket`` (and ``http`` -> ``ws``)."""
    parts = urlsplit(rest_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ConfigError(f"rest_url must be an http(s) URL like {ENVIRONMENTS['demo']!r}")
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/websocket"


@dataclass(frozen=True)
class Credentials:
    """What ``POST /auth/accesstokenrequest`` needs (docs/protocol.md §9).

    ``password`` and ``sec`` never appear in ``repr``.
    """

    username: str
    password: str = field(repr=False)
    app_id: str | None = None
    app_version: str = "1.0"
    cid: int | str | None = None
    sec: str | None = field(default=None, repr=False)
    device_id: str | None = None

    def __post_init__(self) -> None:
        if not self.username:
            raise ConfigError("Credentials.username is empty: set TRADOVATE_USERNAME")
        if not self.password:
            raise ConfigError("Credentials.password is empty: set TRADOVATE_PASSWORD")

    def request_body(self) -> dict[str, Any]:
        """The JSON body of the token request; optional fields only when set."""
        body: dict[str, Any] = {"name": self.username, "password": self.password}
        optional = {
            "appId": self.app_id,
            "appVersion": self.app_version,
            "cid": self.cid,
            "sec": self.sec,
            "deviceId": self.device_id,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with equal jitter, a cap, and a reset only after a stable period.

    Attempt ``n`` (0-based, counted since the last stable connection) waits a uniformly random
    time in ``[c/2, c]`` with ``c = min(cap, initial * factor**n)``: the jitter keeps a fleet of
    clients from retrying in lockstep, and the floor of ``c/2`` bounds the attempt rate
    whatever the server does (attempts at least ``cap/2`` apart once the cap is reached). The
    counter resets only after a connection stayed live for ``stable_after`` seconds, so a
    server that accepts and then drops every socket still sees growing delays, not a storm
    (tradovate/api #20). The first attempt after a stable connection ends (also after a
    ``Maintenance`` shutdown) comes within ``after_live_cap`` seconds (Stage 2: reconnect
    within 10 s). ``retry_budget`` (``None`` = retry forever) bounds consecutive failed
    attempts; when it runs out the socket stops with the reason, never silently.
    """

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    stable_after: float = 60.0
    retry_budget: int | None = None
    #: The first attempt after a stable connection ends comes within this many seconds
    #: (Stage 2: "attempt reconnection within 10 seconds").
    after_live_cap: float = 10.0
    #: Wait after a ``shutdown`` event, by reasonCode, instead of the backoff. Only the quota
    #: codes are here by default: another connection now would evict one of the user's own
    #: sessions, so these are the documented exception to the 10 s rule. ``Maintenance``
    #: and other codes use the backoff (first attempt within ``after_live_cap``).
    shutdown_delays: Mapping[str, float] = field(
        default_factory=lambda: {
            "ConnectionQuotaReached": 900.0,
            "IPQuotaReached": 1800.0,
        }
    )
    #: Wait after a ``shutdown`` whose reasonCode is not in ``shutdown_delays`` (0: the
    #: backoff decides).
    default_shutdown_delay: float = 0.0

    def __post_init__(self) -> None:
        if not (self.initial > 0 and math.isfinite(self.initial)):
            raise ConfigError(f"BackoffPolicy.initial must be > 0 s, got {self.initial!r}")
        if self.factor < 1:
            raise ConfigError(f"BackoffPolicy.factor must be >= 1, got {self.factor!r}")
        if self.cap < self.initial:
            raise ConfigError(f"BackoffPolicy.cap ({self.cap}) must be >= initial ({self.initial})")
        if self.stable_after < 0:
            raise ConfigError("BackoffPolicy.stable_after must be >= 0 s")
        if self.retry_budget is not None and self.retry_budget < 1:
            raise ConfigError("BackoffPolicy.retry_budget must be >= 1 or None (retry forever)")
        if not (self.after_live_cap > 0 and math.isfinite(self.after_live_cap)):
            raise ConfigError("BackoffPolicy.after_live_cap must be a positive number of seconds")
        delays = [*self.shutdown_delays.values(), self.default_shutdown_delay]
        if any(not (d >= 0 and math.isfinite(d)) for d in delays):
            raise ConfigError("BackoffPolicy shutdown delays must be finite and >= 0 s")

    def shutdown_delay(self, reason_code: str) -> float:
        """The minimum wait after a ``shutdown`` event with ``reason_code``."""
        return self.shutdown_delays.get(reason_code, self.default_shutdown_delay)

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` may wait."""
        return min(self.cap, self.initial * self.factor ** min(attempt, 64))


SHARDING_KEYS = ("modAccountId", "modUserId")


@dataclass(frozen=True)
class SyncOptions:
    """The body of the one ``user/syncrequest`` per socket (docs/protocol.md §6).

    With nothing set, the engine sends ``{"users": [<the logged-in user>]}``, as Tradovate's
    retail examples do. The combinations Tradovate's sync guide forbids (P-SYNC: ``users``
    with ``entityTypes`` or a sharding expression; ``accounts`` with a sharding expression)
    are refused here, before anything is sent.

    ``split_responses`` asks for the snapshot in parts; Tradovate documents no end marker, so
    the engine treats the snapshot as complete once ``split_quiet`` seconds pass without a
    new part (see ``docs/state-recovery.md``). ``extra`` passes any other documented field
    (``cutoffTimestamp``, ``fullOrgSnapshot``) through unchanged.
    """

    users: tuple[int, ...] | None = None
    accounts: tuple[int, ...] | None = None
    entity_types: tuple[str, ...] | None = None
    split_responses: bool = False
    split_quiet: float = 0.5
    #: ``(expressionType, divisor, remainder)``; set per socket by a sharded engine.
    sharding: tuple[str, int, int] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("users", "accounts"):
            ids = getattr(self, name)
            if ids is not None and (
                not ids or any(not isinstance(i, int) or isinstance(i, bool) for i in ids)
            ):
                raise ConfigError(f"SyncOptions.{name} must be a non-empty tuple of int ids")
        if self.entity_types is not None and (
            not self.entity_types or any(not t or not isinstance(t, str) for t in self.entity_types)
        ):
            raise ConfigError("SyncOptions.entity_types must be non-empty names like 'order'")
        if self.users is not None and self.entity_types is not None:
            raise ConfigError(
                "Tradovate refuses users together with entityTypes (P-SYNC): use accounts=... "
                "with entity_types, or users without it"
            )
        if self.sharding is not None:
            if self.users is not None or self.accounts is not None:
                raise ConfigError(
                    "Tradovate refuses users or accounts together with a sharding expression "
                    "(P-SYNC): leave both unset for a sharded sync"
                )
            if len(self.sharding) != 3:
                raise ConfigError("sharding is (expressionType, divisor, remainder)")
            key, divisor, remainder = self.sharding
            if key not in SHARDING_KEYS:
                raise ConfigError(f"sharding key must be one of {SHARDING_KEYS}, got {key!r}")
            if not (isinstance(divisor, int) and divisor >= 1 and 0 <= remainder < divisor):
                raise ConfigError("sharding needs divisor >= 1 and 0 <= remainder < divisor")
        if not (self.split_quiet > 0 and math.isfinite(self.split_quiet)):
            raise ConfigError("SyncOptions.split_quiet must be a positive number of seconds")
        reserved = {"users", "accounts", "entityTypes", "splitResponses", "shardingExpression"}
        if reserved & set(self.extra):
            raise ConfigError(
                f"SyncOptions.extra must not set {sorted(reserved & set(self.extra))}"
            )

    def body(self, user_id: int | None) -> dict[str, Any]:
        """The JSON body; ``user_id`` fills the default ``users`` list."""
        body: dict[str, Any] = dict(self.extra)
        if self.users is not None:
            body["users"] = list(self.users)
        if self.accounts is not None:
            body["accounts"] = list(self.accounts)
        if self.entity_types is not None:
            body["entityTypes"] = list(self.entity_types)
        if self.sharding is not None:
            key, divisor, remainder = self.sharding
            body["shardingExpression"] = {
                "expressionType": key,
                "divisor": divisor,
                "remainder": remainder,
            }
        if self.split_responses:
            body["splitResponses"] = True
        if not ({"users", "accounts", "entityTypes", "shardingExpression"} & set(body)):
            body["users"] = [user_id]
        return body


@dataclass(frozen=True)
class EngineConfig:
    """Everything :func:`trio_tradovate.open_engine` needs.

    Give either ``credentials`` (the engine logs in over REST and renews) or ``access_token``
    (the engine uses it as is; when the server rejects it the engine stops, since it cannot get
    another). ``user_id`` is learnt from the token response or ``GET /auth/me`` when not given.
    """

    rest_url: str = ENVIRONMENTS["demo"]
    ws_url: str | None = None
    credentials: Credentials | None = None
    access_token: str | None = field(default=None, repr=False)
    user_id: int | None = None
    #: The one ``user/syncrequest`` per socket (§6); default ``{"users": [user_id]}``.
    sync: SyncOptions = field(default_factory=SyncOptions)
    #: Sockets to spread the sync stream over (P-SYNC "socket sharding"); socket ``k`` sends
    #: ``shardingExpression {shard_by, divisor: shards, remainder: k}``.
    shards: int = 1
    shard_by: str = "modAccountId"
    heartbeat_interval: float = 2.5
    server_silence_timeout: float = 10.0
    connect_timeout: float = 5.0
    auth_timeout: float = 10.0
    sync_timeout: float = 60.0
    request_timeout: float = 10.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    #: The websocket implementation under the engine, one of :data:`WEBSOCKET_LAYERS`:
    #: ``"websockets"`` (the ``websockets`` sans-I/O protocol driven by the engine's own reader,
    #: the faster, see ``docs/architecture.md``) or ``"trio-websocket"``.
    websocket_layer: str = WEBSOCKET_LAYERS[0]
    #: Sync snapshots of large accounts are many MB: the libraries' 1 MiB default is too small.
    max_message_size: int = 64 * 1024 * 1024
    #: trio-websocket's queue of 1 and 4 KiB reads cap throughput (docs/architecture.md);
    #: the queue applies to trio-websocket only, the read size to both layers.
    message_queue_size: int = 64
    receive_buffer_size: int = 64 * 1024
    #: Capacity of the consumer channel of :meth:`Engine.events`.
    event_buffer: int = 1024
    #: Renew or re-login this long before ``expirationTime`` when (re)connecting.
    token_refresh_margin: float = 15 * 60
    #: Client-side pacing by endpoint (``"*"`` = every request); see ``docs/rate-limits.md``.
    rate_limits: Mapping[str, Sequence[Window]] = field(default_factory=lambda: DEFAULT_LIMITS)
    #: How long a captcha or 429 lockout lasts (Tradovate: "about an hour").
    lockout_seconds: float = 3600.0
    #: Where to save a running penalty pause or lockout, so a restart keeps honouring it.
    penalty_state_file: Path | None = None
    #: Where to keep the ids of fills already announced, so a restart never announces a fill
    #: twice (``None``: within one process only).
    checkpoint_file: Path | None = None
    #: Keep the garbage collector off snapshots: paused while a frame of 1 MiB or more is
    #: parsed and applied, ``gc.freeze()`` once such a snapshot is applied, ``gc.unfreeze()``
    #: and one collection when its connection ends (with several sockets: when the last one
    #: that froze ends; see ``collector.py``). Process-wide: turn it off if the application
    #: manages the collector itself.
    gc_discipline: bool = True
    #: How many transition records :attr:`Engine.transitions` keeps (the oldest go first).
    transition_log_size: int = 10_000
    #: Where to append every transition record as a JSON line (the full history).
    audit_file: Path | None = None
    #: Seed of the backoff jitter (``None``: from the OS). Tests pass one for reproducibility.
    seed: int | None = None
    #: The UTC wall clock that token expiry is judged by; a simulator passes its own.
    wall_clock: Callable[[], datetime] = field(
        default=lambda: datetime.now(UTC), repr=False, compare=False
    )
    #: Run a market-data socket beside the user socket (``engine.market_data``); see
    #: ``docs/market-data.md``. :func:`~trio_tradovate.open_market_data` sets it.
    market_data: bool = False
    #: Run the user-sync socket(s); :func:`~trio_tradovate.open_market_data` clears it.
    user_sync: bool = True
    #: The market-data websocket URL (default :data:`MARKET_DATA_URL`, demo and live alike).
    md_url: str | None = None
    #: Seconds without a value after which an active subscription is stale, per kind.
    md_stale: StaleConfig = field(default_factory=StaleConfig)
    #: Run the market-data socket as a replay socket (``replay_url``): the replay session is
    #: checked and its clock started before any market data (see ``docs/market-data.md``).
    replay: ReplayOptions | None = None
    #: The replay websocket URL (default :data:`~trio_tradovate.replay.REPLAY_URL`).
    replay_url: str | None = None
    connector: Connector | None = field(default=None, repr=False, compare=False)
    http_transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.credentials is None and not self.access_token:
            raise ConfigError(
                "no way to authenticate: give credentials=Credentials(...) or access_token=..."
            )
        websocket_url_for(self.rest_url)  # validates rest_url
        for name in ("ws_url", "md_url", "replay_url"):
            url = getattr(self, name)
            if url is None:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ConfigError(f"{name} must be a ws:// or wss:// URL, got {url!r}")
        if not (self.user_sync or self.market_data):
            raise ConfigError("no socket to run: set user_sync=True or market_data=True")
        if not isinstance(self.md_stale, StaleConfig):
            raise ConfigError("md_stale must be a StaleConfig(...)")
        if self.replay is not None and not isinstance(self.replay, ReplayOptions):
            raise ConfigError("replay must be a ReplayOptions(...)")
        if not 0 < self.heartbeat_interval <= MAX_HEARTBEAT_INTERVAL:
            raise ConfigError(
                f"heartbeat_interval must be in (0, {MAX_HEARTBEAT_INTERVAL:g}] s, "
                f"got {self.heartbeat_interval!r}; Tradovate expects 2.5"
            )
        for name in (
            "server_silence_timeout",
            "connect_timeout",
            "auth_timeout",
            "sync_timeout",
            "request_timeout",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.websocket_layer not in WEBSOCKET_LAYERS:
            allowed = ", ".join(repr(layer) for layer in WEBSOCKET_LAYERS)
            raise ConfigError(
                f"websocket_layer must be one of {allowed}, got {self.websocket_layer!r}"
            )
        for name in (
            "max_message_size",
            "message_queue_size",
            "event_buffer",
            "receive_buffer_size",
            "transition_log_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if not (self.lockout_seconds >= 0 and math.isfinite(self.lockout_seconds)):
            raise ConfigError("lockout_seconds must be a finite number of seconds >= 0")
        if "*" not in self.rate_limits:
            raise ConfigError("rate_limits needs a '*' entry (the budget every request shares)")
        if self.token_refresh_margin < 0:
            raise ConfigError("token_refresh_margin must be >= 0 s")
        if not isinstance(self.sync, SyncOptions):
            raise ConfigError("sync must be a SyncOptions(...)")
        if not (isinstance(self.shards, int) and self.shards >= 1):
            raise ConfigError(f"shards must be an int >= 1, got {self.shards!r}")
        if (
            self.shards == 1
            and self.sync.entity_types is not None
            and self.sync.accounts is None
            and self.sync.sharding is None
        ):
            raise ConfigError(
                "entity_types needs accounts=(...) on a single socket: Tradovate refuses "
                "users with entityTypes (P-SYNC), and a body with neither names nobody"
            )
        if self.shards > 1:
            if self.sync.sharding is not None:
                raise ConfigError("give shards=N, not SyncOptions.sharding: the engine sets it")
            if self.sync.users is not None or self.sync.accounts is not None:
                raise ConfigError(
                    "a sharded sync cannot name users or accounts (P-SYNC); "
                    "leave SyncOptions.users and .accounts unset"
                )
            if self.shard_by not in SHARDING_KEYS:
                raise ConfigError(f"shard_by must be one of {SHARDING_KEYS}")

    def sync_for_shard(self, index: int) -> SyncOptions:
        """The sync options of socket ``index`` of a sharded engine."""
        if self.shards == 1:
            return self.sync
        return replace(self.sync, sharding=(self.shard_by, self.shards, index))

    @property
    def market_data_url(self) -> str:
        """The market-data socket's URL: ``md_url`` (default :data:`MARKET_DATA_URL`), or for a
        replay ``replay_url`` (default ``REPLAY_URL``)."""
        if self.replay is not None:
            return self.replay_url or REPLAY_URL
        return self.md_url or MARKET_DATA_URL

    @property
    def websocket_url(self) -> str:
        """The websocket URL: ``ws_url`` if given, else derived from ``rest_url``."""
        return self.ws_url or websocket_url_for(self.rest_url)
