"""The clients of ``make bench``, one per process: ``python bench_clients.py '<json spec>'``
prints one JSON line with what it measured.

``spec["client"]`` is one of

- ``raw-tws``: raw trio + trio-websocket (the engine's queue and read size), orjson, dict store;
- ``raw-sansio``: raw trio + the ``websockets`` library's sans-I/O ``ClientProtocol`` on a
  ``trio.SocketStream``, one task, 64 KiB reads, orjson, dict store;
- ``asyncio``: the naive asyncio client: ``websockets`` asyncio client, stdlib ``json``, dict
  store;
- ``engine``: trio-tradovate end to end through its public API (``open_engine``, a consumer of
  ``engine.events()``), on ``spec["layer"]`` when the engine offers a choice of layer.

``spec["scenario"]`` is ``flood`` (throughput), ``latency`` (fixed rates), ``snapshot``,
``drop`` (drop-to-live), ``reconnects`` or ``memory`` (the last four for the engine only).
Every client runs the same handshake (``authorize``, one ``user/syncrequest``) and keeps what it
receives in a store keyed by ``(entityType, id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import os
import statistics
import sys
import time
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import bench_common as common
import orjson
import trio

Spec = dict[str, Any]
Store = dict[tuple[str, int], Any]

TOKEN = "bench-token"
SYNC_BODY = json.dumps({"users": [common.USER_ID]})
_MONO = time.monotonic_ns
_BASE = common.STAMP_BASE
_SENTINEL = common.SENTINEL_ID


def url_for(spec: Spec, query: str) -> str:
    return f"ws://127.0.0.1:{spec['port']}/v1/websocket?{query}"


# --- raw clients: one handshake, then a hot loop over batches of messages -------------------


class RawSink:
    """What a raw client does per message: orjson, pick props, key the entity in a dict."""

    def __init__(self, latency: bool) -> None:
        self.store: Store = {}
        self.samples: list[int] = []
        self.first: float | None = None
        self.done: float | None = None
        self.events = 0
        self.feed = self._feed_latency if latency else self._feed

    def _feed(self, data: str | bytes) -> bool:
        store = self.store
        for m in orjson.loads(data[1:]):
            if m.get("e") == "props":
                d = m["d"]
                entity = d["entity"]
                store[(d["entityType"], entity["id"])] = entity
                self.events += 1
                if self.first is None:
                    self.first = time.perf_counter()
                if entity["id"] == _SENTINEL:
                    self.done = time.perf_counter()
                    return True
        return False

    def _feed_latency(self, data: str | bytes) -> bool:
        store = self.store
        for m in orjson.loads(data[1:]):
            if m.get("e") == "props":
                d = m["d"]
                entity = d["entity"]
                store[(d["entityType"], entity["id"])] = entity
                if entity["id"] == _SENTINEL:
                    return True
                self.samples.append(_MONO() - (entity["sentNs"] - _BASE))
        return False


class RawConn(typing.Protocol):
    async def batch(self) -> list[str] | list[bytes]: ...

    async def send(self, text: str) -> None: ...


async def raw_handshake(conn: RawConn, store: Store) -> None:
    """``o``, authorize, the one syncrequest; the snapshot goes into ``store``."""
    sent_sync = False
    await conn.send(f"authorize\n0\n\n{TOKEN}")
    while True:
        for message in await conn.batch():
            if message[:1] not in ("a", b"a"):
                continue
            for m in orjson.loads(message[1:]):
                if m.get("i") == 0 and not sent_sync:
                    sent_sync = True
                    await conn.send(f"user/syncrequest\n1\n\n{SYNC_BODY}")
                elif m.get("i") == 1:
                    for name, values in m["d"].items():
                        for value in values:
                            store[(name, value["id"])] = value
                    return


class TwsConn:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def batch(self) -> list[str]:
        return [await self.ws.get_message()]

    async def send(self, text: str) -> None:
        await self.ws.send_message(text)


class SansIOConn:
    """``websockets.client.ClientProtocol`` driven by hand over a trio stream, one task."""

    def __init__(self, stream: trio.SocketStream, protocol: Any) -> None:
        self.stream = stream
        self.protocol = protocol
        self.parts: list[bytes] = []

    @classmethod
    async def open(cls, url: str, port: int) -> SansIOConn:
        from websockets.client import ClientProtocol
        from websockets.protocol import State
        from websockets.uri import parse_uri

        stream = await trio.open_tcp_stream("127.0.0.1", port)
        protocol = ClientProtocol(parse_uri(url), max_size=None)
        protocol.send_request(protocol.connect())
        conn = cls(stream, protocol)
        await conn.flush()
        while protocol.state is not State.OPEN:
            data = await stream.receive_some(65536)
            if not data:
                raise EOFError
            protocol.receive_data(data)
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
        return conn

    async def flush(self) -> None:
        out = self.protocol.data_to_send()
        if out:
            await self.stream.send_all(b"".join(out))

    async def batch(self) -> list[bytes]:
        from websockets.frames import Frame, Opcode

        protocol = self.protocol
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                protocol.receive_eof()
                raise EOFError
            protocol.receive_data(data)
            await self.flush()  # pongs, close echoes
            messages = []
            for event in protocol.events_received():
                if not isinstance(event, Frame):
                    if protocol.handshake_exc is not None:
                        raise protocol.handshake_exc
                    continue
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.CONT:
                    if event.fin and not self.parts:
                        messages.append(bytes(event.data))
                    else:
                        self.parts.append(bytes(event.data))
                        if event.fin:
                            messages.append(b"".join(self.parts))
                            self.parts.clear()
                elif event.opcode is Opcode.CLOSE:
                    raise EOFError
            if messages:
                return messages

    async def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self.flush()

    async def aclose(self) -> None:
        self.protocol.send_close(1000)
        with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError, OSError):
            await self.flush()
        await self.stream.aclose()


async def raw_run(spec: Spec, query: str, sink: RawSink) -> None:
    """Connect with the client's layer, handshake, then feed ``sink`` until the sentinel."""
    url = url_for(spec, query)
    if spec["client"] == "raw-tws":
        from trio_websocket import open_websocket_url

        async with open_websocket_url(
            url, max_message_size=64 * 2**20, message_queue_size=64, receive_buffer_size=65536
        ) as ws:
            conn = TwsConn(ws)
            await raw_handshake(conn, sink.store)
            await raw_loop(conn, sink)
    else:
        sansio = await SansIOConn.open(url, spec["port"])
        try:
            await raw_handshake(sansio, sink.store)
            await raw_loop(sansio, sink)
        finally:
            await sansio.aclose()


