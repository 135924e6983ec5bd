"""A deliberately tiny protocol-level websocket client for simulator tests (not the engine).

It speaks the wire format of docs/protocol.md §2-§3 directly so that tests check the
simulator against the protocol reference, not against the engine's interpretation of it. It
lives in the package (rather than under ``tests/``) so that mypy and every test directory can
import it; it has no retry, reconnection or state logic on purpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from ._simulator import Simulator
from ._world import COLLECTIONS

__all__ = [
    "MD_HOST",
    "REPLAY_HOST",
    "USER_HOST",
    "RawClient",
    "State",
    "apply_events",
    "apply_snapshot",
    "open_raw",
    "open_raw_url",
]

State = dict[tuple[str, int], dict[str, Any]]


class RawClient:
    """Reads frames, keeps every event it saw, correlates responses by ``i``."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.events: list[dict[str, Any]] = []

    async def recv(self) -> str:
        message = await self.ws.get_message()
        assert isinstance(message, str)
        self.frames.append(message)
        return message

    async def send(self, text: str) -> None:
        await self.ws.send_message(text)

    async def request(self, endpoint: str, rid: int, query: str = "", body: str = "") -> None:
        await self.send(f"{endpoint}\n{rid}\n{query}\n{body}")

    async def response(self, rid: int) -> dict[str, Any]:
        """Read until the response to ``rid``; events on the way go to ``self.events``."""
        found: dict[str, Any] | None = None
        while found is None:
            frame = await self.recv()
            if frame.startswith("c"):
                raise AssertionError(f"closed while waiting for {rid}: {frame}")
            if not frame.startswith("a"):
                continue
            for message in orjson.loads(frame[1:]):
                if "e" in message:
                    self.events.append(message)
                elif message.get("i") == rid:
                    found = message
        return found

    async def call(
        self, endpoint: str, rid: int, query: str = "", body: str = ""
    ) -> dict[str, Any]:
        await self.request(endpoint, rid, query, body)
        return await self.response(rid)

    async def authorize(self, token: str, rid: int = 0) -> dict[str, Any]:
        return await self.call("authorize", rid, "", token)

    async def event(self, kind: str) -> dict[str, Any]:
        """The next event of ``kind`` (``"md"``, ``"chart"``, ``"clock"``, ...), taken from
        those already read (oldest first) or read now; other events stay in ``events``."""
        while True:
            for index, event in enumerate(self.events):
                if event.get("e") == kind:
                    return self.events.pop(index)
            frame = await self.recv()
            if frame.startswith("c"):
                raise AssertionError(f"closed while waiting for a {kind} event: {frame}")
            if frame.startswith("a"):
                self.events.extend(m for m in orjson.loads(frame[1:]) if "e" in m)

    async def until_closed(self) -> list[str]:
        """Frames received until the server closes the websocket."""
        seen: list[str] = []
        while True:
            try:
                seen.append(await self.recv())
            except ConnectionClosed:
                return seen


#: Hosts of the three sockets (docs/protocol.md §1); the simulator routes by host.
USER_HOST = "demo.tradovateapi.com"
MD_HOST = "md.tradovateapi.com"
REPLAY_HOST = "replay.tradovateapi.com"


@asynccontextmanager
async def open_raw(
    sim: Simulator, host: str = USER_HOST, *, heartbeat: float | None = None
) -> AsyncIterator[RawClient]:
    """One in-memory websocket to ``sim``; the ``o`` frame is consumed and checked.

    ``host`` picks the socket: :data:`USER_HOST` (default), :data:`MD_HOST` (market data)
    or :data:`REPLAY_HOST`. With ``heartbeat`` the client sends ``[]`` every that many
    seconds (§5), so the server's client-silence timeout never closes a long test."""
    stream = await sim.connector()(host, 443, tls=True)
    async with trio.open_nursery() as nursery:
        # trio-websocket annotates SocketStream/SSLStream but works over any trio Stream
        # (docs/protocol.md §15), including this in-memory one.
        ws = await wrap_client_stream(
            nursery, cast(trio.SocketStream, stream), host, "/v1/websocket"
        )
        client = RawClient(ws)
        try:
            assert await client.recv() == "o"
            if heartbeat is not None:
                nursery.start_soon(_beat, ws, heartbeat)
            yield client
        finally:
            with trio.move_on_after(2):
                await ws.aclose()
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def _beat(ws: WebSocketConnection, interval: float) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await trio.sleep(interval)
            await ws.send_message("[]")


@asynccontextmanager
async def open_raw_url(url: str) -> AsyncIterator[RawClient]:
    """A websocket over real TCP (loopback tests)."""
    async with open_websocket_url(url) as ws:
        client = RawClient(ws)
        assert await client.recv() == "o"
        yield client


def apply_snapshot(snapshot: dict[str, list[dict[str, Any]]]) -> State:
    """What a correct client holds after a sync reply (§6: upsert by (entityType, id))."""
    state: State = {}
    for plural, items in snapshot.items():
        for entity in items:
            state[(COLLECTIONS[plural], int(entity["id"]))] = entity
    return state


def apply_events(state: State, events: list[dict[str, Any]]) -> None:
    """Apply ``props`` events; ``entity`` may be one object or an array (§6)."""
    for event in events:
        if event["e"] != "props":
            continue
        data = event["d"]
        entities = data["entity"] if isinstance(data["entity"], list) else [data["entity"]]
        for entity in entities:
            key = (data["entityType"], int(entity["id"]))
            if data["eventType"] == "Deleted":
                state.pop(key, None)
            else:
                state[key] = entity
