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
from contextlib import suppress
from typing import Protocol, cast

import trio
import trio_websocket

from .boundary import map_exceptions


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


class WebSocketLink:
    """One open websocket, as the supervisor sees it: receive, send, close.

    The seam between the engine and a websocket library (trio-websocket here). Whatever is
    below it, it keeps these promises: :meth:`receive` returns one whole message (``str`` for
    text, ``bytes`` for binary) or raises :class:`~trio_tradovate.errors.ClosedByServer` with
    the close code (1006 when the connection just dropped); :meth:`send` on a closed socket
    does nothing (the next :meth:`receive` says why it closed); :meth:`aclose` is polite,
    bounded in time, and done even when the caller is being cancelled.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(
        cls,
        nursery: trio.Nursery,
        stream: trio.abc.Stream,
        host: str,
        resource: str,
        *,
        max_message_size: int,
        message_queue_size: int,
        receive_buffer_size: int,
    ) -> WebSocketLink:
        """Run the websocket upgrade over ``stream`` (which the caller owns and closes)."""
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            cast(trio.SocketStream, stream),
            host,
            resource,
            message_queue_size=message_queue_size,
            max_message_size=max_message_size,
            receive_buffer_size=receive_buffer_size,
        )
        return cls(ws)

    async def receive_messages(self) -> list[str | bytes]:
        """The next messages: at least one, and every one that is already here, so a backed-up
        socket is drained in batches (trio-websocket hands them over one at a time).

        Raises:
            ~trio_tradovate.errors.ClosedByServer: as :meth:`receive`.
        """
        return [await self.receive()]

    async def receive(self) -> str | bytes:
        """The next message.

        Raises:
            ~trio_tradovate.errors.ClosedByServer: the websocket closed (code 1006 when no
                close frame came), mapped by :mod:`.boundary`.
        """
        with map_exceptions():  # trio_websocket.ConnectionClosed -> ClosedByServer
            return await self._ws.get_message()

    async def send(self, text: str) -> None:
        """Send one text message; nothing happens on a closed socket."""
        with suppress(trio_websocket.ConnectionClosed):
            await self._ws.send_message(text)

    async def aclose(self) -> None:
        """A polite close while the socket is up: bounded to 1 s, shielded from cancellation."""
        if self._ws.closed is not None:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 1.0
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._ws.aclose(1000, "Client initiated disconnect.")


#: Raised by the websocket library's own tasks when the upgrade is refused (HTTP 4xx/5xx):
#: they reach the caller through the nursery that runs them, not through :meth:`open`.
HANDSHAKE_ERRORS: tuple[type[BaseException], ...] = (trio_websocket.HandshakeError,)

#: What connecting and upgrading can raise below us (mapped to ``ConnectError`` by the caller).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    *HANDSHAKE_ERRORS,
)
