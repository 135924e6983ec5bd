"""The transport seam: how the engine gets a byte stream to a websocket server.

The engine never calls a websocket library's URL helpers. It asks a :class:`Connector` for a
plain ``trio.abc.Stream`` (TCP, TCP+TLS, or an in-memory stream from the simulator), opens a
:class:`Link` over it and closes the stream itself on every exit path. Owning the stream
avoids trio-websocket 0.12.2 leaving the client socket open after a peer close or a drop, and
lets TLS and DNS failures surface as themselves instead of as a generic ``ConnectionTimeout``
(trio-websocket issue #165).

Two links sit behind the one :class:`Link` protocol, chosen by
``EngineConfig.websocket_layer`` (:func:`link_class`):

- :class:`SansIOWebSocketLink` (``"websockets"``, the default): the ``websockets`` library's
  sans-I/O ``ClientProtocol`` driven directly over the stream by whoever calls
  :meth:`~SansIOWebSocketLink.receive_messages`, with no task of its own. A message crosses
  no task boundary between the socket and the supervisor, every read is up to
  ``receive_buffer_size`` bytes, and each read's messages come out as one batch. The link
  splits and decodes the one frame shape Tradovate sends (a whole text frame) itself and
  gives the protocol every other frame, whole: the protocol's generator-based parser was the
  largest single cost per event.
- :class:`WebSocketLink` (``"trio-websocket"``): the layer the project started on, kept as a
  supported transport. Its reader task hands each message over a memory channel, which costs
  a task switch and a channel hop per message.

``docs/architecture.md`` ("The owned stream") has the measured difference.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import suppress
from typing import Final, Protocol, cast

import h11
import trio
import trio_websocket
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import WebSocketURI

from .boundary import map_exceptions

#: The opcodes the reader compares each frame with, bound once: on Python 3.11 reading a
#: member off the ``Opcode`` class costs about 100 ns, twice per frame on the hot path.
_TEXT: Final = Opcode.TEXT
_BINARY: Final = Opcode.BINARY
_CONT: Final = Opcode.CONT
#: Text frames at least this long are decoded in place from the read buffer (a view) rather
#: than sliced and then decoded: a 10 MB frame decodes in 1.6 ms instead of 7.1 ms, while a
#: 240-byte one costs 378 ns through a view against 214 ns sliced (measured here).
DECODE_IN_PLACE = 4096


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
        return await start_tls(stream, host, self._ssl_context)


async def start_tls(
    stream: trio.abc.Stream, host: str, context: ssl.SSLContext | None = None
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS for ``host`` over ``stream``, the handshake done now (``stream`` is closed if it
    fails): a certificate or protocol failure is raised as ``ssl.SSLError`` while connecting,
    not as a vaguer error at the first write."""
    secure = trio.SSLStream(
        stream, context or ssl.create_default_context(), server_hostname=host, https_compatible=True
    )
    try:
        await secure.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return secure


#: The first byte of a whole text frame: FIN set, no RSV bits, opcode 1.
_WHOLE_TEXT: Final = 0x81
#: The longest upgrade response head held while looking for its end; past it the protocol
#: gets it as it is (and rejects it: its limits are far lower).
MAX_RESPONSE_HEAD: Final = 1 << 16

#: How long :meth:`Link.aclose` waits for the server's answer to our close frame.
CLOSE_TIMEOUT: Final = 1.0

#: The longest a frame's write may take once begun (seconds): it is not cut by cancellation
#: before that (see ``SansIOWebSocketLink._flush``).
SEND_TIMEOUT: Final = 1.0
#: The close frame :meth:`Link.aclose` sends.
CLOSE_CODE: Final = 1000
CLOSE_REASON: Final = "Client initiated disconnect."


