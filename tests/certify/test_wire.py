"""The wire recorder decodes RFC 6455 frames both ways and never keeps a token."""

from __future__ import annotations

import trio
import trio.testing
from websockets.frames import Frame, Opcode

from trio_tradovate.certify.wire import (
    REDACTED,
    RecordingConnector,
    Redactor,
    WireLog,
    _Decoder,
    redact_request,
)


def frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=mask, extensions=[])


def test_decoder_reads_masked_fragmented_and_long_frames_split_anywhere() -> None:
    long_text = "a" + "x" * 70_000  # 64-bit length
    medium = "y" * 300  # 16-bit length
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        + frame(Opcode.TEXT, b"o", mask=True)
        + frame(Opcode.TEXT, medium.encode())
        + frame(Opcode.TEXT, b"hel", fin=False, mask=True)
        + frame(Opcode.PING, b"p")
        + frame(Opcode.CONT, b"lo", mask=True)
        + frame(Opcode.TEXT, long_text.encode())
        + frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye")
    )
    decoder = _Decoder()
    out = []
    for start in range(0, len(data), 7):  # byte boundaries fall inside every header
        out += decoder.feed(data[start : start + 7])
    assert out == [
        ("handshake", b"HTTP/1.1 101 Switching Protocols"),
        ("text", b"o"),
        ("text", medium.encode()),
        ("ping", b"p"),
        ("text", b"hello"),
        ("text", long_text.encode()),
        ("close", (1000).to_bytes(2, "big") + b"bye"),
    ]


def test_authorize_body_is_redacted_and_remembered() -> None:
    redactor = Redactor()
    text = redact_request("authorize\n0\n\nTOKEN-abc-123", redactor)
    assert text == f"authorize\n0\n\n{REDACTED}"
    # the token is now a known secret wherever it shows up later
    assert redactor.scrub("echo TOKEN-abc-123 back") == f"echo {REDACTED} back"
    assert redact_request("account/list\n3\n\n", redactor) == "account/list\n3\n\n"


def test_redactor_ignores_too_short_secrets() -> None:
    redactor = Redactor(("ab", "long-secret"))
    assert redactor.scrub("ab long-secret") == f"ab {REDACTED}"


async def test_recording_connector_passes_bytes_through_and_logs_both_ways() -> None:
    server_side: list[trio.abc.Stream] = []

    class Pair:
        async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            server_side.append(server)
            return client

    log = WireLog(Redactor())
    stream = await RecordingConnector(Pair(), log)("h", 1, tls=False)
    request = b"GET /v1/websocket HTTP/1.1\r\nHost: h\r\n\r\n"
    await stream.send_all(request + frame(Opcode.TEXT, b"authorize\n0\n\nSECRET-TOKEN", mask=True))
    received = await server_side[0].receive_some()
    assert received.startswith(request)  # unchanged on the wire
    await server_side[0].send_all(b"HTTP/1.1 101 OK\r\n\r\n" + frame(Opcode.TEXT, b"o"))
    got = b""
    while not got.endswith(b"o"):
        got += await stream.receive_some()
    kinds = [(e.direction, e.kind, e.text) for e in log.entries]
    assert kinds == [
        ("out", "handshake", "GET /v1/websocket HTTP/1.1"),
        ("out", "text", f"authorize\n0\n\n{REDACTED}"),
        ("in", "handshake", "HTTP/1.1 101 OK"),
        ("in", "text", "o"),
    ]
    assert log.connections == 1
    assert log.opened(0) is not None
    assert "SECRET-TOKEN" not in repr(log.entries)
