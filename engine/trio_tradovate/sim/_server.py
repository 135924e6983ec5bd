"""A real loopback TCP server: REST and ``/v1/websocket`` on one port, as on
``demo.tradovateapi.com`` (docs/protocol.md §1), plus the market-data socket on
``/md/v1/websocket`` and the replay socket on ``/replay/v1/websocket`` (Tradovate gives each its
own host; one loopback host needs distinct paths). See :attr:`SimServer.md_url`.

Each accepted stream's HTTP request head is read here. A websocket upgrade is handed to
:meth:`Simulator.serve_stream` together with the bytes already read; anything else is answered
as one REST request and the connection is closed (``Connection: close``).

``POST /_sim/fault`` with a JSON body ``{"kind": ..., **params}`` is the control endpoint: it
runs :func:`~._faults.apply_fault` (see ``FAULT_KINDS``) and answers ``200 {"ok": true}`` or
``400 {"error": "..."}``. The ``/_sim/`` prefix cannot collide with Tradovate's ``/v1/`` paths.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus

import httpx
import orjson
import trio

from ._faults import FaultError, apply_fault
from ._simulator import Simulator

__all__ = ["SimServer", "open_simulator_server"]

logger = logging.getLogger("trio_tradovate.sim")

_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_CONTROL_PATH = "/_sim/fault"


@dataclass(frozen=True)
class SimServer:
    """Where a loopback simulator listens."""

    host: str
    port: int

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/websocket"

    @property
    def md_url(self) -> str:
        """The market-data socket (on Tradovate its own host, §1; here its own path)."""
        return f"ws://{self.host}:{self.port}/md/v1/websocket"

    @property
    def replay_url(self) -> str:
        """The market-replay socket (its own host on Tradovate, its own path here)."""
        return f"ws://{self.host}:{self.port}/replay/v1/websocket"


class _BadHttp(Exception):
    pass


async def _read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """Read until the blank line; returns (head, bytes after it)."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise _BadHttp("request head too large")
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise _BadHttp("connection closed before the request head ended")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise _BadHttp("bad request line") from exc
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadHttp("bad header line")
        headers.append((name.strip(), value.strip()))
    return method, target, headers


class _Handler:
    def __init__(self, sim: Simulator, host: str, port_box: list[int]) -> None:
        self._sim = sim
        self._host = host
        self._port_box = port_box

    async def __call__(self, stream: trio.SocketStream) -> None:
        try:
            if self._sim.refusing():
                return
            head, rest = await _read_head(stream)
            method, target, headers = _parse_head(head)
            lowered = {name.lower(): value for name, value in headers}
            if lowered.get("upgrade", "").lower() == "websocket":
                await self._sim.serve_stream(
                    stream, prefix=head + b"\r\n\r\n" + rest, host=lowered.get("host")
                )
                return
            await self._rest(stream, method, target, headers, lowered, rest)
        except (_BadHttp, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            logger.debug("loopback connection failed: %r", exc)
        except Exception:
            logger.exception("loopback handler failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _rest(
        self,
        stream: trio.SocketStream,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        lowered: dict[str, str],
        body: bytes,
    ) -> None:
        try:
            length = int(lowered.get("content-length", "0"))
        except ValueError as exc:
            raise _BadHttp("bad content-length") from exc
        if length > _MAX_BODY:
            raise _BadHttp("body too large")
        buffer = bytearray(body)
        while len(buffer) < length:
            chunk = await stream.receive_some(length - len(buffer))
            if not chunk:
                raise _BadHttp("connection closed mid-body")
            buffer += chunk
        url = f"http://{self._host}:{self._port_box[0]}{target}"
        request = httpx.Request(method, url, headers=headers, content=bytes(buffer[:length]))
        if request.url.path == _CONTROL_PATH:
            response = await self._control(request)
        else:
            response = await self._sim.handle_http(request)
        content = response.content
        reason = HTTPStatus(response.status_code).phrase
        lines = [f"HTTP/1.1 {response.status_code} {reason}"]
        lines.append(f"Content-Type: {response.headers.get('content-type', 'text/plain')}")
        lines += [f"Content-Length: {len(content)}", "Connection: close", "", ""]
        await stream.send_all("\r\n".join(lines).encode("latin-1") + content)

    async def _control(self, request: httpx.Request) -> httpx.Response:
        """The fault control endpoint (not part of Tradovate's API)."""
        if request.method != "POST":
            return _json_response(405, {"error": "use POST"})
        try:
            spec = orjson.loads(request.content)
        except orjson.JSONDecodeError as exc:
            return _json_response(400, {"error": f"invalid JSON: {exc}"})
        if not isinstance(spec, dict):
            return _json_response(400, {"error": "body must be a JSON object"})
        try:
            await apply_fault(self._sim, spec)
        except FaultError as exc:
            return _json_response(400, {"error": str(exc)})
        logger.info("control endpoint applied fault %r", spec.get("kind"))
        return _json_response(200, {"ok": True})


def _json_response(status: int, value: object) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(value), headers={"content-type": "application/json"}
    )


@asynccontextmanager
async def open_simulator_server(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[SimServer]:
    """Listen on ``host:port`` (0 = pick a free port) until the block exits."""
    port_box = [port]
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, _Handler(sim, host, port_box), port, host=host)
        )
        bound = int(listeners[0].socket.getsockname()[1])
        port_box[0] = bound
        try:
            yield SimServer(host=host, port=bound)
        finally:
            nursery.cancel_scope.cancel()
