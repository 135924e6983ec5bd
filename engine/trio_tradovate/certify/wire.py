"""The wire log: every websocket message the engine sent and received, secrets removed.

The certification run needs to see the conversation from the engine's side of the socket,
the way Tradovate's reviewers read a partner's logs: which ``authorize`` went out, how many
``user/syncrequest`` on each socket, the ``[]`` heartbeats and their times, the answers. The
engine offers no such hook, and must not (it is the hot path), so the log is taken at the
transport seam it does offer: a :class:`RecordingConnector` wraps any ``Connector`` and hands
the engine a stream that decodes RFC 6455 frames in both directions as the bytes pass.
The engine negotiates no extension (no permessage-deflate), so frames are plain.

Secrets: an ``authorize`` body is the access token, so it is replaced by ``<redacted>`` as
the frame is decoded and the token joins the :class:`Redactor`'s list; REST logins are
recorded by :class:`RecordingTransport` without bodies or headers, and the tokens they return
join the list too. Every file of the evidence pack passes through :meth:`Redactor.scrub`
last, so a secret that reached some text by another path is still removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import trio

from ..transport import Connector

REDACTED = "<redacted>"
#: Entries one scenario keeps; later ones are counted, not stored (a load test sends many).
MAX_ENTRIES = 5_000
#: Characters of one message kept in the log (a snapshot or a 2 MiB junk frame is cut).
MAX_TEXT = 600
_OPCODES = {0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}


class Redactor:
    """The secrets of one run, and the one place text is scrubbed of them."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def __repr__(self) -> str:
        return f"<Redactor secrets={len(self._secrets)}>"

    def add(self, secret: str | None) -> None:
        """Remember ``secret`` (too short a string would scrub ordinary text: ignored)."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced, longest first."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


@dataclass
class WireEntry:
    """One websocket message (or the handshake's first line)."""

    connection: int
    generation: int
    direction: str  # "out": engine to server; "in": server to engine
    kind: str
    time: float
    perf: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "generation": self.generation,
            "direction": self.direction,
            "kind": self.kind,
            "time": round(self.time, 6),
            "text": self.text
            if len(self.text) <= MAX_TEXT
            else f"{self.text[:MAX_TEXT]}... ({len(self.text)} characters)",
        }


@dataclass
class WireLog:
    """Everything one scenario's sockets carried, plus what measurements need."""

    redactor: Redactor
    entries: list[WireEntry] = field(default_factory=list)
    omitted: int = 0
    connections: int = 0
    #: When the engine asked for each connection (before DNS, TCP, TLS), trio time.
    started: dict[int, float] = field(default_factory=dict)
    #: When set, ``(entityType, id) -> perf_counter`` of the read that completed the latest
    #: ``props`` message about it (message-processing measurement).
    arrivals: dict[tuple[str, int], float] | None = None
    #: The engine's generation at the time a connection opens (set by the scenario).
    generation: Callable[[], int] = lambda: 0

    def add(self, entry: WireEntry) -> None:
        if len(self.entries) < MAX_ENTRIES:
            self.entries.append(entry)
        else:
            self.omitted += 1

    def out_requests(self, connection: int | None = None) -> list[tuple[int, str, str]]:
        """``(connection, endpoint, body)`` of every request frame the engine sent."""
        found = []
        for entry in self.entries:
            if entry.direction != "out" or entry.kind != "text" or "\n" not in entry.text:
                continue
            if connection is not None and entry.connection != connection:
                continue
            endpoint, _, rest = entry.text.partition("\n")
            body = rest.split("\n", 2)[2] if rest.count("\n") >= 2 else ""
            found.append((entry.connection, endpoint.strip().lower(), body))
        return found

    def heartbeats(self, connection: int) -> list[float]:
        """Times of the engine's ``[]`` heartbeats on one connection."""
        return [
            e.time
            for e in self.entries
            if e.connection == connection and e.direction == "out" and e.text == "[]"
        ]

    def opened(self, connection: int) -> float | None:
        """When the server's ``o`` reached the engine on ``connection``."""
        for e in self.entries:
            if e.connection == connection and e.direction == "in" and e.text == "o":
                return e.time
        return None


