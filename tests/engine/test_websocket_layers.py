"""The websocket layers behind ``transport.Link``: each property the engine relies on.

Two levels, both in virtual time over ``trio.testing.memory_stream_pair()`` with a wsproto
server half (nothing from the client library is reused on the server side, so the two cannot
agree on a mistake):

- the sans-I/O link (``SansIOWebSocketLink``, the default layer) alone: fragments joined, pings
  answered, the 1009 limit, invalid UTF-8, close frames, EOF, the bounded close handshake, the
  upgrade's failures, concurrent senders, batches;
- the engine on each layer against a scripted Tradovate server: the same properties as the
  engine sees them (which fault kind, whether it reconnects, whether the connection stays up).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from websockets.exceptions import InvalidHandshake, InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as UpgradeRequest

from trio_tradovate import EngineConfig, State, open_engine
from trio_tradovate.boundary import classify_connect_error
from trio_tradovate.config import WEBSOCKET_LAYERS
from trio_tradovate.errors import ClosedByServer, ConnectionRefused, HandshakeRejected
from trio_tradovate.transport import (
    CLOSE_TIMEOUT,
    LINK_CLASSES,
    SEND_TIMEOUT,
    SansIOWebSocketLink,
    WebSocketLink,
    link_class,
)

RESOURCE = "/v1/websocket"


class Peer:
    """The server half of one websocket, played by the test with wsproto."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self.pending: deque[Event] = deque()
        self.texts: list[str] = []
        self._partial: list[str] = []

    async def _pump(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        self.ws.receive_data(bytes(data) if data else None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):  # wsproto hands out what a read holds
                self._partial.append(event.data)
                if event.message_finished:
                    self.pending.append(TextMessage(data="".join(self._partial)))
                    self._partial = []
            else:
                self.pending.append(event)
        return bool(data)

    async def upgrade_request(self) -> UpgradeRequest:
        while True:
            while self.pending:
                event = self.pending.popleft()
                if isinstance(event, UpgradeRequest):
                    return event
            assert await self._pump(), "client went away before its upgrade request"

    async def accept(self, *then: Event) -> None:
        """Accept the upgrade; ``then`` goes out in the same write as the 101."""
        await self.upgrade_request()
        data = self.ws.send(AcceptConnection())
        await self.stream.send_all(data + b"".join(self.ws.send(event) for event in then))

    async def reject(self, status: int) -> None:
        await self.upgrade_request()
        body = b"go away"
        headers = [(b"content-length", str(len(body)).encode())]
        data = self.ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        await self.stream.send_all(data + self.ws.send(RejectData(data=body)))

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(b"".join(self.ws.send(event) for event in events))

    async def next_event(self) -> Event | None:
        """The client's next event other than a text message (those go to :attr:`texts`);
        ``None`` at EOF."""
        while True:
            while self.pending:
                event = self.pending.popleft()
                if isinstance(event, TextMessage):
                    self.texts.append(event.data)
                    continue
                return event
            if not await self._pump():
                return None

    async def next_text(self) -> str:
        """The client's next text message (other events before it are dropped)."""
        while not self.texts:
            while self.pending and not self.texts:
                event = self.pending.popleft()
                assert not isinstance(event, CloseConnection), event
                if isinstance(event, TextMessage):
                    self.texts.append(event.data)
            if not self.texts:
                assert await self._pump(), "client went away"
        return self.texts.pop(0)


async def open_link(
    peer_script: Callable[[Peer], Awaitable[None]],
    *,
    max_message_size: int = 1 << 20,
    streams: tuple[trio.abc.Stream, trio.abc.Stream] | None = None,
) -> tuple[SansIOWebSocketLink, Peer]:
    """Open the sans-I/O link against a peer that runs ``peer_script`` (the handshake), over
    ``streams`` (client, server) when given."""
    client, server = streams or trio.testing.memory_stream_pair()
    peer = Peer(server)
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer_script, peer)
        try:
            link = await SansIOWebSocketLink.open(
                nursery,
                client,
                "example.test",
                RESOURCE,
                max_message_size=max_message_size,
                message_queue_size=1,
                receive_buffer_size=65536,
            )
        except Exception as exc:  # raised as itself, not inside the nursery's group
            failure = exc
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return link, peer


