"""Access tokens and login sessions (docs/protocol.md §9), sans-I/O.

A *session* is what one successful ``accesstokenrequest`` opens; ``renewaccesstoken`` adds a
token to the same session. At most ``max_sessions`` sessions live at once: opening another
evicts the oldest, whose tokens stop working (§9, P-ATR) and whose sockets the caller closes
(§13.14 "assume yes").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["AuthRegistry", "Token"]


@dataclass
class Token:
    """One issued token; the value itself is hidden from ``repr``."""

    value: str = field(repr=False)
    session_id: int
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class _Session:
    id: int
    created_at: float
    counted: bool
    evicted: bool = False


class AuthRegistry:
    """Issues and validates tokens; knows which session each token belongs to."""

    def __init__(self, *, rng: random.Random, lifetime: float, max_sessions: int) -> None:
        self._rng = rng
        self._lifetime = lifetime
        self._max_sessions = max_sessions
        self._tokens: dict[str, Token] = {}
        self._sessions: list[_Session] = []

    def __repr__(self) -> str:
        return f"<AuthRegistry tokens={len(self._tokens)} sessions={len(self._sessions)}>"

    def open_session(self, now: float, *, counted: bool = True) -> tuple[int, list[int]]:
        """Open a session; returns its id and the ids of sessions evicted to make room.

        ``counted=False`` sessions (tokens minted directly for tests) neither count toward nor
        get evicted by the two-session cap.
        """
        session = _Session(id=len(self._sessions) + 1, created_at=now, counted=counted)
        self._sessions.append(session)
        evicted: list[int] = []
        live = [s for s in self._sessions if s.counted and not s.evicted]
        while len(live) > self._max_sessions:
            oldest = live.pop(0)
            oldest.evicted = True
            evicted.append(oldest.id)
        return session.id, evicted

    def mint(self, session_id: int, now: float) -> Token:
        """A new token in ``session_id`` (random from the seeded RNG, so reproducible)."""
        value = "".join(
            self._rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            for _ in range(96)
        )
        token = Token(
            value=value, session_id=session_id, issued_at=now, expires_at=now + self._lifetime
        )
        self._tokens[value] = token
        return token

    def validate(self, value: str, now: float) -> Token | None:
        """The token if it is known, unexpired, not revoked and its session is alive."""
        token = self._tokens.get(value)
        if token is None or token.revoked or now >= token.expires_at:
            return None
        if self._sessions[token.session_id - 1].evicted:
            return None
        return token

    def expire_all(self) -> None:
        """Every token issued so far is expired from now on (fault control)."""
        for token in self._tokens.values():
            token.revoked = True
