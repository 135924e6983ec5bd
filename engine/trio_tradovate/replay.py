"""Market replay, sans-I/O: what a replay socket asks before its market data can flow.

Tradovate's replay socket (``wss://replay.tradovateapi.com/v1/websocket``; "Market Replay" in
Tradovate's API guide, https://api.tradovate.com) carries market-data requests once a replay
clock runs: ``replay/checkReplaySession {startTimestamp}`` answers ``checkStatus`` ``"OK"``
(or why not), ``replay/initializeClock {startTimestamp, speed, initialBalance}`` starts the
clock, and ``replay/changeSpeed {speed}`` changes it. The clock then reports itself in
``clock`` events whose ``d`` is a JSON *string* ``{"t": time, "s": speed}``; speed 0 means the
server throttled the replay, and ``changeSpeed`` resets it.

:class:`ReplayClock` lives as long as the engine: after a reconnect the clock is initialized
again from the last replay time the engine saw (not from the original start), at the speed
the application last asked for, so the replay resumes where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ConfigError
from .marketdata import ClockTick, format_time

#: The replay websocket: one host for demo and live (P-CHEAT).
REPLAY_URL = "wss://replay.tradovateapi.com/v1/websocket"

#: The fastest replay Tradovate accepts.
MAX_SPEED = 400


def _check_speed(speed: object) -> int:
    if isinstance(speed, bool) or not isinstance(speed, int) or not 0 <= speed <= MAX_SPEED:
        raise ConfigError(f"replay speed must be an int from 0 to {MAX_SPEED}, got {speed!r}")
    return speed


@dataclass(frozen=True)
class ReplayOptions:
    """Where a replay starts, how fast, and the replay account's starting balance."""

    start: datetime
    speed: int = 10
    initial_balance: float = 50_000.0

    def __post_init__(self) -> None:
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise ConfigError("ReplayOptions.start must be a timezone-aware datetime")
        _check_speed(self.speed)
        if not (isinstance(self.initial_balance, int | float) and self.initial_balance > 0):
            raise ConfigError("ReplayOptions.initial_balance must be a positive number")


class ReplayClock:
    """The replay's position and speed, across connections (see the module docstring)."""

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self.speed = options.speed
        #: The latest replay time a ``clock`` event reported.
        self.time: datetime | None = None
        self.throttled = False
        self._speed_pending = False

    def resume_at(self) -> datetime:
        """Where the next ``initializeClock`` starts: the last time seen, else the start."""
        return self.time or self.options.start

    def check_body(self) -> dict[str, Any]:
        return {"startTimestamp": format_time(self.resume_at())}

    def initialize_body(self) -> dict[str, Any]:
        return {
            "startTimestamp": format_time(self.resume_at()),
            "speed": self.speed,
            "initialBalance": self.options.initial_balance,
        }

    def initialized(self) -> None:
        """A new clock runs at :attr:`speed`: no change of speed is owed."""
        self._speed_pending = False

    def change_speed(self, speed: int) -> None:
        """Ask for ``speed`` (0 to 400); sent by the socket at its next opportunity."""
        self.speed = _check_speed(speed)
        self._speed_pending = True

    def take_speed_change(self) -> dict[str, Any] | None:
        """The ``changeSpeed`` body owed, once."""
        if not self._speed_pending:
            return None
        self._speed_pending = False
        return {"speed": self.speed}

    def seen(self, tick: ClockTick) -> None:
        self.time = tick.time
        self.throttled = tick.throttled


def check_answer(data: Any) -> str | None:
    """Why ``checkReplaySession`` refused, or ``None`` for ``checkStatus: "OK"``."""
    if isinstance(data, dict) and data.get("checkStatus") == "OK":
        return None
    if isinstance(data, dict):
        return str(data.get("checkStatus") or data.get("errorText") or "no checkStatus")[:200]
    return str(data)[:200]
