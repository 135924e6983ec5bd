"""The sans-I/O link's reading of a server's bytes, against RFC 6455 over generated streams.

The link decodes the common frame (whole, unmasked text, no RSV bits, within the size limit)
itself and hands every other frame to the ``websockets`` protocol, frame-aligned
(``SansIOWebSocketLink._feed``). Where the two meet is where a mistake would hide: a frame
cut across reads, a control frame between two fragments, a frame whose start went to the
protocol and whose end comes three reads later, a violation right after a run of text.

So each seeded script here is a server's whole byte stream (the 101 response, then frames
and an ending), cut at random places into separate writes, and the expected result comes
from the RFC, not from either parser: every message in order (text as ``str``, text that is
not UTF-8 and binary as ``bytes``, fragments joined), a pong for every ping with its payload,
and how it ends (the server's close code; 1002 for a protocol violation; 1009 for a message
over the limit; 1006 for EOF). The soak profile runs 5,000 scripts.

The upgrade is generated the same way: refusals, garbage, heads cut short, endless or stalled,
a wrong accept key, each cut into random reads (60 scripts a run, 2,000 in soak).
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from websockets.exceptions import InvalidHandshake, InvalidStatus

from trio_tradovate.boundary import classify_connect_error
from trio_tradovate.errors import ClosedByServer, ConnectionRefused, HandshakeRejected
from trio_tradovate.transport import DECODE_IN_PLACE, SansIOWebSocketLink

#: RFC 6455 section 1.3: the GUID the accept key is made with.
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_SIZE = 100_000
QUICK_SEEDS = range(150)
SOAK_SEEDS = range(10_000, 15_000)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = False,
    length: int | None = None,
) -> bytes:
    """One frame as a server writes it (RFC 6455 section 5.2)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([first, mask_bit | size])
    elif size < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", size)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", size)
    if masked:
        key = b"\x01\x02\x03\x04"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


@dataclass
class Script:
    """A server's frames and what a correct client makes of them."""

    seed: int
    wire: bytearray = field(default_factory=bytearray)
    messages: list[str | bytes] = field(default_factory=list)
    pings: list[bytes] = field(default_factory=list)
    #: The close code the link must end with; ``None``: the stream stays open.
    code: int | None = None
    ending: str = "open"