async def raw_loop(conn: RawConn, sink: RawSink) -> None:
    feed = sink.feed
    batch = conn.batch
    while True:
        for message in await batch():
            if feed(message):
                return


# --- the naive asyncio client ------------------------------------------------------------------


async def asyncio_run(spec: Spec, query: str, sink: RawSink) -> None:
    """What a user would write: ``websockets`` asyncio, stdlib json, a dict."""
    from websockets.asyncio.client import connect

    store = sink.store
    async with connect(url_for(spec, query), max_size=None) as ws:
        await ws.send(f"authorize\n0\n\n{TOKEN}")
        async for message in ws:
            if not isinstance(message, str) or message[0] != "a":
                continue
            done = False
            for m in json.loads(message[1:]):
                if m.get("i") == 0:
                    await ws.send(f"user/syncrequest\n1\n\n{SYNC_BODY}")
                elif m.get("i") == 1:
                    for name, values in m["d"].items():
                        for value in values:
                            store[(name, value["id"])] = value
                elif m.get("e") == "props":
                    d = m["d"]
                    entity = d["entity"]
                    store[(d["entityType"], entity["id"])] = entity
                    sink.events += 1
                    if sink.first is None:
                        sink.first = time.perf_counter()
                    if entity["id"] == _SENTINEL:
                        sink.done = time.perf_counter()
                        done = True
            if done:
                return


# --- the engine ---------------------------------------------------------------------------------