async def receive_n(link: SansIOWebSocketLink, n: int) -> list[str | bytes]:
    messages: list[str | bytes] = []
    while len(messages) < n:
        messages += await link.receive_messages()
    return messages


# ------------------------------------------------------------------------ the sans-I/O link


def test_every_layer_has_a_link_class() -> None:
    assert set(LINK_CLASSES) == set(WEBSOCKET_LAYERS)
    assert link_class("websockets") is SansIOWebSocketLink
    assert link_class("trio-websocket") is WebSocketLink
    assert EngineConfig(access_token="t").websocket_layer == "websockets"


async def test_upgrade_request_names_host_and_resource(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[UpgradeRequest] = []

    async def accept(peer: Peer) -> None:
        seen.append(await peer.upgrade_request())
        await peer.stream.send_all(peer.ws.send(AcceptConnection()))

    await open_link(accept)
    assert seen[0].host == "example.test"
    assert seen[0].target == RESOURCE
    assert seen[0].extensions == []  # no permessage-deflate offered


async def test_fragmented_text_and_binary_messages_are_joined(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    await peer.send(
        TextMessage(data='a[{"e":', message_finished=False),
        Ping(payload=b"between fragments"),  # control frames may interleave
        TextMessage(data='"props"', message_finished=False),
        TextMessage(data="}]", message_finished=True),
        BytesMessage(data=b"\x00", message_finished=False),
        BytesMessage(data=b"\x01", message_finished=True),
    )
    assert await receive_n(link, 2) == ['a[{"e":"props"}]', b"\x00\x01"]
    assert await peer.next_event() == Pong(payload=b"between fragments")


async def test_a_message_in_the_same_read_as_the_101_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def accept_and_open(peer: Peer) -> None:
        await peer.accept(TextMessage(data="o"), Ping(payload=b"early"))

    link, peer = await open_link(accept_and_open)
    assert await link.receive_messages() == ["o"]
    assert await peer.next_event() == Pong(payload=b"early")  # answered by open()


async def test_a_backed_up_socket_is_drained_in_one_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    await peer.send(*(TextMessage(data=f"a[{i}]") for i in range(50)))
    assert await link.receive_messages() == [f"a[{i}]" for i in range(50)]


async def test_ping_is_answered_with_pong_while_the_reader_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.receive_messages)  # the supervisor's loop, waiting for text
        await peer.send(Ping(payload=b"are you there"))
        with trio.fail_after(0.01):
            assert await peer.next_event() == Pong(payload=b"are you there")
        nursery.cancel_scope.cancel()


async def test_a_message_over_the_limit_closes_with_1009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept, max_message_size=1000)
    await peer.send(TextMessage(data="h"), TextMessage(data="x" * 1001))
    assert await link.receive_messages() == ["h"]  # what came before is delivered first
    with pytest.raises(ClosedByServer) as info:
        await link.receive_messages()
    assert info.value.code == 1009
    assert "1001" in info.value.reason
    event = await peer.next_event()
    assert isinstance(event, CloseConnection)
    assert event.code == 1009
    await link.send("ignored")  # a no-op on a closed socket
    await link.aclose()  # so is a close


async def test_a_fragmented_message_over_the_limit_closes_with_1009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept, max_message_size=1000)
    await peer.send(
        TextMessage(data="x" * 600, message_finished=False),
        TextMessage(data="x" * 600, message_finished=True),
    )
    with pytest.raises(ClosedByServer) as info:
        await link.receive_messages()
    assert info.value.code == 1009


async def test_invalid_utf8_text_comes_back_as_bytes_and_the_link_stays_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    await peer.stream.send_all(bytes([0x81, 4]) + b"a[\xff]")
    await peer.send(TextMessage(data="h"))
    assert await receive_n(link, 2) == [b"a[\xff]", "h"]
    await link.send("still up")
    assert await peer.next_text() == "still up"


async def test_a_close_frame_is_echoed_and_reported_with_its_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    await peer.send(TextMessage(data="h"), CloseConnection(code=4000, reason="bye"))
    assert await link.receive_messages() == ["h"]
    with pytest.raises(ClosedByServer) as info:
        await link.receive_messages()
    assert (info.value.code, info.value.reason) == (4000, "bye")
    echo = await peer.next_event()
    assert isinstance(echo, CloseConnection)
    assert echo.code == 4000
    with pytest.raises(ClosedByServer):  # and again: the link stays closed
        await link.receive_messages()