def payload(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 2, 125, 126, 127, 65535, 65536, rng.randrange(300)])
    if rng.random() < 0.05:
        size = rng.randrange(70_000)
    body = bytes(rng.randrange(32, 127) for _ in range(min(size, 64)))
    return (body * (size // max(len(body), 1) + 1))[:size] if body else b""


def text_payload(rng: random.Random) -> tuple[bytes, str | bytes]:
    """Text bytes and the message they make: ``str``, or the bytes when not UTF-8."""
    roll = rng.random()
    if roll < 0.1:  # never UTF-8; sometimes large (decoded in place, not sliced)
        data = payload(rng)[:50] + b"\xff\xfe" + payload(rng)
        return data, data
    if roll < 0.2:  # multi-byte characters, sometimes past the in-place threshold
        text = "a[" + "é€😀" * rng.choice([rng.randrange(1, 40), rng.randrange(400, 3000)]) + "]"
        return text.encode(), text
    data = payload(rng)
    return data, data.decode()


def generate(seed: int) -> Script:
    rng = random.Random(seed)
    script = Script(seed)
    wire = script.wire
    for _ in range(rng.randrange(1, 30)):
        roll = rng.random()
        if roll < 0.55:
            data, message = text_payload(rng)
            wire += frame(TEXT, data)
            script.messages.append(message)
        elif roll < 0.62:
            data = payload(rng)
            wire += frame(BINARY, data)
            script.messages.append(data)
        elif roll < 0.8:  # fragmented, with control frames between the fragments
            opcode = rng.choice([TEXT, BINARY])
            data, message = text_payload(rng) if opcode == TEXT else (payload(rng), b"")
            if opcode == BINARY:
                message = data
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 5)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                wire += frame(opcode if index == 0 else CONT, piece, fin=last)
                if not last and rng.random() < 0.3:
                    ping = bytes(rng.randrange(256) for _ in range(rng.randrange(126)))
                    wire += frame(PING, ping)
                    script.pings.append(ping)
            script.messages.append(message)
        elif roll < 0.92:
            ping = bytes(rng.randrange(256) for _ in range(rng.randrange(126)))
            wire += frame(PING, ping)
            script.pings.append(ping)
        else:
            wire += frame(PONG, b"unasked")
    end(rng, script)
    return script


#: Violations and the close code each must end with.
VIOLATIONS: list[tuple[str, bytes, int]] = [
    ("rsv bit", frame(TEXT, b"a[]", rsv=4), 1002),
    ("masked", frame(TEXT, b"a[1]", masked=True), 1002),
    ("reserved opcode", frame(0x3, b"x"), 1002),
    ("continuation without a start", frame(CONT, b"x"), 1002),
    ("long control frame", frame(PING, b"p" * 126), 1002),
    ("fragmented control frame", frame(PING, b"p", fin=False), 1002),
    ("text over the limit", frame(TEXT, b"x" * (MAX_SIZE + 1)), 1009),
    ("length over the limit", frame(TEXT, b"", length=MAX_SIZE + 1), 1009),
    ("huge length", frame(BINARY, b"", length=1 << 62), 1009),
    ("text inside a fragmented message", frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002),
    (
        "fragments over the limit",
        frame(TEXT, b"x" * (MAX_SIZE // 2 + 1), fin=False)
        + frame(CONT, b"x" * (MAX_SIZE // 2 + 1)),
        1009,
    ),
]


def end(rng: random.Random, script: Script) -> None:
    roll = rng.random()
    if roll < 0.2:
        return  # stays open
    if roll < 0.4:
        code = rng.choice([1000, 1001, 1011, 4000, 4999])
        script.wire += frame(CLOSE, struct.pack("!H", code) + b"bye")
        script.code, script.ending = code, f"close {code}"
    elif roll < 0.55:
        script.code, script.ending = 1006, "eof"
    elif roll < 0.7:
        data, _ = text_payload(rng)
        cut = frame(TEXT, data + b"tail")
        script.wire += cut[: rng.randrange(1, len(cut))]
        script.code, script.ending = 1006, "eof mid-frame"
    else:
        name, wire, code = rng.choice(VIOLATIONS)
        script.wire += wire
        script.code, script.ending = code, name


def chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut at random places: single bytes, short runs and long ones."""
    out = []
    at = 0
    while at < len(data):
        size = rng.choice([1, 2, 3, rng.randrange(1, 20), rng.randrange(1, 3000), 40_000])
        out.append(data[at : at + size])
        at += size
    return out


async def serve(
    stream: trio.abc.HalfCloseableStream, script: Script, rng: random.Random, heard: bytearray
) -> None:
    """Answer the upgrade, write the script's bytes in pieces, then keep what the client
    sends in ``heard``."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some(65536)
    head = good_head(accept_for(request))
    heard += request[request.index(b"\r\n\r\n") + 4 :]

    async def listen() -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await stream.receive_some(65536):
                heard.extend(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        for chunk in chunks(rng, head + bytes(script.wire)):
            await stream.send_all(chunk)
            await trio.sleep(0.001)  # a separate read for each
        if script.ending.startswith("eof"):
            await stream.send_eof()


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """``(opcode, payload)`` of each of a client's (masked) frames."""
    frames = []
    at = 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        head = 2
        if size == 126:
            size, head = struct.unpack("!H", data[at + 2 : at + 4])[0], 4
        elif size == 127:
            size, head = struct.unpack("!Q", data[at + 2 : at + 10])[0], 10
        key = data[at + head : at + head + 4]
        body = data[at + head + 4 : at + head + 4 + size]
        frames.append((opcode, bytes(b ^ key[i % 4] for i, b in enumerate(body))))
        at += head + 4 + size
    return frames


async def open_link(nursery: trio.Nursery, client: trio.abc.Stream) -> SansIOWebSocketLink:
    """The link under test, upgraded over ``client``, with this file's size limit."""
    return await SansIOWebSocketLink.open(
        nursery,
        client,
        "example.test",
        "/v1/websocket",
        max_message_size=MAX_SIZE,
        message_queue_size=1,
        receive_buffer_size=65536,
    )


async def play(seed: int) -> None:
    """Run script ``seed`` against the link and check everything the RFC says of it."""
    script = generate(seed)
    rng = random.Random(seed * 7919)
    client, server = trio.testing.lockstep_stream_pair()
    heard = bytearray()
    messages: list[str | bytes] = []
    code: int | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, server, script, rng, heard)
        link = await open_link(nursery, client)
        with trio.move_on_after(30):  # a script that stays open: read all it sends
            try:
                while True:
                    messages += await link.receive_messages()
            except ClosedByServer as exc:
                code = exc.code
        await trio.sleep(1)  # what the link sent reaches ``heard``
        nursery.cancel_scope.cancel()
    what = f"seed {seed}, ending {script.ending!r}"
    assert messages == script.messages, what
    assert code == script.code, what
    pongs = [body for opcode, body in client_frames(bytes(heard)) if opcode == PONG]
    assert pongs == script.pings, what


@pytest.mark.parametrize("seed", QUICK_SEEDS)
async def test_generated_server_streams(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    await play(seed)


@pytest.mark.soak
def test_soak_generated_server_streams_and_upgrades() -> None:
    for player, seeds in ((play, SOAK_SEEDS), (play_upgrade, SOAK_UPGRADE_SEEDS)):
        for seed in seeds:
            trio.run(player, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_generator_covers_every_ending() -> None:
    """The quick profile reaches every ending and every violation, and whole text frames on
    both sides of the in-place decoding threshold, UTF-8 or not (else it proves less than it
    says)."""
    scripts = [generate(seed) for seed in QUICK_SEEDS]
    endings = {script.ending for script in scripts}
    names = {name for name, _, _ in VIOLATIONS}
    assert names <= endings
    assert {"open", "eof", "eof mid-frame"} <= endings
    assert any(e.startswith("close") for e in endings)
    messages = [m for script in scripts for m in script.messages]
    assert any(isinstance(m, str) and len(m.encode()) >= DECODE_IN_PLACE for m in messages)
    assert any(isinstance(m, str) and not m.isascii() and len(m) > 4000 for m in messages)
    not_utf8 = [m for m in messages if isinstance(m, bytes) and b"\xff\xfe" in m]
    assert any(len(m) >= DECODE_IN_PLACE for m in not_utf8)
    assert any(len(m) < DECODE_IN_PLACE for m in not_utf8)


# ------------------------------------------------------------------ the upgrade, generated

#: What a server can answer the upgrade with, besides a good 101 (the scripts above).
UPGRADE_KINDS = (
    "refused, sized body",
    "refused, body to EOF",
    "garbage",
    "EOF mid-head",
    "endless head",
    "stalled head",
    "wrong accept",
)
UPGRADE_SEEDS = range(60)
SOAK_UPGRADE_SEEDS = range(20_000, 22_000)


def accept_for(request: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value RFC 6455 section 4.2.2 derives from the request."""
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def good_head(accept: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def upgrade_answer(kind: str, rng: random.Random, request: bytes) -> tuple[bytes, bool]:
    """The bytes a server of ``kind`` answers ``request`` with, and whether it then ends
    its side (EOF) rather than staying open."""
    headers = b"".join(
        b"X-Note-%d: %s\r\n" % (i, b"v" * rng.randrange(0, 200)) for i in range(rng.randrange(4))
    )
    if kind.startswith("refused"):
        status = rng.choice([301, 400, 401, 403, 404, 429, 500, 503])
        body = payload(rng)[: rng.choice([0, 10, 3000, 70_000])]
        line = b"HTTP/1.1 %d No\r\n" % status
        if kind == "refused, sized body":
            return line + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body, False
        return line + headers + b"\r\n" + body, True
    if kind == "garbage":
        junk = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 300)))
        return rng.choice([b"SSH-2.0-OpenSSH_9.6", b"HTTP/1.1 abc", b"", junk]) + b"\r\n\r\n", False
    head = good_head(accept_for(request))
    if kind == "EOF mid-head":
        return head[: rng.randrange(len(head) - 1)], True
    if kind == "stalled head":
        return head[: rng.randrange(len(head) - 1)], False
    if kind == "wrong accept":
        return good_head(base64.b64encode(bytes(20))) + frame(TEXT, b"a[]"), False
    # endless: more header lines than any client takes, past the link's 64 KiB
    filler = b"".join(
        b"X-Filler: %s\r\n" % (b"y" * rng.randrange(300, 900))
        for _ in range(rng.randrange(130, 400))
    )
    return b"HTTP/1.1 101 Switching Protocols\r\n" + headers + filler, False


async def play_upgrade(seed: int) -> None:
    """Run upgrade script ``seed``: the link refuses every answer that is not a good 101
    with the error its kind calls for, whatever reads the answer is cut into, and waits
    (the connect timeout's business) for a head that has not ended."""
    rng = random.Random(seed)
    kind = rng.choice(UPGRADE_KINDS)
    client, server = trio.testing.lockstep_stream_pair()
    outcome: list[BaseException | None] = []
    answer: list[bytes] = []

    async def serve_answer() -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await server.receive_some(65536)
        data, then_eof = upgrade_answer(kind, rng, request)
        answer.append(data)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for chunk in chunks(rng, data):
                await server.send_all(chunk)
                await trio.sleep(0.001)
            if then_eof:
                await server.send_eof()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_answer)
        with trio.move_on_after(30):
            try:
                await open_link(nursery, client)
                outcome.append(None)
            except InvalidHandshake as exc:
                outcome.append(exc)
        nursery.cancel_scope.cancel()
    what = f"seed {seed}, {kind!r}"
    if kind == "stalled head":
        assert outcome == [], what  # still waiting: the connect timeout ends it
        return
    assert len(outcome) == 1, what
    error = outcome[0]
    assert error is not None, what  # never a link on a bad answer
    mapped = classify_connect_error(error)
    if kind.startswith("refused"):
        assert isinstance(error, InvalidStatus), what
        head, _, body = answer[0].partition(b"\r\n\r\n")
        assert error.response.status_code == int(head.split()[1]), what
        assert error.response.body == body, what
        assert isinstance(mapped, HandshakeRejected), what
    else:
        assert not isinstance(error, InvalidStatus), what
        assert isinstance(mapped, ConnectionRefused), what


@pytest.mark.parametrize("seed", UPGRADE_SEEDS)
async def test_generated_upgrade_answers(seed: int, autojump_clock: trio.testing.MockClock) -> None:
    await play_upgrade(seed)


def test_the_upgrade_generator_covers_every_kind() -> None:
    kinds = {random.Random(seed).choice(UPGRADE_KINDS) for seed in UPGRADE_SEEDS}
    assert kinds == set(UPGRADE_KINDS)