def engine_config(spec: Spec, query: str, **extra: Any) -> Any:
    from trio_tradovate import EngineConfig

    layer = spec.get("layer")
    if layer is not None:
        extra["websocket_layer"] = layer
    return EngineConfig(
        rest_url=f"http://127.0.0.1:{spec['port']}/v1",
        ws_url=url_for(spec, query),
        access_token=TOKEN,
        user_id=common.USER_ID,
        **extra,
    )


def batch_events(engine: Any) -> Any | None:
    """The engine's changes as an async iterator of batches (``receive_batch()``, or
    ``events(batch=True)`` where that is the form offered), else ``None``."""
    if "batch" in inspect.signature(engine.events).parameters:
        return engine.events(batch=True)
    receive_batch = getattr(engine.events(), "receive_batch", None)
    if receive_batch is None:
        return None

    async def batches() -> Any:
        while True:
            try:
                yield await receive_batch()
            except trio.EndOfChannel:
                return

    return batches()


async def each_change(engine: Any) -> Any:
    """Every change, taken in batches when the engine offers them (the way a consumer that
    wants throughput reads), one by one otherwise."""
    batches = batch_events(engine)
    if batches is None:
        async for change in engine.events():
            yield change
        return
    async for batch in batches:
        for change in batch:
            yield change
        # A consumer that is done with a batch lets go of it before waiting for the next:
        # else it holds one batch of changes across the engine's next read, where the
        # collector's middle generation promotes them to the oldest, a batch at a time.
        del batch


async def _singles(changes: Any) -> Any:
    async for change in changes:
        yield [change]


async def engine_flood(spec: Spec, gcw: common.GcWatch) -> dict[str, Any]:
    from trio_tradovate import open_engine

    n = spec["n"]
    first = done = 0.0
    changes = 0
    mark = gcw.mark()
    async with open_engine(engine_config(spec, f"mode=flood&n={n}")) as engine:
        batches = batch_events(engine)
        if batches is None:  # an engine without batches: one change at a time
            batches = _singles(engine.events())
        async for batch in batches:  # what a consumer that wants throughput writes
            for change in batch:
                if change.recovered:
                    continue
                if not changes:
                    first = time.perf_counter()
                    mark = gcw.mark()
                changes += 1
                if change.entity_id == _SENTINEL:
                    done = time.perf_counter()
                    break
            if done:
                break
            del batch  # see each_change
        gc_stats = gcw.since(mark)
        coalesced = engine.delivery["coalesced"]
    return {
        "events_per_s": n / (done - first),
        "seconds": done - first,
        "changes": changes,
        "coalesced": coalesced,
        **gc_stats,
    }


async def engine_latency(
    spec: Spec, rate: int, seconds: float, gcw: common.GcWatch
) -> tuple[list[int], int, dict[str, float]]:
    """Samples, coalesced changes, and the full collections from the first streamed event to
    the sentinel (the engine's collections while the socket is down, at its close, are not
    streaming's: see ``collector.py``)."""
    from trio_tradovate import open_engine

    samples: list[int] = []
    query = f"mode=rate&rate={rate}&seconds={seconds}"
    mark = gcw.mark()
    async with open_engine(engine_config(spec, query)) as engine:
        # The consumer as an application writes it, in its own task: a batch at a time
        # (whatever waits; one change at this rate), straight from the change stream.
        changes = engine.events()
        done = False
        while not done:
            batch = await changes.receive_batch()
            for change in batch:
                if change.recovered:
                    continue
                if not samples:
                    mark = gcw.mark()
                if change.entity_id == _SENTINEL:
                    done = True
                    break
                samples.append(_MONO() - (change.entity["sentNs"] - _BASE))
            del batch  # see each_change
        gc_stats = gcw.since(mark)
        coalesced: int = engine.delivery["coalesced"]
    return samples, coalesced, gc_stats