class Link(Protocol):
    """One open websocket, as the supervisor sees it: receive, send, close.

    The seam between the engine and a websocket library. Whatever is below it, it keeps these
    promises: :meth:`receive_messages` returns whole messages (``str`` for text, ``bytes`` for
    binary) or raises :class:`~trio_tradovate.errors.ClosedByServer` with the close code (1006
    when the connection just dropped, 1009 past ``max_message_size``); :meth:`send` on a
    closed socket does nothing (the next receive says why it closed); :meth:`aclose` is
    polite, bounded in time, and done even when the caller is being cancelled. The stream
    under it belongs to the caller, who closes it.
    """

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
    ) -> Link:
        """Run the websocket upgrade over ``stream``; raise one of :data:`CONNECT_ERRORS`
        (or, from ``nursery``, :data:`HANDSHAKE_ERRORS`) when it fails."""
        ...

    async def receive_messages(self) -> list[str | bytes]:
        """The next messages: at least one, and every one already here (a batch)."""
        ...

    async def send(self, text: str) -> None:
        """Send one text message; nothing happens on a closed socket."""
        ...

    async def aclose(self) -> None:
        """A polite close while the socket is up: bounded in time, shielded."""
        ...


class WebSocketLink:
    """A :class:`Link` on trio-websocket (``websocket_layer="trio-websocket"``).

    trio-websocket runs its own reader task in ``nursery`` and hands messages over a memory
    channel of ``message_queue_size``; this class only adapts its API and its exceptions.
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
        """The next message, as a batch of one (trio-websocket hands them over one at a time).

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
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._ws.aclose(CLOSE_CODE, CLOSE_REASON)


