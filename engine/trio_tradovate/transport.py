"""The transport seam: how the engine gets a byte stream to a websocket server.

The engine never calls ``trio-websocket``'s URL helpers. It asks a :class:`Connector` for a
plain ``trio.abc.Stream`` (TCP, TCP+TLS, or an in-memory stream from the simulator), wraps it
with ``trio_websocket.wrap_client_stream`` and closes the stream itself on every exit path.
Owning the stream avoids trio-websocket 0.12.2 leaving the client socket open after a peer
close or a drop, and lets TLS and DNS failures surface as themselves instead of as a generic
``ConnectionTimeout`` (trio-websocket issue #165).
"""

from __future__ import annotations

import ssl
from typing import Protocol

import trio


class Connector(Protocol):
    """Opens one byte stream to ``host:port``; ``tls`` asks for a TLS-wrapped stream.

    Implementations raise ``OSError`` (including ``socket.gaierror``), ``trio.BrokenResourceError``
    or ``ssl.SSLError``; the engine classifies those at one boundary (see ``errors``).
    """

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream: ...


class TcpConnector:
    """The real network: ``trio.open_tcp_stream``, then TLS with an explicit handshake.

    The handshake is done here, not lazily on first write, so a certificate or protocol failure
    is raised as ``ssl.SSLError`` while connecting instead of as a later, vaguer error.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(host, port)
        if not tls:
            return stream
        context = self._ssl_context or ssl.create_default_context()
        secure = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
        try:
            await secure.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return secure