class RecordingStream(trio.abc.HalfCloseableStream):
    """The engine's byte stream, wrapped to see when the sync answer arrives.

    It reads the client's own (masked) frames as they are sent; once ``user/syncrequest`` has
    gone out, the next bytes received are the sync answer: their first arrival, the moment the
    whole frame is in, and the frame's payload (kept, to time ``orjson.loads`` on the same
    bytes afterwards).
    """

    def __init__(self, inner: trio.SocketStream, on_sync_sent: Callable[[], None]) -> None:
        self.inner = inner
        self.on_sync_sent = on_sync_sent
        self.sync_sent = False
        self.first_byte: float | None = None
        self.complete: float | None = None
        self.captured = bytearray()
        self.frame_size: int | None = None
        self.header = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self.sync_sent:
            raw = bytes(data[:64])
            sizes = common.ws_header_length(raw)
            if sizes is not None and sizes[0] <= len(raw):
                head = sizes[0]
                text = common.unmask(raw[head : head + 16], raw[head - 4 : head])
                if text.startswith(b"user/syncrequest"):
                    self.sync_sent = True
                    self.on_sync_sent()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        if self.sync_sent and self.complete is None and data:
            now = time.perf_counter()
            if self.first_byte is None:
                self.first_byte = now
            self.captured += data
            if self.frame_size is None:
                sizes = common.ws_header_length(self.captured)
                if sizes is not None:
                    self.header, length = sizes
                    self.frame_size = self.header + length
            if self.frame_size is not None and len(self.captured) >= self.frame_size:
                self.complete = now
                del self.captured[self.frame_size :]
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()

    def payload(self) -> bytes:
        return bytes(self.captured[self.header : self.frame_size])