class _NoFrameLogs(logging.LoggerAdapter[logging.Logger]):
    """The ``websockets`` protocol's logger with DEBUG always off.

    At DEBUG the protocol logs every frame with its payload, and ``authorize`` carries the
    access token, so a DEBUG root logger would write the secret to the logs (trio-websocket
    logs only sizes). Off, the protocol also skips formatting a line per frame. Its warnings
    and errors still go to the ``websockets.client`` logger.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_PROTOCOL_LOGGER: Final = _NoFrameLogs(logging.getLogger("websockets.client"))

#: What a broken or closed stream raises; the link treats either as the end of the input.
_STREAM_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


class SansIOWebSocketLink:
    """A :class:`Link` on the ``websockets`` sans-I/O protocol (``websocket_layer="websockets"``).

    Theory of operation: ``ClientProtocol`` turns bytes into frames and frames into bytes and
    does no I/O, so this class does all of it, and does it in the caller's task:

    - :meth:`receive_messages` reads up to ``receive_buffer_size`` bytes, splits them into
      frames, decodes each whole unmasked text frame itself and hands every other frame to
      the protocol whole (see :meth:`_feed`), joins TEXT/BINARY frames with their
      continuations into messages, and sends what the protocol queued in answer (a pong for
      a ping, the echo of a close) before it returns every message that read completed.
      There is no reader task: the supervisor's loop is the reader, so a message crosses no
      task boundary on its way to the session.
    - Frames are generated synchronously into the protocol's outgoing buffer, and whoever
      holds the :class:`trio.StrictFIFOLock` flushes that buffer with ``send_all``: trio
      forbids two concurrent ``send_all`` on a stream, and the heartbeat and request sender
      tasks send while the loop may be answering a ping. Flushing the whole buffer under the
      lock keeps frames in the order they were generated.
    - A send that failed or was cancelled part-way may have left half a frame on the wire;
      nothing more is sent after it (the peer would read garbage), and the next read
      reports how the connection ended.
    - The close handshake, in :meth:`aclose`, sends a close frame and reads until the server's
      close frame or EOF, within :data:`CLOSE_TIMEOUT` and shielded from cancellation, so the
      supervisor's ``finally`` can run it while it is being cancelled.

    What the protocol does not do and this class decides: the protocol does not check that a
    text frame is UTF-8. A text message that is not valid UTF-8 is returned as its raw
    ``bytes``, which the session counts as malformed input like any non-text message, with
    the connection up (trio-websocket closes with 1007 instead). A message over
    ``max_message_size`` makes the protocol fail the connection with 1009; that, a protocol
    violation (1002) and EOF (1006) surface as the ``websockets`` ``ConnectionClosedError``
    that :mod:`.boundary` maps to :class:`~trio_tradovate.errors.ClosedByServer`.
    ``message_queue_size`` does not apply (there is no queue between tasks), and neither
    permessage-deflate nor subprotocols are offered.
    """

    def __init__(
        self, stream: trio.abc.Stream, ws: ClientProtocol, receive_size: int, max_size: int
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._receive_size = receive_size
        self._max_size = max_size
        #: Bytes read and not yet given to the protocol nor decoded: they start at a frame
        #: boundary (during the upgrade: the response head so far).
        self._held = bytearray()
        #: How many more bytes of the frame being given to the protocol it is owed.
        self._owed = 0
        #: The upgrade response's head has not all come yet.
        self._in_head = True
        self._send_lock = trio.StrictFIFOLock()
        #: Complete messages parsed and not yet returned.
        self._ready: list[str | bytes] = []
        #: Frames of a fragmented message so far, and its opcode (TEXT or BINARY).
        self._parts: list[bytes] = []
        self._fragmented: Opcode | None = None
        #: A close frame came, the protocol failed, or the input ended: nothing more to read.
        self._ended = False
        #: A send failed or was cancelled mid-way: nothing more may be written.
        self._output_broken = False

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
    ) -> SansIOWebSocketLink:
        """Run the HTTP upgrade over ``stream`` (which the caller owns and closes).

        ``nursery`` and ``message_queue_size`` are part of the :class:`Link` seam and unused:
        this link starts no task and has no queue. The ``Host`` header is ``host`` alone, as
        trio-websocket sends it.

        Raises:
            websockets.exceptions.InvalidStatus: the server answered other than 101 (mapped
                to :class:`~trio_tradovate.errors.HandshakeRejected` by :mod:`.boundary`).
            websockets.exceptions.InvalidHandshake: EOF, garbage or a bad answer mid-handshake
                (mapped to :class:`~trio_tradovate.errors.ConnectionRefused`).
            trio.BrokenResourceError, OSError: the stream failed (mapped by :mod:`.boundary`).
        """
        path, _, query = resource.partition("?")
        uri = WebSocketURI(secure=False, host=host, port=80, path=path, query=query)
        ws = ClientProtocol(uri, max_size=max_message_size, logger=_PROTOCOL_LOGGER)
        ws.send_request(ws.connect())
        link = cls(stream, ws, receive_buffer_size, max_message_size)
        await link._flush()
        while ws.state is State.CONNECTING and ws.handshake_exc is None:
            data = await stream.receive_some(receive_buffer_size)
            link._feed_upgrade(data)
        if ws.handshake_exc is not None:
            raise ws.handshake_exc
        # Frames that came in the same read as the 101 are parsed already; answer any ping.
        await link._flush()
        return link

    async def receive_messages(self) -> list[str | bytes]:
        """Every message the next read completes (at least one), in order.

        Messages that arrived before a close frame, a protocol failure or EOF are returned
        first; the call after them raises.

        Raises:
            ~trio_tradovate.errors.ClosedByServer: the server's close code, 1009 for a message
                over ``max_message_size``, 1002 for a protocol violation, 1006 for EOF or a
                broken stream (mapped by :mod:`.boundary`).
        """
        while not self._ready:
            if self._ended:
                with map_exceptions():  # websockets ConnectionClosed -> ClosedByServer
                    raise self._closed_error()
            # The schedule point of a read comes before it, after the caller has handled the
            # previous batch, not between the read and the return: there it cost every
            # message of a read arriving on a quiet socket one more scheduler pass before it
            # reached the consumer, with the consumer's turn only after the next read
            # (benchmarks/README.md, latency). The read itself is one more point, so a busy
            # stream gives the consumer a turn between two reads as before.
            await trio.lowlevel.checkpoint()
            try:
                data = await self._stream.receive_some(self._receive_size)
            except _STREAM_GONE:
                data = b""
            self._feed(data)
            answers = self._ws.data_to_send()  # a pong, a close echo: rarely anything
            if answers:
                with suppress(*_STREAM_GONE):
                    await self._write(answers)
        ready, self._ready = self._ready, []
        return ready

    async def send(self, text: str) -> None:
        """Send one text message; nothing happens on a closed or closing socket."""
        if self._ws.state is not State.OPEN or self._output_broken:
            return
        self._ws.send_text(text.encode())
        with suppress(*_STREAM_GONE, OSError):
            await self._flush()

    async def aclose(self) -> None:
        """A polite close while the socket is up: send a close frame and read until the
        server's close frame or EOF, bounded to :data:`CLOSE_TIMEOUT`, shielded from
        cancellation. Does nothing once a close frame went either way or the input ended."""
        ws = self._ws
        if ws.state is not State.OPEN or self._ended or self._output_broken:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            with suppress(*_STREAM_GONE, trio.BusyResourceError, OSError):
                ws.send_close(CLOSE_CODE, CLOSE_REASON)
                await self._flush()
                while ws.close_rcvd is None and ws.parser_exc is None:
                    self._feed(await self._stream.receive_some(self._receive_size))
        self._ready.clear()  # nobody reads after a close

    # ----------------------------------------------------------------- the sans-I/O side

    def _feed_upgrade(self, data: bytes | bytearray) -> None:
        """During the upgrade: give the protocol the response head and nothing after it, so
        that it starts on frames with nothing held (what follows the head is split as any
        read is). A response that is not a 101 gets everything (its body, then EOF), and
        so does a head that does not end within :data:`MAX_RESPONSE_HEAD`."""
        ws = self._ws
        held = self._held
        if not self._in_head:  # a refusal's body: all of it, as it comes
            if data:
                self._give(data)
            else:
                self._give_eof()
            return
        if not data:  # EOF mid-upgrade: the protocol says what that is
            self._give_held()
            self._give_eof()
            return
        held += data
        end = held.find(b"\r\n\r\n")
        if end < 0:
            if len(held) > MAX_RESPONSE_HEAD:
                self._in_head = False
                self._give_held()
            return
        head = bytes(held[: end + 4])
        del held[: end + 4]
        self._in_head = False
        self._give(head)
        if ws.state is State.OPEN:
            rest = bytes(held)
            held.clear()
            if rest:
                self._feed(rest)
        else:
            self._give_held()

    def _feed(self, data: bytes | bytearray) -> None:
        """Turn ``data`` (``b""``: EOF) into messages on :attr:`_ready`.

        The hot path splits the frames itself: a whole, unfragmented, unmasked text frame
        without RSV bits and within ``max_message_size`` (all Tradovate sends) is decoded
        here, which costs a fraction of the protocol's generator-based parser. Every other
        frame (ping, pong, close, binary, fragments, anything malformed or over the limit)
        goes to the protocol, whole and frame-aligned, so it validates and answers it
        exactly as before (a text frame inside a fragmented message included: a protocol
        error); a frame whose start went to the protocol gets its remaining bytes
        (``_owed``) before anything else is split, so the protocol never holds part of a
        frame when the splitting resumes. Once the protocol is no longer open (a close
        went either way, it failed), it gets every byte.
        """
        if not data:
            self._give_held()
            self._give_eof()
            return
        owed = self._owed
        if owed:
            if len(data) <= owed:
                self._owed = owed - len(data)
                self._give(data)
                return
            self._owed = 0
            self._give(data[:owed])
            data = data[owed:]
        held = self._held
        if held:
            held += data
            buffer: bytes | bytearray = held
        else:
            buffer = data
        ready = self._ready
        limit = self._max_size
        end = len(buffer)
        at = 0
        # Only what the protocol is given can end it or start a fragmented message, so these
        # are read again after each frame it gets, not for every frame.
        usable = not self._ended and self._ws.state is State.OPEN
        whole = self._fragmented is None
        while at + 2 <= end:
            if not usable:  # for good: no realigning
                self._give(bytes(buffer[at:]))
                at = end
                break
            first = buffer[at]
            size = buffer[at + 1]
            if size > 127:  # masked: a server never masks, and the protocol says so (1002)
                self._give(bytes(buffer[at:]))
                at = end
                break
            head = 2
            if size == 126:
                head = 4
                if at + head > end:
                    break
                size = int.from_bytes(buffer[at + 2 : at + 4], "big")
            elif size == 127:
                head = 10
                if at + head > end:
                    break
                size = int.from_bytes(buffer[at + 2 : at + 10], "big")
            frame_end = at + head + size
            if first == _WHOLE_TEXT and size <= limit and whole:
                if frame_end > end:
                    break  # the rest of it comes in later reads
                if size < DECODE_IN_PLACE:
                    text = buffer[at + head : frame_end]
                    try:
                        ready.append(text.decode())
                    except UnicodeDecodeError:
                        ready.append(bytes(text))  # not UTF-8: malformed, as the session counts
                else:
                    ready.append(_decode_in_place(buffer, at + head, frame_end))
                at = frame_end
                continue
            # Any other frame: the protocol's, from its first byte to its last.
            given = min(frame_end, end)
            self._give(bytes(buffer[at:given]))
            self._owed = frame_end - given
            at = given
            usable = not self._ended and self._ws.state is State.OPEN
            whole = self._fragmented is None
        if buffer is held:
            del held[:at]
        elif at < end:
            held += buffer[at:]

    def _give(self, data: bytes | bytearray) -> None:
        """Hand ``data`` to the protocol and collect what it makes of it."""
        if data and not self._ended:
            self._ws.receive_data(data)
            self._collect()

    def _give_held(self) -> None:
        """Hand the protocol every byte held, as one piece, and hold none."""
        if self._held:
            self._give(bytes(self._held))
            self._held.clear()

    def _give_eof(self) -> None:
        self._ws.receive_eof()
        self._collect()

    def _collect(self) -> None:
        """Collect the messages the protocol completed, in order.

        Pings need nothing here: the protocol queues the pong itself, and the caller flushes.
        """
        ws = self._ws
        ready = self._ready
        for event in ws.events_received():
            if not isinstance(event, Frame):  # the handshake's Response
                continue
            opcode = event.opcode
            if opcode is _TEXT and event.fin:  # the common case, written out
                # the parser produces bytes: used as they are (no copy, no call)
                data = event.data if type(event.data) is bytes else bytes(event.data)
                try:
                    ready.append(data.decode())
                    continue
                except UnicodeDecodeError:
                    ready.append(data)  # not UTF-8: malformed, as the session counts it
                    continue
            if opcode is _TEXT or opcode is _BINARY:
                if event.fin:
                    ready.append(_message(opcode, bytes(event.data)))
                else:
                    self._fragmented = opcode
                    self._parts = [bytes(event.data)]
            elif opcode is _CONT and self._fragmented is not None:
                self._parts.append(bytes(event.data))
                if event.fin:
                    ready.append(_message(self._fragmented, b"".join(self._parts)))
                    self._fragmented, self._parts = None, []
            # PING: the pong is queued; PONG: unsolicited, ignored; CLOSE: see close_rcvd.
        if ws.close_rcvd is not None or ws.parser_exc is not None or ws.state is State.CLOSED:
            self._ended = True

    def _closed_error(self) -> ConnectionClosedError:
        """How the connection ended, as the ``websockets`` exception :mod:`.boundary` maps:
        the close frame received, else the one we sent when failing it (1009, 1002, 1007),
        else neither (EOF: 1006). Built here because ``ClientProtocol.close_exc`` is only
        available once the server has also closed TCP."""
        ws = self._ws
        rcvd, sent = ws.close_rcvd, ws.close_sent
        order = None if rcvd is None or sent is None else bool(ws.close_rcvd_then_sent)
        error = ConnectionClosedError(rcvd, sent, order)
        error.__cause__ = ws.parser_exc
        return error

    async def _flush(self) -> None:
        """Write everything the protocol queued, under the send lock, in order.

        ``b""`` in the queue (``SEND_EOF``) asks for a half-close: done on a stream that
        supports it, otherwise left to the owner's close. A write that fails or cannot finish
        marks the output broken (a partial frame may be on the wire) and raises.
        """
        await self._write(self._ws.data_to_send())

    async def _write(self, chunks: list[bytes]) -> None:
        """Write ``chunks`` (taken from the protocol, in order) as :meth:`_flush` says; no
        schedule point when there are none."""
        if not chunks:
            return
        # Taken out of the protocol before the lock: the lock is fair (first come, first
        # served), so frames still go out in the order the protocol queued them.
        async with self._send_lock:
            if self._output_broken:
                return
            # Frames taken from the protocol are written whole: a cancellation (the engine
            # closing while a heartbeat goes out) waits for the write, within SEND_TIMEOUT,
            # rather than cut it, which would break the output and cost the close handshake.
            # Only a write that cannot finish in that time (a peer that stopped reading) is
            # cut, and then nothing more is sent.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + SEND_TIMEOUT
                try:
                    for chunk in _coalesce(chunks):
                        if chunk:
                            await self._stream.send_all(chunk)
                        elif isinstance(self._stream, trio.abc.HalfCloseableStream):
                            await self._stream.send_eof()
                except BaseException:
                    self._output_broken = True
                    raise
            if scope.cancelled_caught:
                self._output_broken = True
                raise trio.BrokenResourceError(f"a write took more than {SEND_TIMEOUT:g} s")


def _decode_in_place(buffer: bytes | bytearray, start: int, stop: int) -> str | bytes:
    """A large text frame's payload, ``buffer[start:stop]``, decoded without copying it
    first; as ``bytes`` when it is not UTF-8 (malformed, as the session counts it). The view
    is released before the caller trims ``buffer`` (a bytearray cannot be resized while a
    view of it exists)."""
    with memoryview(buffer) as view, view[start:stop] as payload:
        try:
            return str(payload, "utf-8")
        except UnicodeDecodeError:
            return bytes(payload)


def _message(opcode: Opcode, data: bytes) -> str | bytes:
    """A complete message: text as ``str`` when it is UTF-8, else its raw ``bytes`` (which the
    session counts as malformed); binary as ``bytes``."""
    if opcode is _TEXT:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return data
    return data


def _coalesce(chunks: list[bytes]) -> list[bytes]:
    """Adjacent frames joined into one write (``b""``, the EOF marker, kept apart): one
    ``send_all`` per flush instead of one per frame."""
    if len(chunks) == 1:
        return chunks
    out: list[bytes] = []
    run: list[bytes] = []
    for chunk in chunks:
        if chunk:
            run.append(chunk)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(chunk)
    if run:
        out.append(b"".join(run))
    return out


#: The websocket layers by ``EngineConfig.websocket_layer`` name (see ``config.WEBSOCKET_LAYERS``).
LINK_CLASSES: Final[dict[str, type[Link]]] = {
    "websockets": SansIOWebSocketLink,
    "trio-websocket": WebSocketLink,
}


def link_class(layer: str) -> type[Link]:
    """The :class:`Link` implementation named ``layer`` (validated by ``EngineConfig``)."""
    return LINK_CLASSES[layer]


#: Raised by the websocket library's own tasks when the upgrade is refused (HTTP 4xx/5xx):
#: trio-websocket's reach the caller through the nursery that runs them, not through
#: :meth:`Link.open`. The sans-I/O link raises from ``open`` itself (see :data:`CONNECT_ERRORS`).
#: ``h11.LocalProtocolError`` is trio-websocket 0.12.2 answering a garbage HTTP response: its
#: reader tries to send the server's rejection as a client and h11 refuses (seen in
#: ``tests/engine/test_websocket_layers.py``); without this row it would stop the engine.
HANDSHAKE_ERRORS: tuple[type[BaseException], ...] = (
    trio_websocket.HandshakeError,
    h11.LocalProtocolError,
)

#: What connecting and upgrading can raise below us (mapped to ``ConnectError`` by the caller).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    InvalidHandshake,
    *HANDSHAKE_ERRORS,
)