async def test_a_protocol_violation_closes_with_1002(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    await peer.stream.send_all(bytes([0x83, 1]) + b"x")  # a reserved opcode
    with pytest.raises(ClosedByServer) as info:
        await link.receive_messages()
    assert info.value.code == 1002


async def test_eof_is_1006(autojump_clock: trio.testing.MockClock) -> None:
    link, peer = await open_link(Peer.accept)
    await peer.send(TextMessage(data="h"))
    await peer.stream.aclose()
    assert await link.receive_messages() == ["h"]
    with pytest.raises(ClosedByServer) as info:
        await link.receive_messages()
    assert info.value.code == 1006


async def test_close_handshake_is_bounded_when_the_server_never_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    started = trio.current_time()
    await link.aclose()
    assert trio.current_time() - started == pytest.approx(CLOSE_TIMEOUT)
    close = await peer.next_event()
    assert isinstance(close, CloseConnection)
    assert close.code == 1000


async def test_close_handshake_is_done_under_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)
    with trio.CancelScope() as scope:
        scope.cancel()
        started = trio.current_time()
        await link.aclose()  # shielded: sends its close frame and waits, bounded
    assert trio.current_time() - started == pytest.approx(CLOSE_TIMEOUT)
    close = await peer.next_event()
    assert isinstance(close, CloseConnection)


async def test_close_handshake_ends_at_the_servers_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)

    async def answer() -> None:
        close = await peer.next_event()
        assert isinstance(close, CloseConnection)
        await trio.sleep(0.1)
        await peer.send(close.response())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        started = trio.current_time()
        await link.aclose()
        assert trio.current_time() - started == pytest.approx(0.1)


async def _slow_link(delay: list[float]) -> tuple[SansIOWebSocketLink, Peer]:
    """A link whose every write takes ``delay[0]`` seconds to return (its bytes are on their
    way at once; a write that never returns is a peer that stopped reading)."""
    client, server = trio.testing.memory_stream_pair()
    link, peer = await open_link(Peer.accept, streams=(client, server))
    pump = client.send_stream.send_all_hook
    assert pump is not None

    async def slow() -> None:
        await pump()
        await trio.sleep(delay[0])

    client.send_stream.send_all_hook = slow
    return link, peer


async def test_a_write_under_way_is_finished_not_cut_by_a_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The engine leaving while a heartbeat goes out: the write finishes (within
    SEND_TIMEOUT), the output stays whole, and the close handshake still happens."""
    delay = [SEND_TIMEOUT / 2]
    link, peer = await _slow_link(delay)
    with trio.move_on_after(SEND_TIMEOUT / 10):
        await link.send("[]")
    assert trio.current_time() == pytest.approx(SEND_TIMEOUT / 2)  # waited for the write
    assert await peer.next_text() == "[]"
    delay[0] = 0.0
    await link.aclose()
    close = await peer.next_event()
    assert isinstance(close, CloseConnection)


async def test_a_write_that_cannot_finish_breaks_the_output_after_send_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that stopped reading: the write is cut at SEND_TIMEOUT, send returns (the next
    read says how the connection ended), and nothing more is written, not even a close."""
    delay = [float("inf")]
    link, peer = await _slow_link(delay)
    started = trio.current_time()
    await link.send("first")
    assert trio.current_time() - started == pytest.approx(SEND_TIMEOUT)
    delay[0] = 0.0
    await link.send("second")
    await link.aclose()  # nothing may follow half a frame: no close frame either
    assert trio.current_time() - started == pytest.approx(SEND_TIMEOUT)
    assert await peer.next_text() == "first"  # (in memory its bytes all arrived)
    with trio.move_on_after(5):
        await peer.next_event()
        pytest.fail("something was written after the write that could not finish")


async def test_concurrent_senders_never_interleave_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link, peer = await open_link(Peer.accept)

    async def sender(name: str) -> None:
        for i in range(100):
            await link.send(f"{name}{i}:" + name * 3000)

    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(sender, name)
    received = [await peer.next_text() for _ in range(300)]
    for name in "abc":
        mine = [t for t in received if t[0] == name]
        assert mine == [f"{name}{i}:" + name * 3000 for i in range(100)]