async def engine_snapshot(spec: Spec, gcw: common.GcWatch) -> dict[str, Any]:
    from trio_tradovate import State, open_engine

    recorder: list[RecordingStream] = []
    marks: list[tuple[int, float, float]] = []

    async def connector(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        stream = RecordingStream(
            await trio.open_tcp_stream(host, port), lambda: marks.append(gcw.mark())
        )
        recorder.append(stream)
        return stream

    offset = trio.current_time() - time.perf_counter()
    query = f"mode=snapshot&bytes={spec['bytes']}"
    async with open_engine(engine_config(spec, query, connector=connector)) as engine:
        batches = batch_events(engine)
        record = await engine.wait_for(State.LIVE)
        # LIVE as the application meets it: the store holds the snapshot. The transition
        # record is written as the chart moves, just before the same synchronous step applies
        # the snapshot, so its time alone would leave the apply out.
        live = time.perf_counter()
        record_to_ready = live - (record.time - offset)
        expected = len(engine.store)
        delivered = 0
        last = 0.0
        if batches is not None:
            async for batch in batches:
                delivered += len(batch)
                if delivered >= expected:
                    break
        else:
            async for _ in engine.events():
                delivered += 1
                if delivered >= expected:
                    break
        last = time.perf_counter()
        gc_stats = gcw.since(marks[0])
        del engine
    stream = recorder[0]
    assert stream.first_byte is not None
    assert stream.complete is not None
    payload = stream.payload()
    recorder.clear()
    gc.collect()
    loads = []
    for _ in range(3):
        began = time.perf_counter()
        orjson.loads(payload[1:])
        loads.append(time.perf_counter() - began)
    gc.disable()
    began = time.perf_counter()
    orjson.loads(payload[1:])
    loads_nogc = time.perf_counter() - began
    gc.enable()
    return {
        "snapshot_bytes": len(payload),
        "entities": expected,
        "batch_consumer": batches is not None,
        "first_byte_to_live_ms": (live - stream.first_byte) * 1000,
        "received_to_live_ms": (live - stream.complete) * 1000,
        "transfer_ms": (stream.complete - stream.first_byte) * 1000,
        "loads_ms": statistics.median(loads) * 1000,
        "loads_nogc_ms": loads_nogc * 1000,
        "record_to_ready_ms": record_to_ready * 1000,
        "live_to_delivered_ms": (last - live) * 1000,
        "per_change_us": (last - live) / max(1, delivered) * 1e6,
        **gc_stats,
    }


def _recovery_config(spec: Spec, query: str, **extra: Any) -> Any:
    """No backoff to speak of and no client-side request pacing: what is timed is the
    engine's own work from the drop to LIVE."""
    from trio_tradovate import BackoffPolicy, Window

    return engine_config(
        spec,
        query,
        backoff=BackoffPolicy(initial=0.001, factor=1.0, cap=0.001),
        rate_limits={"*": (Window(10**9, 1.0),)},
        **extra,
    )


async def engine_drop(spec: Spec) -> dict[str, Any]:
    from trio_tradovate import State, open_engine

    drops = spec["drops"]
    query = f"mode=drop&key={os.getpid()}-{time.time_ns()}&drops={drops}&hold_ms={spec['hold_ms']}"
    lives: list[float] = []
    losses: list[float] = []
    async with open_engine(_recovery_config(spec, query)) as engine:
        offset = trio.current_time() - time.monotonic()
        watch = engine.watch_transitions(4096)
        async for record in watch:
            if record.dest is State.LIVE and record.source is not State.LIVE:
                lives.append(record.time - offset)
                if len(lives) > drops:
                    break
            elif record.source is State.LIVE and record.dest is not State.LIVE:
                losses.append(record.time - offset)
        stamps = [
            (engine.store.get("order", common.DROP_MARKER_ID + i) or {}).get("sentNs")
            for i in range(drops)
        ]
    to_live = []
    detect = []
    for i, stamp in enumerate(stamps):
        if stamp is None:
            continue
        dropped = (stamp - _BASE) / 1e9
        to_live.append((lives[i + 1] - dropped) * 1000)
        detect.append((losses[i] - dropped) * 1000)
    return {
        "drops": len(to_live),
        "drop_to_live_ms_median": statistics.median(to_live),
        "drop_to_live_ms_max": max(to_live),
        "detect_ms_median": statistics.median(detect),
    }


def _memory_point(events: int) -> dict[str, float]:
    gc.collect()
    return {"at": events, "rss_mb": common.rss_bytes() / 2**20, "objects": len(gc.get_objects())}


async def drain(events: Any) -> None:
    async for _ in events:
        pass


async def engine_reconnects(spec: Spec) -> dict[str, Any]:
    from trio_tradovate import State, open_engine

    budget = spec["seconds"]
    target = spec["max_reconnects"]
    warm = spec["warm"]
    query = f"mode=drop&key={os.getpid()}-{time.time_ns()}&drops={10**9}&hold_ms=0&marker=same"
    points = []
    lives = 0
    began = time.perf_counter()
    config = _recovery_config(spec, query, transition_log_size=100)
    async with open_engine(config) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(drain, engine.events())  # a consumer, as an application has
        watch = engine.watch_transitions(4096)
        async for record in watch:
            if record.dest is State.LIVE and record.source is not State.LIVE:
                lives += 1
                if lives == warm:
                    points.append(_memory_point(lives - 1))
                    began = time.perf_counter()
                # ``target`` reconnects counted from the warm-up point, not from the start
                elif lives > warm and (
                    lives - warm >= target or time.perf_counter() - began > budget
                ):
                    points.append(_memory_point(lives - 1))
                    break
        reconnects = engine.counters["reconnects"]
        nursery.cancel_scope.cancel()
    first, last = points[0], points[-1]
    return {
        "reconnects": reconnects,
        "points": points,
        "seconds": time.perf_counter() - began,
        "rss_growth_pct": (last["rss_mb"] / first["rss_mb"] - 1) * 100,
        "objects_growth": last["objects"] - first["objects"],
    }


async def engine_memory(spec: Spec) -> dict[str, Any]:
    """A long flood; RSS and live objects at ``spec["points"]`` changes delivered, stopping
    at the last point or when ``spec["seconds"]`` have passed after the first."""
    from trio_tradovate import open_engine

    wanted = list(spec["points"])
    budget = spec["seconds"]
    points = []
    changes = 0
    began = time.perf_counter()
    async with open_engine(engine_config(spec, f"mode=flood&n={wanted[-1] + 1}")) as engine:
        # In batches, to keep up: a consumer that fell behind would see the stream coalesced
        # (fewer changes than frames) and never reach the last point.
        batches = batch_events(engine)
        if batches is None:
            batches = _singles(engine.events())
        async for batch in batches:
            before = changes
            changes += sum(not change.recovered for change in batch)
            del batch
            if before < wanted[0] <= changes:
                points.append(_memory_point(changes))
                wanted.pop(0)
                if not wanted:
                    break
                if len(points) == 1:
                    began = time.perf_counter()
            elif points and time.perf_counter() - began > budget:
                points.append(_memory_point(changes))
                break
        frames = engine.counters["frames_received"]
    first, last = points[0], points[-1]
    return {
        "points": points,
        "frames_received": frames,
        "rss_growth_pct": (last["rss_mb"] / first["rss_mb"] - 1) * 100,
        "objects_growth": last["objects"] - first["objects"],
    }


# --- scenarios per client ------------------------------------------------------------------------


def latency_summary(samples: list[int], rate: int) -> dict[str, float]:
    kept = samples[rate // 2 :]  # the first half second is warm-up
    p50, p99, p999 = common.percentiles([s / 1e6 for s in kept], (50, 99, 99.9))
    return {
        "samples": len(kept),
        "p50_ms": p50,
        "p99_ms": p99,
        "p999_ms": p999,
        "max_ms": max(kept) / 1e6,
    }


async def raw_flood(spec: Spec, gcw: common.GcWatch) -> dict[str, Any]:
    sink = RawSink(latency=False)
    mark = gcw.mark()
    await raw_run(spec, f"mode=flood&n={spec['n']}", sink)
    assert sink.first is not None
    assert sink.done is not None
    return {
        "events_per_s": spec["n"] / (sink.done - sink.first),
        "seconds": sink.done - sink.first,
        "changes": sink.events,
        **gcw.since(mark),
    }


async def trio_latency(
    spec: Spec,
    gcw: common.GcWatch,
    measure: Callable[[int, float], Awaitable[tuple[list[int], int, dict[str, float] | None]]],
) -> dict[str, Any]:
    """Each rate's latency summary; full collections counted over the streaming when the
    client says (the engine), else over the whole run (a raw client has no other)."""
    results: dict[str, dict[str, Any]] = {}
    for rate, seconds in spec["rates"]:
        mark = gcw.mark()
        samples, coalesced, streaming_gc = await measure(rate, seconds)
        results[str(rate)] = {
            **latency_summary(samples, rate),
            "coalesced": coalesced,
            **(streaming_gc if streaming_gc is not None else gcw.since(mark)),
        }
        if spec.get("keep_samples"):  # for run.py to pool rounds (not written to the JSON)
            results[str(rate)]["samples_ns"] = samples[rate // 2 :]
    return results


def main() -> None:
    spec: Spec = json.loads(sys.argv[1])
    if os.environ.get("BENCH_PIN"):  # pin only on a quiet machine: under load it halves the CPU
        os.sched_setaffinity(0, {1})
    gcw = common.GcWatch()
    client, scenario = spec["client"], spec["scenario"]
    result: Any
    if client == "asyncio":
        sink = RawSink(latency=False)
        mark = gcw.mark()
        asyncio.run(asyncio_run(spec, f"mode=flood&n={spec['n']}", sink))
        assert sink.first is not None
        assert sink.done is not None
        result = {
            "events_per_s": spec["n"] / (sink.done - sink.first),
            "seconds": sink.done - sink.first,
            "changes": sink.events,
            **gcw.since(mark),
        }
    elif client == "engine":
        runners: dict[str, Callable[[], Awaitable[Any]]] = {
            "flood": lambda: engine_flood(spec, gcw),
            "snapshot": lambda: engine_snapshot(spec, gcw),
            "drop": lambda: engine_drop(spec),
            "reconnects": lambda: engine_reconnects(spec),
            "memory": lambda: engine_memory(spec),
            "latency": lambda: trio_latency(
                spec, gcw, lambda rate, seconds: engine_latency(spec, rate, seconds, gcw)
            ),
        }
        result = trio.run(runners[scenario])
    elif scenario == "flood":
        result = trio.run(raw_flood, spec, gcw)
    else:

        async def raw_latency(rate: int, seconds: float) -> tuple[list[int], int, None]:
            sink = RawSink(latency=True)
            await raw_run(spec, f"mode=rate&rate={rate}&seconds={seconds}", sink)
            return sink.samples, 0, None

        result = trio.run(trio_latency, spec, gcw, raw_latency)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
