"""The market-replay clock of one replay socket (sans-I/O).

Public sources: Tradovate's API guide (https://api.tradovate.com, its replay operations
``replay/checkReplaySession``, ``replay/initializeClock``, ``replay/changeSpeed`` and the
``clock`` event) and ``websocket/ReplaySocket.js`` of
https://github.com/tradovate/example-api-trading-strategy.

* ``replay/checkReplaySession {startTimestamp}`` answers ``{"checkStatus": "OK"}`` when the
  simulator has market history at that time, else ``{"checkStatus": "Ineligible"}``.
* ``replay/initializeClock {startTimestamp, speed, initialBalance}`` starts the clock at
  ``startTimestamp`` running ``speed`` times faster than real time (0 to 400; 0 means stopped,
  the "throttled" state of the ``clock`` event) and answers ``{"ok": true}``.
* ``replay/changeSpeed {speed}`` re-anchors the clock at its current time with a new speed.
* ``clock`` events carry ``d`` as a JSON **string** ``{"t": <ISO time>, "s": <speed>}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = [
    "MAX_SPEED",
    "REPLAY_ENDPOINTS",
    "ReplayClock",
    "ReplayError",
    "handle_replay",
    "parse_speed",
    "parse_start",
]

#: Highest replay speed the guide documents.
MAX_SPEED: Final = 400
REPLAY_ENDPOINTS: Final = frozenset(
    {"replay/checkreplaysession", "replay/initializeclock", "replay/changespeed"}
)


class ReplayError(Exception):
    """Answer ``s:400`` with this text as ``d``."""


@dataclass
class ReplayClock:
    """Replay time = ``start + (now - anchor) * speed`` (seconds since the Unix epoch)."""

    start: float
    anchor: float
    speed: float
    initial_balance: float

    def wall(self, now: float) -> float:
        return self.start + (now - self.anchor) * self.speed

    def change_speed(self, speed: float, now: float) -> None:
        self.start = self.wall(now)
        self.anchor = now
        self.speed = speed

    def event(self, now: float) -> dict[str, Any]:
        """The ``clock`` event; ``d`` is JSON text, not an object."""
        moment = datetime.fromtimestamp(self.wall(now), UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        speed: float | int = int(self.speed) if float(self.speed).is_integer() else self.speed
        return {"e": "clock", "d": orjson.dumps({"t": text, "s": speed}).decode()}


def parse_start(request: dict[str, Any]) -> float:
    """``startTimestamp`` as seconds since the Unix epoch."""
    value = request.get("startTimestamp")
    if not isinstance(value, str):
        raise ReplayError("startTimestamp must be an ISO-8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReplayError(f"startTimestamp is not an ISO-8601 time: {value}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_speed(request: dict[str, Any]) -> float:
    value = request.get("speed")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ReplayError("speed must be a number")
    if not 0 <= value <= MAX_SPEED:
        raise ReplayError(f"speed must be between 0 and {MAX_SPEED}")
    return float(value)


def handle_replay(
    lower: str,
    request: dict[str, Any],
    clock: ReplayClock | None,
    *,
    history: tuple[float, float],
    now: float,
) -> tuple[dict[str, Any], ReplayClock | None]:
    """Answer one of :data:`REPLAY_ENDPOINTS`: ``(d, the socket's clock afterwards)``.

    ``history`` is the replayable span ``[first, last)`` of market time. Raises
    :class:`ReplayError` for a request to answer with ``s:400``."""
    if lower == "replay/checkreplaysession":
        start = parse_start(request)
        ok = history[0] <= start < history[1]
        return {"checkStatus": "OK" if ok else "Ineligible"}, clock
    speed = parse_speed(request)
    if lower == "replay/changespeed":
        if clock is None:
            raise ReplayError("Initialize the replay clock first")
        clock.change_speed(speed, now)
        return {"ok": True}, clock
    start = parse_start(request)
    balance = request.get("initialBalance", 0)
    if not isinstance(balance, (int, float)) or isinstance(balance, bool):
        raise ReplayError("initialBalance must be a number")
    if not history[0] <= start < history[1]:
        raise ReplayError("startTimestamp is outside the replayable history")
    return {"ok": True}, ReplayClock(start, now, speed, float(balance))
