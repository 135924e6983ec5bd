"""Test helpers for applications: client-side faults at the transport seam.

The simulator (:mod:`trio_tradovate.sim`) plays every fault a *server* can cause. Faults that
happen before a server is ever reached (a name that does not resolve, a TLS handshake that
fails, a connect that hangs) live on the client side; :class:`ScriptedConnector` injects them
by wrapping any :class:`~trio_tradovate.transport.Connector`.

:func:`settle` is the step before comparing a client's state with the simulator's truth.
The pytest fixtures built on these are in :mod:`trio_tradovate.pytest_plugin`.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from typing import TYPE_CHECKING

import trio

from .transport import Connector

if TYPE_CHECKING:
    from .sim import Simulator

#: Fault kinds :meth:`ScriptedConnector.fail_next` understands.
CONNECT_FAULTS = ("dns", "tls", "timeout", "refused", "reset")


class ScriptedConnector:
    """A connector whose next attempts fail as scripted, then behave like ``inner``.

    Every attempt is recorded in :attr:`attempts` as ``(trio time, outcome)``.
    """

    def __init__(self, inner: Connector) -> None:
        self._inner = inner
        self._script: deque[str] = deque()
        self.attempts: list[tuple[float, str]] = []

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next ``times`` attempts fail with ``kind`` (see :data:`CONNECT_FAULTS`)."""
        if kind not in CONNECT_FAULTS:
            raise ValueError(f"unknown connect fault {kind!r}; use one of {CONNECT_FAULTS}")
        if times < 1:
            raise ValueError("times must be >= 1")
        self._script.extend([kind] * times)

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        kind = self._script.popleft() if self._script else "ok"
        self.attempts.append((trio.current_time(), kind))
        if kind == "dns":
            raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known: {host}")
        if kind == "tls":
            raise ssl.SSLCertVerificationError(
                1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (scripted)"
            )
        if kind == "timeout":
            await trio.sleep_forever()
        if kind == "refused":
            raise ConnectionRefusedError(111, "Connection refused (scripted)")
        if kind == "reset":
            raise ConnectionResetError(104, "Connection reset by peer (scripted)")
        return await self._inner(host, port, tls=tls)


async def settle(sim: Simulator, seconds: float = 1.0) -> None:
    """Pause ``sim``'s activity generator and let every frame in flight arrive.

    ``sim.truth()`` changes the moment the simulator mutates its world; the matching
    ``props`` frames reach the client a scheduler tick later. Compare a store (or a state
    rebuilt from ``events()``) with ``truth()`` only after this. ``seconds`` of trio time:
    instant under ``autojump_clock``.
    """
    sim.pause_activity()
    await trio.sleep(seconds)
