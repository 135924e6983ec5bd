"""The frame server of ``make bench``: a raw websocket server on 127.0.0.1 that speaks the
least of Tradovate's protocol a client needs, and is never the bottleneck.

Per connection (one thread, blocking socket): the HTTP upgrade, ``o``, ``a[{"i":..,"s":200}]``
to ``authorize``, the sync answer (with a snapshot) to the one ``user/syncrequest``, then what
the URL's query asks for:

- ``mode=flood&n=N``: ``N`` pre-encoded ``props`` frames of a ~236-byte order, written a
  whole pre-encoded block (4,096 frames, about 1 MB) per ``sendall``, as fast as the client
  takes them; the last frame is the sentinel order (id ``SENTINEL_ID``);
- ``mode=rate&rate=R&seconds=S``: ``R*S`` frames at ``R`` per second, each stamped with
  ``time.monotonic_ns()`` (its ``sentNs`` field, fixed width, patched into the pre-encoded
  bytes) when written; the thread sleeps to each frame's due time (frames that fell due
  meanwhile go out together); then the sentinel;
- ``mode=snapshot&bytes=B``: the sync answer carries a snapshot of about ``B`` bytes (built
  once per size and cached), nothing follows;
- ``mode=drop&key=K&drops=D&hold_ms=H[&marker=same]``: the first ``D`` connections with key
  ``K`` get a small snapshot, then after ``H`` ms a stamped drop-marker order (id
  ``DROP_MARKER_ID + connection index``, or always ``DROP_MARKER_ID`` with ``marker=same``),
  then the socket is closed without a close frame (the client sees 1006); later ones stay
  open and quiet.

Afterwards the thread reads until the client's close frame (answering it) or EOF.

Run as ``python benchmarks/bench_server.py``: it prints its port on the first line of stdout
and serves until killed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import bench_common as common
import orjson

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: The pool of pre-encoded props frames, as websocket frames, and one block of all of them.
_PAYLOADS = common.stream_payloads()
_FRAMES = [common.ws_frame(p) for p in _PAYLOADS]
_BLOCK = b"".join(_FRAMES)
_OFFSETS = [0]
for _frame in _FRAMES:
    _OFFSETS.append(_OFFSETS[-1] + len(_frame))
#: For stamping: each frame split around its placeholder stamp.
_STAMPABLE = []
for _frame in _FRAMES:
    _at = _frame.index(common.STAMP_PLACEHOLDER)
    _STAMPABLE.append((_frame[:_at], _frame[_at + len(common.STAMP_PLACEHOLDER) :]))
_SENTINEL = common.ws_frame(common.props_frame(common.order(0, oid=common.SENTINEL_ID)))

_SMALL = orjson.dumps(common.small_snapshot())
_snapshots: dict[int, bytes] = {}
_snapshot_lock = threading.Lock()
_drop_counts: dict[str, int] = {}
_drop_lock = threading.Lock()


def _snapshot_body(size: int) -> bytes:
    with _snapshot_lock:
        if size not in _snapshots:
            _snapshots[size] = orjson.dumps(common.big_snapshot(size))
        return _snapshots[size]


class _Closed(Exception):
    pass


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Closed
        self.buffer += chunk

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        return head

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, unmasked payload) of the next client frame."""
        while True:
            sizes = common.ws_header_length(self.buffer)
            if sizes is not None and len(self.buffer) >= sizes[0] + sizes[1]:
                break
            self._fill()
        header, length = sizes
        opcode = self.buffer[0] & 0x0F
        key = bytes(self.buffer[header - 4 : header])
        payload = common.unmask(bytes(self.buffer[header : header + length]), key)
        del self.buffer[: header + length]
        return opcode, payload

    def read_text(self) -> str:
        """The next text message; pings answered, a close echoed (then ``_Closed``)."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x9:
                self.sock.sendall(common.ws_frame(payload, 0xA))
            elif opcode == 0x8:
                self.sock.sendall(common.ws_frame(payload[:2], 0x8))
                raise _Closed

    def send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)


def _handshake(conn: _Conn) -> dict[str, list[str]]:
    head = conn.read_head().decode("latin-1")
    lines = head.split("\r\n")
    target = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest())
    conn.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    conn.send(common.ws_frame(b"o"))
    return parse_qs(urlsplit(target).query)


def _answer_until_sync(conn: _Conn, body: bytes) -> None:
    """Answer ``authorize`` and the syncrequest (with ``body``); ignore heartbeats."""
    while True:
        text = conn.read_text()
        endpoint, _, rest = text.partition("\n")
        request_id = rest.partition("\n")[0]
        if endpoint == "authorize":
            conn.send(common.ws_frame(b'a[{"i":' + request_id.encode() + b',"s":200}]'))
        elif endpoint == "user/syncrequest":
            conn.send(
                common.ws_frame(b'a[{"i":' + request_id.encode() + b',"s":200,"d":' + body + b"}]")
            )
            return


def _flood(conn: _Conn, count: int) -> None:
    whole, part = divmod(count - 1, len(_FRAMES))
    view = memoryview(_BLOCK)
    for _ in range(whole):
        conn.send(view)
    conn.send(view[: _OFFSETS[part]])
    conn.send(_SENTINEL)


def _rate(conn: _Conn, rate: float, seconds: float) -> None:
    total = int(rate * seconds)
    interval = 1e9 / rate
    clock = time.monotonic_ns
    start = clock()
    sent = 0
    pool = len(_STAMPABLE)
    while sent < total:
        now = clock()
        due = min(total, int((now - start) / interval) + 1)
        if due > sent:
            stamp = str(common.STAMP_BASE + now).encode()
            conn.send(
                b"".join(
                    part
                    for i in range(sent, due)
                    for part in (_STAMPABLE[i % pool][0], stamp, _STAMPABLE[i % pool][1])
                )
            )
            sent = due
            continue
        # Sleep, never spin: on two cores a spinning server takes the client's CPU. Frames
        # that fall due while it sleeps (the sleep overshoots by ~60 us) go out together.
        time.sleep(max(0.0, start + sent * interval - now) / 1e9)
    conn.send(_SENTINEL)


def _drain(conn: _Conn) -> None:
    while True:
        conn.read_text()


def _serve(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = _Conn(sock)
    try:
        query = _handshake(conn)
        mode = query.get("mode", ["flood"])[0]
        if mode == "snapshot":
            _answer_until_sync(conn, _snapshot_body(int(query["bytes"][0])))
        elif mode == "drop":
            key = query["key"][0]
            with _drop_lock:
                index = _drop_counts.get(key, 0)
                _drop_counts[key] = index + 1
            _answer_until_sync(conn, _SMALL)
            if index < int(query["drops"][0]):
                time.sleep(float(query.get("hold_ms", ["0"])[0]) / 1000)
                marker = common.order(index, stamp=common.STAMP_BASE + time.monotonic_ns())
                same = query.get("marker", ["distinct"])[0] == "same"
                marker["id"] = common.DROP_MARKER_ID + (0 if same else index)
                conn.send(common.ws_frame(common.props_frame(marker)))
                sock.shutdown(socket.SHUT_RDWR)
                return
        else:
            _answer_until_sync(conn, _SMALL)
            if mode == "rate":
                _rate(conn, float(query["rate"][0]), float(query["seconds"][0]))
            else:
                _flood(conn, int(query["n"][0]))
        _drain(conn)
    except (_Closed, OSError):
        pass
    finally:
        sock.close()


def main() -> None:
    for size in sys.argv[1:]:  # snapshot sizes to build before serving
        _snapshot_body(int(size))
    if os.environ.get("BENCH_PIN"):  # pin only on a quiet machine: under load it halves the CPU
        os.sched_setaffinity(0, {0})
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    print(listener.getsockname()[1], flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_serve, args=(sock,), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
