"""A fault-injecting TCP proxy on 127.0.0.1: network faults against any server.

The simulator can drop, stall and delay its own sockets, but a real Tradovate server will not
do that on request. To judge reconnection and heartbeat timeouts against ``demo`` (Stage 2
asks for both), the engine connects through this proxy, which forwards bytes both ways and,
on command, breaks the path the way networks do:

- :meth:`NetworkFaults.drop`: every connection through it is cut at once (both sides
  closed; no websocket close, no ``c`` frame), as when a NAT or a Wi-Fi link goes;
- :meth:`NetworkFaults.silence`: half-open silence. Nothing from the server reaches the
  engine (held, then delivered in order when the silence ends, as TCP retransmits), while the
  engine's bytes still reach the server;
- :meth:`NetworkFaults.delay`: every chunk, both ways, is delivered ``seconds`` late (latency,
  not reordering).

The forwarding core, :func:`splice`, works on any two trio streams, so the same code runs
in two places: :class:`FaultProxy` on a real loopback port (the engine's stream is TCP, TLS
is end to end through it), and :class:`SplicingConnector` over in-memory streams under a
virtual clock, which is how the simulator target injects the same faults deterministically.
The proxy only listens on loopback and only forwards to the one upstream it was given.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio
import trio.testing

from .transport import Connector, start_tls

__all__ = [
    "FaultProxy",
    "NetworkFaults",
    "ProxyConnector",
    "SplicingConnector",
    "open_fault_proxy",
    "splice",
]

logger = logging.getLogger("trio_tradovate.proxy")

_CHUNK = 65536
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(eq=False)
class _Path:
    """One proxied connection: its cancel scope, and when it is gone."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


