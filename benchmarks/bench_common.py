"""What the frame server and every client of ``make bench`` share: the frames, the snapshot,
websocket framing, and small measuring helpers (RSS, garbage-collection pauses, percentiles).

Stdlib and orjson only, so each client process imports nothing it does not measure.
"""

from __future__ import annotations

import gc
import math
import os
import time
from typing import Any

import orjson

#: The user, accounts and the id ranges every frame and snapshot uses.
USER_ID = 2_650_001
ACCOUNTS = (60_320_001, 60_320_002)
ORDER_BASE = 33_809_000
#: Distinct orders the streamed frames cycle over (every frame changes its order).
ORDER_POOL = 256
#: Pre-encoded frames per cycle: 16 versions of each of the 256 orders, so consecutive
#: versions of one order always differ and the engine never skips an event as a no-op.
FRAME_POOL = 4096
#: The last frame of a stream: an order with this id tells the client it has seen everything.
SENTINEL_ID = 1
#: Orders from this id on are the last event before the server drops the socket.
DROP_MARKER_ID = 10_000_000
#: Fixed-width send stamps: ``STAMP_BASE + time.monotonic_ns()`` always has 19 digits.
STAMP_BASE = 10**18
STAMP_PLACEHOLDER = b"1" + b"0" * 18


def order(i: int, stamp: int = STAMP_BASE, oid: int | None = None) -> dict[str, Any]:
    """The ``i``-th version of an order, about 238 bytes as a ``props`` frame."""
    return {
        "id": ORDER_BASE + i % ORDER_POOL if oid is None else oid,
        "accountId": ACCOUNTS[i % 2],
        "contractId": 42_659_000 + i % 3,
        "timestamp": f"2026-01-05T14:{30 + i % 30:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "ordStatus": "Working",
        "orderQty": 1 + (i // ORDER_POOL) % 16,
        "sentNs": stamp,
    }


def props_frame(entity: dict[str, Any], event_type: str = "Updated") -> bytes:
    """``a[{"e":"props","d":{...}}]`` for one order."""
    message = {
        "e": "props",
        "d": {"entityType": "order", "eventType": event_type, "entity": entity},
    }
    return b"a" + orjson.dumps([message])


def stream_payloads() -> list[bytes]:
    """The ``FRAME_POOL`` props frames a stream cycles over (stamp field = placeholder)."""
    return [props_frame(order(i)) for i in range(FRAME_POOL)]


def small_snapshot() -> dict[str, Any]:
    """The sync answer of the streaming scenarios: the user and its two accounts."""
    return {
        "users": [{"id": USER_ID, "name": "bench", "status": "Active"}],
        "accounts": [
            {"id": a, "name": f"DEMO{a}", "userId": USER_ID, "active": True} for a in ACCOUNTS
        ],
    }


def big_snapshot(target_bytes: int) -> dict[str, Any]:
    """A sync answer of about ``target_bytes`` of JSON: mostly orders, with fills, positions
    and cash balances, every entity with a distinct id (so each becomes one change)."""
    per_entity = len(orjson.dumps(order(0))) + 1
    count = max(1, target_bytes // per_entity)
    orders = [order(i, oid=100_000_000 + i) for i in range(count * 8 // 10)]
    fills = [
        {
            "id": 200_000_000 + i,
            "orderId": 100_000_000 + i,
            "contractId": 42_659_000 + i % 3,
            "timestamp": f"2026-01-05T14:{30 + i % 30:02d}:{i % 60:02d}.000Z",
            "tradeDate": {"year": 2026, "month": 1, "day": 5},
            "action": "Buy",
            "qty": 1 + i % 4,
            "price": 6900.0 + (i % 80) * 0.25,
            "active": True,
        }
        for i in range(count - len(orders))
    ]
    positions = [
        {"id": 300_000_000 + i, "accountId": a, "contractId": 42_659_000 + i, "netPos": 1}
        for i, a in enumerate(ACCOUNTS)
    ]
    cash = [
        {"id": 400_000_000 + i, "accountId": a, "amount": 50_000.0} for i, a in enumerate(ACCOUNTS)
    ]
    snapshot = small_snapshot()
    snapshot.update(orders=orders, fills=fills, positions=positions, cashBalances=cash)
    return snapshot


def entity_count(snapshot: dict[str, Any]) -> int:
    return sum(len(v) for v in snapshot.values() if isinstance(v, list))


# --- websocket framing (RFC 6455), server side ------------------------------------------------


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked, unfragmented server frame."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def ws_header_length(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(header length, payload length) of the frame starting ``data``, if enough is there."""
    if len(data) < 2:
        return None
    n = data[1] & 0x7F
    mask = 4 if data[1] & 0x80 else 0
    if n == 126:
        if len(data) < 4:
            return None
        return 4 + mask, int.from_bytes(data[2:4], "big")
    if n == 127:
        if len(data) < 10:
            return None
        return 10 + mask, int.from_bytes(data[2:10], "big")
    return 2 + mask, n


def unmask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


# --- measuring helpers -------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class GcWatch:
    """Counts full (generation 2) collections and their pauses, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.full = 0
        self.full_pause_s = 0.0
        self.max_pause_s = 0.0
        self.young = 0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        if info["generation"] == 2:
            pause = time.perf_counter() - self._began
            self.full += 1
            self.full_pause_s += pause
            self.max_pause_s = max(self.max_pause_s, pause)
        else:
            self.young += 1

    def mark(self) -> tuple[int, float, float]:
        """A point to measure from (see :meth:`since`)."""
        self.max_pause_s = 0.0
        return self.full, self.full_pause_s, time.perf_counter()

    def since(self, mark: tuple[int, float, float]) -> dict[str, float]:
        full, pause, _ = mark
        return {
            "gen2_collections": self.full - full,
            "gen2_pause_ms": (self.full_pause_s - pause) * 1000,
            "gen2_max_pause_ms": self.max_pause_s * 1000,
        }


def percentiles(samples: list[float], points: tuple[float, ...]) -> list[float]:
    """Nearest-rank percentiles of ``samples`` (each point in (0, 100))."""
    if not samples:
        return [float("nan")] * len(points)
    ordered = sorted(samples)
    last = len(ordered) - 1
    return [ordered[max(0, min(last, math.ceil(p / 100 * len(ordered)) - 1))] for p in points]
