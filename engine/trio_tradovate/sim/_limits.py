"""Penalty tickets, scripted HTTP 429s and rolling-window request limits (sans-I/O).

docs/protocol.md §8: a throttled request is *not handled*; instead the server answers
(HTTP 200 on REST, ``s:200`` on the websocket) with ``{"p-ticket", "p-time"[, "p-captcha"]}``.
The client waits ``p-time`` seconds and resends the same request with ``"p-ticket"`` added (on
the websocket with a new request id, §3 / JS EX-07a). A 429 (§8, P-RL-old) carries no ticket.

One :class:`RequestGate` per simulated environment decides, for every request, whether it is
executed, penalised or refused with 429. Deciding here (not in the REST or websocket code)
keeps both channels on the same rules and the same rolling windows, as Tradovate counts per
user/IP rather than per connection.

Choices where §8 is silent (documented so tests can rely on them):

* A ticket is single-use and bound to the endpoint that earned it; presenting it on another
  endpoint counts as a wrong ticket. A wrong, unknown or too-early ticket earns a fresh penalty
  (the old ticket is withdrawn), with the original ``p-time`` restarting from now.
* ``p-captcha`` tickets are never accepted by a resend: §8 says a captcha "cannot be solved by a
  3rd-party app", so a client that retries one is penalised again (with another captcha).
* A valid ticket lets its request through even if a rolling limit is still exceeded: that is
  what a ticket is for. Only executed requests count toward the rolling windows.
* ``authorize`` is a websocket handshake step, not a REST endpoint, and is never gated (the
  websocket session answers it before consulting the gate); the gate also keeps it out of the
  ``"*"`` limit and endpoint-less scripts should a caller route it here.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["Decision", "RequestGate", "Retry", "Ticket"]

Channel = Literal["rest", "ws"]
_BOTH: Final = frozenset({"rest", "ws"})
_EXEMPT_FROM_WILDCARD: Final = frozenset({"authorize"})


@dataclass(frozen=True)
class Ticket:
    """One outstanding penalty; ``value`` is opaque, random from the seeded RNG (not secret)."""

    value: str
    endpoint: str
    issued_at: float
    p_time: float
    captcha: bool

    def payload(self) -> dict[str, object]:
        """The ``d`` (websocket) or HTTP body (REST) of the penalty answer (§8)."""
        body: dict[str, object] = {"p-ticket": self.value, "p-time": self.p_time}
        if self.captcha:
            body["p-captcha"] = True
        return body


@dataclass(frozen=True)
class Retry:
    """What a request that presented a ``p-ticket`` got: ``elapsed`` is ``None`` when the
    ticket was unknown to the server."""

    ticket: str
    elapsed: float | None
    accepted: bool


@dataclass(frozen=True)
class Decision:
    """The gate's verdict for one request.

    ``kind`` is ``"execute"``, ``"penalty"`` (``ticket`` says which) or ``"429"``; ``reason``
    says why a penalty was issued: ``"script"``, ``"limit"`` or ``"retry"``.
    """

    kind: Literal["execute", "penalty", "429"]
    ticket: Ticket | None = None
    retry: Retry | None = None
    reason: str | None = None


@dataclass
class _Rule:
    """A scripted fault: skip ``skip`` matching requests, then hit the next ``times``."""

    endpoint: str | None
    skip: int
    times: int
    channels: frozenset[str] = _BOTH
    p_time: float = 0.0
    captcha: bool = False

    def matches(self, endpoint: str, channel: str) -> bool:
        if channel not in self.channels:
            return False
        if self.endpoint is None:
            return endpoint not in _EXEMPT_FROM_WILDCARD
        return self.endpoint == endpoint


@dataclass
class RequestGate:
    """Throttling state of one simulator. ``limits`` maps a lower-case endpoint (or ``"*"``
    for every endpoint) to ``(max requests, per seconds)``; ``limit_p_time`` is the ``p-time``
    of a penalty earned by exceeding one."""

    rng: random.Random
    limits: Mapping[str, tuple[int, float]]
    limit_p_time: float
    _tickets: dict[str, Ticket] = field(default_factory=dict)
    _penalty_rules: list[_Rule] = field(default_factory=list)
    _refusal_rules: list[_Rule] = field(default_factory=list)
    _windows: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.limits = {key.lower(): value for key, value in self.limits.items()}

    def __repr__(self) -> str:
        return (
            f"<RequestGate tickets={len(self._tickets)} scripts={len(self._penalty_rules)}"
            f"+{len(self._refusal_rules)}>"
        )

    # -- scripts ----------------------------------------------------------------------------

    def add_penalty(
        self,
        *,
        endpoint: str | None,
        nth: int | None,
        times: int,
        p_time: float,
        captcha: bool,
        channels: frozenset[str] = _BOTH,
    ) -> None:
        """Penalise the ``nth`` matching request from now (or the next one) and the
        ``times - 1`` matching requests after it."""
        if nth is not None and nth < 1:
            raise ValueError("nth counts from 1")
        if times < 1 or p_time < 0:
            raise ValueError("times must be >= 1 and p_time >= 0")
        skip = 0 if nth is None else nth - 1
        self._penalty_rules.append(
            _Rule(_lower(endpoint), skip, times, channels, p_time=p_time, captcha=captcha)
        )

    def add_429(self, *, endpoint: str | None, times: int) -> None:
        """Refuse the next ``times`` matching requests with 429 on either channel."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self._refusal_rules.append(_Rule(_lower(endpoint), 0, times))

    # -- the decision ----------------------------------------------------------------------

    def check(self, endpoint: str, channel: Channel, ticket: str | None, now: float) -> Decision:
        """Decide one request; ``endpoint`` is lower-case, ``ticket`` the presented
        ``p-ticket`` (if any). An executed request is counted toward the rolling windows."""
        if ticket is not None:
            known = self._tickets.pop(ticket, None)
            elapsed = now - known.issued_at if known is not None else None
            accepted = (
                known is not None
                and elapsed is not None
                and known.endpoint == endpoint
                and not known.captcha
                and elapsed >= known.p_time
            )
            retry = Retry(ticket, elapsed, accepted)
            if accepted:
                self._count(endpoint, now)
                return Decision("execute", retry=retry)
            p_time, captcha = (
                (known.p_time, known.captcha) if known is not None else (self.limit_p_time, False)
            )
            return self._penalize(endpoint, now, p_time, captcha, "retry", retry)
        if _fire(self._refusal_rules, endpoint, channel) is not None:
            return Decision("429")
        rule = _fire(self._penalty_rules, endpoint, channel)
        if rule is not None:
            return self._penalize(endpoint, now, rule.p_time, rule.captcha, "script", None)
        if self._exceeded(endpoint, now):
            return self._penalize(endpoint, now, self.limit_p_time, False, "limit", None)
        self._count(endpoint, now)
        return Decision("execute")

    def _penalize(
        self,
        endpoint: str,
        now: float,
        p_time: float,
        captcha: bool,
        reason: str,
        retry: Retry | None,
    ) -> Decision:
        value = f"{self.rng.getrandbits(128):032x}"
        ticket = Ticket(value, endpoint, now, p_time, captcha)
        self._tickets[value] = ticket
        return Decision("penalty", ticket=ticket, retry=retry, reason=reason)

    # -- rolling windows ----------------------------------------------------------------

    def _keys(self, endpoint: str) -> list[str]:
        keys = [endpoint] if endpoint in self.limits else []
        if "*" in self.limits and endpoint not in _EXEMPT_FROM_WILDCARD:
            keys.append("*")
        return keys

    def _exceeded(self, endpoint: str, now: float) -> bool:
        for key in self._keys(endpoint):
            most, per = self.limits[key]
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - per:
                window.popleft()
            if len(window) >= most:
                return True
        return False

    def _count(self, endpoint: str, now: float) -> None:
        for key in self._keys(endpoint):
            self._windows.setdefault(key, deque()).append(now)


def _lower(endpoint: str | None) -> str | None:
    return endpoint.strip("/").lower() if endpoint is not None else None


def _fire(rules: list[_Rule], endpoint: str, channel: str) -> _Rule | None:
    """Advance every matching script by one request; return the first that fires (it loses
    one of its ``times`` and is dropped when spent)."""
    fired: _Rule | None = None
    for rule in rules:
        if not rule.matches(endpoint, channel):
            continue
        if rule.skip > 0:
            rule.skip -= 1
        elif fired is None:
            fired = rule
            rule.times -= 1
    rules[:] = [rule for rule in rules if rule.times > 0]
    return fired