class NetworkFaults:
    """The faults every connection through a proxy (or a splicing connector) suffers now.

    ``injected`` counts what was applied, by kind, for the report.
    """

    def __init__(self) -> None:
        self._paths: list[_Path] = []
        self._silent = False
        self._resumed = trio.Event()
        self.latency = 0.0
        self.injected: dict[str, int] = {}
        self.connections = 0

    def __repr__(self) -> str:
        return (
            f"<NetworkFaults open={len(self._paths)} silent={self._silent} "
            f"latency={self.latency:g}>"
        )

    @property
    def open_connections(self) -> int:
        return len(self._paths)

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    async def drop(self) -> None:
        """Cut every open connection now; returns when they are gone."""
        self._count("drop")
        paths = list(self._paths)
        for path in paths:
            path.scope.cancel()
        for path in paths:
            await path.done.wait()

    def silence(self, on: bool = True) -> None:
        """Hold everything the server sends (half-open) until called with ``False``."""
        if on and not self._silent:
            self._count("silence")
        self._silent = on
        if not on:
            self._resumed.set()
            self._resumed = trio.Event()

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` late from now on (0 restores)."""
        if seconds < 0:
            raise ValueError("a delay is >= 0 s")
        if seconds > 0:
            self._count("delay")
        self.latency = seconds

    async def _wait_unsilenced(self) -> None:
        while self._silent:
            await self._resumed.wait()


async def _pump(
    source: trio.abc.Stream,
    sink: trio.abc.Stream,
    faults: NetworkFaults,
    *,
    from_server: bool,
) -> None:
    """Forward ``source`` to ``sink``, each chunk held for the latency in force when it was
    read (and, from the server, for as long as the path is silent)."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](64)

    async def read() -> None:
        async with send:
            while True:
                data = await source.receive_some(_CHUNK)
                if not data:
                    return
                await send.send((trio.current_time() + faults.latency, bytes(data)))

    async def write() -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                if from_server:
                    await faults._wait_unsilenced()
                await sink.send_all(data)
        # the source ended: pass the end on (half-close where the stream allows it)
        await trio.aclose_forcefully(sink)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)


async def splice(client: trio.abc.Stream, upstream: trio.abc.Stream, faults: NetworkFaults) -> None:
    """Forward between the engine's side and the server's side until either ends or the
    faults drop the path; both streams are closed on return. Never raises an I/O error."""
    path = _Path()
    faults._paths.append(path)
    faults.connections += 1
    try:
        with path.scope:
            async with trio.open_nursery() as nursery:

                async def both_ways(
                    source: trio.abc.Stream, sink: trio.abc.Stream, from_server: bool
                ) -> None:
                    try:
                        await _pump(source, sink, faults, from_server=from_server)
                    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        logger.debug("proxy path ended: %r", exc)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(both_ways, client, upstream, False)
                nursery.start_soon(both_ways, upstream, client, True)
    finally:
        faults._paths.remove(path)
        path.done.set()
        # both closed even while the proxy itself is being cancelled (a checkpoint inside
        # the first close would otherwise skip the second)
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)


class SplicingConnector:
    """A connector that reaches ``inner`` through :func:`splice` over in-memory streams, so
    network faults apply in virtual time (the simulator target's proxy)."""

    def __init__(self, inner: Connector, faults: NetworkFaults, nursery: trio.Nursery) -> None:
        self._inner = inner
        self._faults = faults
        self._nursery = nursery

    def __repr__(self) -> str:
        return f"<SplicingConnector {self._faults!r}>"

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        upstream = await self._inner(host, port, tls=tls)
        engine_side, proxy_side = trio.testing.memory_stream_pair()
        self._nursery.start_soon(splice, proxy_side, upstream, self._faults)
        return engine_side


@dataclass(frozen=True)
class FaultProxy:
    """A running proxy: where it listens, where it forwards, and its fault controls."""

    host: str
    port: int
    upstream_host: str
    upstream_port: int
    faults: NetworkFaults


async def _serve(
    upstream_host: str,
    upstream_port: int,
    faults: NetworkFaults,
    open_upstream: Callable[[str, int], Awaitable[trio.abc.Stream]],
    client: trio.SocketStream,
) -> None:
    upstream: trio.abc.Stream | None = None
    try:
        upstream = await open_upstream(upstream_host, upstream_port)
    except OSError as exc:
        logger.warning("proxy could not reach %s:%d: %s", upstream_host, upstream_port, exc)
    finally:
        if upstream is None:  # refused, or cancelled while connecting: the handler owns it
            await trio.aclose_forcefully(client)
    if upstream is not None:
        await splice(client, upstream, faults)


@asynccontextmanager
async def open_fault_proxy(
    upstream_host: str,
    upstream_port: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: NetworkFaults | None = None,
) -> AsyncIterator[FaultProxy]:
    """Listen on loopback ``host:port`` (0 picks one) and forward every connection to
    ``upstream_host:upstream_port`` until the block ends.

    Raises:
        ValueError: ``host`` is not a loopback address (the proxy is a test tool).
    """
    if host not in _LOOPBACK:
        raise ValueError(f"the fault proxy listens on loopback only, not {host!r}")
    faults = faults or NetworkFaults()
    handler = partial(_serve, upstream_host, upstream_port, faults, trio.open_tcp_stream)
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, handler, port, host=host)
        )
        bound = int(listeners[0].socket.getsockname()[1])
        try:
            yield FaultProxy(host, bound, upstream_host, upstream_port, faults)
        finally:
            nursery.cancel_scope.cancel()


class ProxyConnector:
    """The engine's connector when a proxy stands in front of the server: TCP to the proxy,
    then (for ``wss``) TLS end to end with the real host name, so certificates are checked
    against the server and the proxy sees only ciphertext."""

    def __init__(self, proxy: FaultProxy, ssl_context: ssl.SSLContext | None = None) -> None:
        self._proxy = proxy
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"<ProxyConnector via {self._proxy.host}:{self._proxy.port}>"

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(self._proxy.host, self._proxy.port)
        if not tls:
            return stream
        return await start_tls(stream, host, self._ssl_context)