class _Decoder:
    """RFC 6455 frames out of one direction's bytes (after the HTTP head)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.head_done = False
        self.fragments: list[bytes] = []
        self.fragment_kind = "text"

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self.buffer += data
        out: list[tuple[str, bytes]] = []
        if not self.head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            self.head_done = True
            out.append(("handshake", head.split(b"\r\n", 1)[0]))
        while True:
            frame = self._frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode == 0x0:
                self.fragments.append(payload)
                if fin:
                    out.append((self.fragment_kind, b"".join(self.fragments)))
                    self.fragments = []
                continue
            kind = _OPCODES.get(opcode, f"opcode-{opcode}")
            if fin or opcode >= 0x8:
                out.append((kind, payload))
            else:
                self.fragment_kind, self.fragments = kind, [payload]

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, length = bool(buf[1] & 0x80), buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = int.from_bytes(buf[2:10], "big"), 10
        key = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            key, offset = bytes(buf[offset : offset + 4]), offset + 4
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return fin, opcode, payload


def redact_request(text: str, redactor: Redactor) -> str:
    """A client frame with an ``authorize`` body replaced (and remembered as a secret)."""
    endpoint, sep, rest = text.partition("\n")
    if not sep or endpoint.strip().lower() != "authorize":
        return redactor.scrub(text)
    parts = rest.split("\n", 2)
    if len(parts) == 3:
        token = parts[2]
        redactor.add(token)
        redactor.add(token.strip('"'))
        parts[2] = REDACTED
    return redactor.scrub(endpoint + "\n" + "\n".join(parts))


class _RecordingStream(trio.abc.Stream):
    """Passes bytes through unchanged and decodes a copy into the wire log."""

    def __init__(self, inner: trio.abc.Stream, log: WireLog, connection: int) -> None:
        self._inner = inner
        self._log = log
        self._connection = connection
        self._generation = log.generation()
        self._out = _Decoder()
        self._in = _Decoder()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._record("out", self._out, bytes(data), time.perf_counter())
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        if data:
            self._record("in", self._in, bytes(data), time.perf_counter())
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _record(self, direction: str, decoder: _Decoder, data: bytes, perf: float) -> None:
        now = trio.current_time()
        log = self._log
        for kind, payload in decoder.feed(data):
            if kind in ("text", "handshake"):
                text = payload.decode("utf-8", errors="replace")
                if direction == "out" and kind == "text":
                    text = redact_request(text, log.redactor)
                elif kind == "text" and log.arrivals is not None and text.startswith("a["):
                    _note_arrivals(text, perf, log.arrivals)
                    text = log.redactor.scrub(text)
                else:
                    text = log.redactor.scrub(text)
            elif kind == "close":
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                text = f"{code} {payload[2:].decode('utf-8', errors='replace')}".strip()
            else:
                text = f"<{len(payload)} bytes>"
            log.add(WireEntry(self._connection, self._generation, direction, kind, now, perf, text))


def _note_arrivals(text: str, perf: float, arrivals: dict[tuple[str, int], float]) -> None:
    try:
        messages = orjson.loads(text[1:])
    except orjson.JSONDecodeError:
        return
    if not isinstance(messages, list):
        return
    for message in messages:
        if not isinstance(message, dict) or message.get("e") != "props":
            continue
        data = message.get("d")
        if not isinstance(data, dict):
            continue
        entity, kind = data.get("entity"), data.get("entityType")
        for item in entity if isinstance(entity, list) else [entity]:
            if isinstance(item, dict) and isinstance(item.get("id"), int):
                arrivals[(str(kind), item["id"])] = perf


class RecordingConnector:
    """A connector whose streams are recorded into ``log`` (each a new ``connection``)."""

    def __init__(self, inner: Connector, log: WireLog) -> None:
        self._inner = inner
        self._log = log

    def __repr__(self) -> str:
        return f"<RecordingConnector connections={self._log.connections}>"

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        began = trio.current_time()
        stream = await self._inner(host, port, tls=tls)
        index = self._log.connections
        self._log.connections += 1
        self._log.started[index] = began
        return _RecordingStream(stream, self._log, index)


@dataclass(frozen=True)
class RestEntry:
    """One REST call: no body, query or header (they carry passwords and tokens)."""

    time: float
    method: str
    path: str
    status: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 6),
            "method": self.method,
            "path": self.path,
            "status": self.status,
        }


class RecordingTransport(httpx.AsyncBaseTransport):
    """Records REST calls without their bodies, and learns the tokens they hand out."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, redactor: Redactor, entries: list[RestEntry]
    ) -> None:
        self._inner = inner
        self._redactor = redactor
        self.entries = entries

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        path = request.url.path
        if "/auth/" in path:
            body = await response.aread()
            try:
                answer = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                answer = None
            if isinstance(answer, dict):
                for key in ("accessToken", "mdAccessToken"):
                    value = answer.get(key)
                    if isinstance(value, str):
                        self._redactor.add(value)
            authorization = request.headers.get("authorization", "")
            self._redactor.add(authorization.removeprefix("Bearer ").strip())
        self.entries.append(
            RestEntry(trio.current_time(), request.method, path, response.status_code)
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
