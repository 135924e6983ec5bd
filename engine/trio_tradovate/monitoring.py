"""A tiny HTTP server for ``/metrics`` and the health endpoints, on trio and h11.

Why not ``prometheus_client``'s own server: it runs in a thread, outside the engine's nursery,
so it outlives a stopped engine and its errors reach nobody. This one is a task of the
caller's nursery (``await nursery.start(serve_monitoring, ...)``), binds 127.0.0.1 by default,
answers one request per connection, and gives a slow client :data:`REQUEST_TIMEOUT` seconds.

Endpoints:

``GET /healthz/live``
    200 ``live`` while the engine runs; 503 and the reason once it stopped.
``GET /healthz/ready``
    200 ``live`` when every socket is live, no lockout runs and the token is valid (and,
    with ``max_staleness``, every feed delivered recently); else 503 and the reason.
``GET /metrics``
    the Prometheus text format, when a ``metrics`` callable is given (the ``metrics`` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import h11
import trio

from .health import EngineSnapshot

logger = logging.getLogger("trio_tradovate.monitoring")

#: Seconds a client gets to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
_MAX_REQUEST = 16 * 1024


async def serve_monitoring(
    snapshot: Callable[[], EngineSnapshot],
    port: int,
    *,
    host: str = "127.0.0.1",
    metrics: Callable[[], tuple[bytes, str]] | None = None,
    max_staleness: float | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the endpoints on ``host:port`` until cancelled; ``task_status`` gets the bound
    port (useful with ``port=0``).

    Raises:
        OSError: the port cannot be bound (in use, or not allowed).
    """
    handler = partial(_serve_one, snapshot, metrics, max_staleness)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = int(listeners[0].socket.getsockname()[1])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, handler, listeners))
        task_status.started(bound)


def answer(
    path: str,
    snapshot: Callable[[], EngineSnapshot],
    metrics: Callable[[], tuple[bytes, str]] | None,
    max_staleness: float | None = None,
) -> tuple[int, bytes, str]:
    """Status, body and content type for ``GET path`` (no I/O: tested directly)."""
    text = "text/plain; charset=utf-8"
    route = path.split("?", 1)[0]
    if route in ("/healthz/live", "/healthz/ready"):
        snap = snapshot()
        ok, reason = snap.live() if route == "/healthz/live" else snap.ready(max_staleness)
        return (200 if ok else 503), (reason + "\n").encode(), text
    if route == "/metrics" and metrics is not None:
        body, content_type = metrics()
        return 200, body, content_type
    return 404, b"not found: /metrics, /healthz/live, /healthz/ready\n", text


async def _serve_one(
    snapshot: Callable[[], EngineSnapshot],
    metrics: Callable[[], tuple[bytes, str]] | None,
    max_staleness: float | None,
    stream: trio.SocketStream,
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            request = await _read_request(connection, stream)
            if request is None:
                return
            text = "text/plain; charset=utf-8"
            if request.method not in (b"GET", b"HEAD"):
                status, body, content_type = 405, b"use GET\n", text
            else:
                path = request.target.decode("ascii", "replace")
                try:
                    status, body, content_type = answer(path, snapshot, metrics, max_staleness)
                except Exception:  # a bug must not take the engine down with its monitoring
                    logger.exception("monitoring could not answer %s", path)
                    status, body, content_type = 500, b"internal error (logged)\n", text
            headers = [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
            data = connection.send(h11.Response(status_code=status, headers=headers)) or b""
            if request.method != b"HEAD":
                data += connection.send(h11.Data(data=body)) or b""
            data += connection.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.debug("monitoring request failed: %r", exc)
    finally:
        await trio.aclose_forcefully(stream)


async def _read_request(
    connection: h11.Connection, stream: trio.SocketStream
) -> h11.Request | None:
    request: h11.Request | None = None
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(4096))
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None