@pytest.mark.parametrize("status", [401, 404, 500])
async def test_a_rejected_upgrade_is_handshake_rejected(
    status: int, autojump_clock: trio.testing.MockClock
) -> None:
    async def reject(peer: Peer) -> None:
        await peer.reject(status)

    with pytest.raises(InvalidStatus) as info:
        await open_link(reject)
    mapped = classify_connect_error(info.value)
    assert isinstance(mapped, HandshakeRejected)
    assert mapped.status == status


async def _eof_after_request(peer: Peer) -> None:
    await peer.upgrade_request()
    await peer.stream.aclose()


async def _garbage_answer(peer: Peer) -> None:
    await peer.upgrade_request()
    await peer.stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


async def _half_a_101(peer: Peer) -> None:
    await peer.upgrade_request()
    accept = peer.ws.send(AcceptConnection())
    await peer.stream.send_all(accept[: len(accept) // 2])
    await peer.stream.aclose()


@pytest.mark.parametrize(
    "script", [_eof_after_request, _garbage_answer, _half_a_101], ids=["eof", "garbage", "half"]
)
async def test_eof_or_garbage_mid_handshake_is_a_connect_error(
    script: Callable[[Peer], Awaitable[None]], autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(InvalidHandshake) as info:
        await open_link(script)
    mapped = classify_connect_error(info.value)
    assert isinstance(mapped, ConnectionRefused)
    assert "websocket handshake failed" in str(mapped)


async def test_a_refusal_whose_body_comes_later_is_reported_when_it_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The link holds the response head until it ends, then gives the protocol everything
    after it: a body written later, on a connection the server keeps open, still completes
    the refusal (it is not held back waiting for a head that already ended)."""

    async def slow_body(peer: Peer) -> None:
        await peer.upgrade_request()
        body = b"not today"
        head = f"HTTP/1.1 403 Forbidden\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        await peer.stream.send_all(head)
        await trio.sleep(5)
        await peer.stream.send_all(body)
        await trio.sleep_forever()

    with trio.fail_after(6), pytest.raises(InvalidStatus) as info:
        await open_link(slow_body)
    assert info.value.response.status_code == 403
    assert info.value.response.body == b"not today"


async def test_a_response_head_that_never_ends_is_refused_not_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server that streams header lines without end: past 64 KiB the protocol gets them
    and refuses, rather than the link holding them while it waits for the end."""

    async def endless(peer: Peer) -> None:
        await peer.upgrade_request()
        await peer.stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n")
        while True:
            await peer.stream.send_all(b"X-Filler: " + b"y" * 1000 + b"\r\n")
            await trio.sleep(0.001)  # 1 MB a virtual second

    with trio.fail_after(1), pytest.raises(InvalidHandshake):
        await open_link(endless)


# ------------------------------------------------------------------ the engine on each layer

SNAPSHOT: dict[str, Any] = {
    "accounts": [{"id": 7, "name": "layer"}],
    "orders": [{"id": i, "accountId": 7, "ordStatus": "Working"} for i in range(1, 4)],
}

Script = Callable[[Peer], Awaitable[None]]


class ScriptedServer:
    """The engine's connector: connection ``n`` is played by ``scripts[n]`` (the last one
    for every later attempt)."""

    def __init__(self, nursery: trio.Nursery, *scripts: Script, sockets: bool = False) -> None:
        self.nursery = nursery
        self.scripts = scripts
        self.peers: list[Peer] = []
        #: A connected pair of real sockets per connection instead of memory streams (whose
        #: own hand-offs are scheduler passes a socket does not have).
        self.sockets = sockets

    async def connect(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        client: trio.abc.Stream
        server: trio.abc.Stream
        if self.sockets:
            ends = trio.socket.socketpair()
            client, server = trio.SocketStream(ends[0]), trio.SocketStream(ends[1])
        else:
            client, server = trio.testing.memory_stream_pair()
        peer = Peer(server)
        script = self.scripts[min(len(self.peers), len(self.scripts) - 1)]
        self.peers.append(peer)
        self.nursery.start_soon(self._play, script, peer)
        return client

    async def _play(self, script: Script, peer: Peer) -> None:
        try:
            await script(peer)
            await trio.sleep_forever()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if isinstance(peer.stream, trio.SocketStream):  # a memory stream holds no fd
                await trio.aclose_forcefully(peer.stream)


async def request_id(peer: Peer, endpoint: str) -> int:
    while True:
        fields = (await peer.next_text()).split("\n", 3)
        if fields[0] == endpoint:
            return int(fields[1])


async def good_path(peer: Peer, *, fragments: int = 1) -> None:
    """Upgrade, ``o``, authorize answered, the syncrequest answered with :data:`SNAPSHOT`
    (in ``fragments`` websocket frames)."""
    await peer.accept()
    await peer.send(TextMessage(data="o"))
    auth = await request_id(peer, "authorize")
    await peer.send(TextMessage(data="a" + orjson.dumps([{"i": auth, "s": 200}]).decode()))
    sync = await request_id(peer, "user/syncrequest")
    text = "a" + orjson.dumps([{"i": sync, "s": 200, "d": SNAPSHOT}]).decode()
    cuts = [len(text) * k // fragments for k in range(fragments + 1)]
    await peer.send(
        *(
            TextMessage(data=text[a:b], message_finished=b == len(text))
            for a, b in itertools.pairwise(cuts)
        )
    )


@asynccontextmanager
async def engine_on(
    layer: str, *scripts: Script, sockets: bool = False, **overrides: Any
) -> AsyncIterator[Any]:
    async def no_rest(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    async with trio.open_nursery() as nursery:
        server = ScriptedServer(nursery, *scripts, sockets=sockets)
        config = EngineConfig(
            rest_url="https://layers.invalid/v1",
            access_token="layer-token",
            user_id=1,
            connector=server.connect,
            http_transport=httpx.MockTransport(no_rest),
            websocket_layer=layer,
            seed=3,
            **overrides,
        )
        async with open_engine(config) as engine:
            yield engine, server
        nursery.cancel_scope.cancel()


layers = pytest.mark.parametrize("layer", WEBSOCKET_LAYERS)


@layers
async def test_engine_joins_a_fragmented_snapshot(
    layer: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with engine_on(layer, lambda peer: good_path(peer, fragments=5)) as (engine, _):
        await engine.wait_for(State.LIVE)
        assert len(engine.store.of_type("order")) == 3


@layers
async def test_engine_answers_a_ping(layer: str, autojump_clock: trio.testing.MockClock) -> None:
    async with engine_on(layer, good_path) as (engine, server):
        await engine.wait_for(State.LIVE)
        [peer] = server.peers
        await peer.send(Ping(payload=b"still there?"))
        with trio.fail_after(0.1):
            assert await peer.next_event() == Pong(payload=b"still there?")


async def _then_oversized(peer: Peer) -> None:
    await good_path(peer)
    await peer.send(TextMessage(data='a["' + "x" * 70_000 + '"]'))


@layers
async def test_engine_oversized_message_is_a_protocol_error_and_reconnects(
    layer: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with engine_on(layer, _then_oversized, good_path, max_message_size=64 * 1024) as (
        engine,
        server,
    ):
        await engine.wait_for(State.LIVE)
        lost = await engine.wait_for(State.BACKOFF)
        assert lost.trigger == "lost"
        assert lost.reason.startswith("protocol_error: closed by server: code 1009")
        await engine.wait_for(State.LIVE)
        assert engine.counters["fault.protocol_error"] == 1
    close = await server.peers[0].next_event()
    assert isinstance(close, CloseConnection)
    assert close.code == 1009


async def _then_invalid_utf8(peer: Peer) -> None:
    await good_path(peer)
    await trio.sleep(1)
    await peer.stream.send_all(bytes([0x81, 4]) + b"a[\xff]")


@layers
async def test_engine_invalid_utf8(layer: str, autojump_clock: trio.testing.MockClock) -> None:
    """The sans-I/O layer counts the frame as malformed and stays connected; trio-websocket
    (wsproto) closes with 1007, a protocol error. Either way nothing reaches the store."""
    async with engine_on(layer, _then_invalid_utf8, good_path) as (engine, _):
        await engine.wait_for(State.LIVE)
        await trio.sleep(5)
        if layer == "websockets":
            assert engine.counters["malformed"] == 1
            assert engine.state is State.LIVE
            assert engine.generation == 1
        else:
            assert engine.counters["fault.protocol_error"] == 1
            lost = next(r for r in engine.transitions if r.trigger == "lost")
            assert "code 1007" in lost.reason


async def _reject_404(peer: Peer) -> None:
    await peer.reject(404)


@layers
async def test_engine_rejected_upgrade_is_handshake_rejected(
    layer: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with engine_on(layer, _reject_404, good_path) as (engine, _):
        await engine.wait_for(State.LIVE)
    [failed] = [r for r in engine.transitions if r.trigger == "connect_failed"]
    assert failed.reason.startswith("handshake_rejected:")
    assert "404" in failed.reason
    assert engine.counters["fault.handshake_rejected"] == 1


@layers
@pytest.mark.parametrize(
    "script", [_eof_after_request, _garbage_answer, _half_a_101], ids=["eof", "garbage", "half"]
)
async def test_engine_eof_or_garbage_mid_handshake_fails_the_connect(
    layer: str, script: Script, autojump_clock: trio.testing.MockClock
) -> None:
    """The sans-I/O layer sees the EOF or the garbage at once and says ``refused``;
    trio-websocket 0.12.2 waits for an answer that cannot come until ``connect_timeout``
    after an EOF, and trips over its own h11 state on garbage (``refused`` too)."""
    async with engine_on(layer, script, good_path, connect_timeout=5) as (engine, _):
        await engine.wait_for(State.LIVE)
    [failed] = [r for r in engine.transitions if r.trigger == "connect_failed"]
    if layer == "websockets" or script is _garbage_answer:
        assert failed.reason.startswith("refused: websocket handshake failed"), failed.reason
        assert failed.time < 0.1
    else:
        assert failed.reason.startswith("connect_timeout:"), failed.reason
        assert failed.time == pytest.approx(5)


async def _deaf_after_live(peer: Peer) -> None:
    """The good path, then read nothing more: a close frame is never answered."""
    await good_path(peer)


@layers
async def test_engine_close_is_bounded_when_the_server_never_answers(
    layer: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with engine_on(layer, _deaf_after_live) as (engine, server):
        await engine.wait_for(State.LIVE)
        leaving = trio.current_time()
    assert trio.current_time() - leaving <= CLOSE_TIMEOUT + 1e-9
    close = await server.peers[0].next_event()
    assert isinstance(close, CloseConnection)
    assert close.code == 1000


class _Passes(trio.abc.Instrument):
    """Counts the scheduler's passes (one I/O check each) since it was added."""

    def __init__(self) -> None:
        self.count = 0

    def after_io_wait(self, timeout: float) -> None:
        self.count += 1


#: The most scheduler passes from a frame's arrival on a quiet socket to the consumer that
#: waits for it, per layer: the sans-I/O link reads in the supervisor's task (the read wakes
#: it, then the consumer's turn); trio-websocket's reader task is one more hand-off.
PASSES_TO_CONSUMER = {"websockets": 2, "trio-websocket": 3}


@layers
async def test_a_frame_on_a_quiet_socket_reaches_the_consumer_in_the_fewest_passes(
    layer: str, autojump_clock: trio.testing.MockClock
) -> None:
    """What the latency of a quiet stream is made of: each pass of the scheduler between the
    frame and the consumer is a round of every runnable task and an I/O check. Counted, not
    timed: an extra schedule point between a read and its handling fails this."""
    async with engine_on(layer, good_path, sockets=True) as (engine, server):
        await engine.wait_for(State.LIVE)
        [peer] = server.peers
        changes = engine.events()
        assert len(await changes.receive_batch()) == len(SNAPSHOT["orders"]) + 1
        seen: list[int] = []
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                for _ in range(3):
                    [change] = await changes.receive_batch()
                    seen.append(passes.count)
                    assert change.entity_id == 100 + len(seen)

            nursery.start_soon(consume)
            await trio.sleep(1)  # the consumer waits; the socket is quiet
            for n in range(1, 4):
                passes = _Passes()
                trio.lowlevel.add_instrument(passes)
                entity = {"id": 100 + n, "accountId": 7, "ordStatus": "Working"}
                event = {"entityType": "order", "eventType": "Created", "entity": entity}
                frame = {"e": "props", "d": event}
                await peer.send(TextMessage(data="a" + orjson.dumps([frame]).decode()))
                await trio.sleep(1)
                trio.lowlevel.remove_instrument(passes)
        assert len(seen) == 3
        assert max(seen) <= PASSES_TO_CONSUMER[layer], seen
