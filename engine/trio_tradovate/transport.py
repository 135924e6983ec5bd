"""The transport seam: how the engine gets a byte stream to a websocket server.

The engine never calls ``trio-websocket``'s URL helpers. It asks a :class:`Connector` for a
plain ``trio.abc.Stream`` (TCP, TCP+TLS, or an in-memory stream from the simulator), wraps it
with ``trio_websocket.wrap_client_stream`` and closes the stream itself on every exit path.
Owning the stream avoids trio-websocket 0.12.2 leaving the client socket open after a peer
close or a drop, and lets TLS and DNS failures surface as themselves instead of as a generic
``ConnectionTimeout`` (trio-websocket issue #165).
"""

from __future__ import annotations

from typing import Protocol

import trio


class Connector(Protocol):
    """Opens one byte stream to ``host:port``; ``tls`` asks for a TLS-wrapped stream.

    Implementations raise ``OSError`` (including ``socket.gaierror``), ``trio.BrokenResourceError``
    or ``ssl.SSLError``; the engine classifies those at one boundary (see ``errors``).
    """

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream: ...
