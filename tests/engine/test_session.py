"""The sans-I/O session, fed server text and ``now`` synchronously: no trio, no sockets."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import orjson
import pytest

from trio_tradovate.errors import (
    AuthenticationTimeout,
    CaptchaRequired,
    ClosedByServer,
    ConnectTimeout,
    Penalized,
    RateLimited,
    RemoteProtocolError,
    RequestError,
    ServerShutdown,
    Stalled,
    SyncTimeout,
)
from trio_tradovate.protocol import Push, parse_entity_event, parse_frame
from trio_tradovate.scheduler import MAX_SERVER_WAIT, PENALTY_MARGIN
from trio_tradovate.session import (
    EVENT_TYPES,
    Answer,
    AuthorizationRejected,
    Authorized,
    BudgetReady,
    ConnectionEnded,
    EntityEvents,
    Limits,
    MalformedInput,
    Opened,
    OtherPush,
    PartsComplete,
    PhaseTimedOut,
    ServerClosing,
    ServerHeartbeat,
    ShutdownAnnounced,
    SnapshotPart,
    SnapshotReady,
    SyncRejected,
    SyncSession,
    Unrequested,
    closed_fault,
)
from trio_tradovate.statechart import Node

LIMITS = Limits(connect=5, authorize=10, sync=60, silence=10, split_quiet=0.5)
SECRET = "tok-123-secret"


def session(
    *, split: bool = False, pace: float = 0.0, minted_at: float | None = 0.0, renewable: bool = True
) -> SyncSession:
    return SyncSession(
        generation=1,
        now=0.0,
        limits=LIMITS,
        token=SECRET,
        token_minted_at=minted_at,
        renewable=renewable,
        split=split,
        sync_pace=lambda now: pace,
        lockout_seconds=3600,
    )


def answer(request_id: int, status: int = 200, data: Any = None) -> str:
    # by hand, so ids past 64 bits can be sent too
    return f'a[{{"i":{request_id},"s":{status},"d":{orjson.dumps(data).decode()}}}]'


def props(entity_type: str, event_type: str, entity: dict[str, Any]) -> str:
    body = {"entityType": entity_type, "eventType": event_type, "entity": entity}
    return "a" + orjson.dumps([{"e": "props", "d": body}]).decode()


def authorized(s: SyncSession, now: float = 1.0) -> Authorized:
    assert s.receive("o", now) == [Opened()]
    s.entered(Node.AUTHENTICATING, now)
    frame = s.authorize()
    assert frame == f"authorize\n0\n\n{SECRET}"
    [event] = s.receive(answer(0), now)
    assert isinstance(event, Authorized)
    return event


def test_the_happy_conversation() -> None:
    s = session()
    assert authorized(s).sync_delay == 0
    s.entered(Node.SYNC_SENT, 1.0)
    assert s.sync({"users": [7]}) == 'user/syncrequest\n1\n\n{"users":[7]}'
    assert s.sync_sent
    snapshot = {"orders": [{"id": 1}]}
    assert s.receive(answer(1, data=snapshot), 2.0) == [SnapshotReady(snapshot)]
    assert s.receive("h", 3.0) == [ServerHeartbeat()]
    assert next(s.request_ids) == 2  # application requests continue the socket's ids
    assert SECRET not in repr(s)


def test_a_second_answer_to_authorize_or_to_the_sync_is_unrequested() -> None:
    s = session()
    authorized(s)
    [again] = s.receive(answer(0, 401, "no"), 2)
    assert isinstance(again, Unrequested)
    s.entered(Node.SYNC_SENT, 2)
    s.sync({})
    s.receive(answer(1, data={"orders": []}), 3)
    [second] = s.receive(answer(1, data={"orders": [{"id": 9, "ordStatus": "Working"}]}), 4)
    assert isinstance(second, Unrequested)
    assert "second answer" in second.why


def test_an_answer_to_an_id_the_session_does_not_own_is_passed_on() -> None:
    s = session()
    [event] = s.receive(answer(0, data=[1]), 0.5)  # before authorize was even sent
    assert isinstance(event, Answer)
    [event] = s.receive(answer(77), 0.6)
    assert isinstance(event, Answer)


@pytest.mark.parametrize(
    ("minted_at", "renewable", "fresh"),
    [(0.0, True, True), (-600.0, True, False), (None, False, False)],
)
def test_authorize_rejections_say_whether_a_new_token_could_help(
    minted_at: float | None, renewable: bool, fresh: bool
) -> None:
    s = session(minted_at=minted_at, renewable=renewable)
    s.receive("o", 1)
    s.authorize()
    [event] = s.receive(answer(0, 401, {"errorText": "Invalid access token"}), 2)
    assert isinstance(event, AuthorizationRejected)
    assert (event.fresh, event.renewable) == (fresh, renewable)
    assert event.fault.kind == "auth_rejected"
    assert SECRET not in str(event.fault.error)


def test_a_paced_sync_waits_for_its_budget_not_for_a_timeout() -> None:
    s = session(pace=120.0)
    assert authorized(s).sync_delay == 120.0
    s.entered(Node.SYNC_PACED, 1.0)
    assert s.next_deadline() == 11.0  # the silence watchdog still runs
    s.receive("h", 9)
    s.receive("h", 19)
    assert s.expire(19) == []
    s.last_frame_at = 121  # heartbeats kept coming
    assert s.expire(121) == [BudgetReady()]


@pytest.mark.parametrize(
    ("node", "deadline", "kind", "error"),
    [
        (Node.CONNECTING, 5, "connect_timeout", ConnectTimeout),
        (Node.AUTHENTICATING, 10, "auth_timeout", AuthenticationTimeout),
        (Node.SYNC_SENT, 60, "sync_timeout", SyncTimeout),
    ],
)
def test_phase_deadlines(node: Node, deadline: float, kind: str, error: type) -> None:
    s = session()
    s.entered(node, 0.0)
    s.last_frame_at = 1000.0  # keep the silence watchdog out of the way
    assert s.next_deadline() == deadline
    assert s.expire(deadline - 0.01) == []
    [event] = s.expire(deadline)
    assert isinstance(event, PhaseTimedOut)
    assert event.fault.kind == kind
    assert isinstance(event.fault.error, error)
    assert s.expire(deadline + 1) == []  # said once


def test_silence_ends_the_connection_in_any_node() -> None:
    for node in (Node.CONNECTING, Node.SYNC_PACED, Node.LIVE):
        s = session()
        s.entered(node, 0)
        [event] = s.expire(10.0)
        assert isinstance(event, ConnectionEnded)
        assert isinstance(event.fault.error, Stalled)


def test_split_parts_are_collected_until_the_quiet_period_passes() -> None:
    s = session(split=True)
    authorized(s)
    s.entered(Node.SYNC_SENT, 1)
    s.sync({"splitResponses": True})
    [first] = s.receive(answer(1, data={"orders": [{"id": 1}], "accounts": []}), 2.0)
    assert isinstance(first, SnapshotPart)
    s.entered(Node.SYNC_COLLECTING, 2.0)
    assert s.next_deadline() == 2.5
    [second] = s.receive(answer(1, data={"orders": [{"id": 2}], "accounts": [{"id": 5}]}), 2.4)
    assert isinstance(second, SnapshotPart)
    assert s.next_deadline() == pytest.approx(2.9)  # the quiet period starts again
    assert s.expire(2.9) == [PartsComplete()]
    assert s.assembled() == {"orders": [{"id": 1}, {"id": 2}], "accounts": [{"id": 5}]}
    s.entered(Node.LIVE, 2.9)
    [late] = s.receive(answer(1, data={"orders": [{"id": 3}]}), 3.5)
    assert isinstance(late, SnapshotPart)  # the table upserts it; nothing is kept here
    assert s.assembled() == {}


@pytest.mark.parametrize(
    ("status", "data", "kind", "error", "delay"),
    [
        (429, None, "sync_rate_limited", RateLimited, 3600),
        (200, {"p-ticket": "t", "p-captcha": True}, "sync_penalized", CaptchaRequired, 3600),
        (200, {"p-ticket": "t", "p-time": 7}, "sync_penalized", Penalized, 7 + PENALTY_MARGIN),
        (200, {"p-ticket": "t", "p-time": "soon"}, "sync_penalized", Penalized, PENALTY_MARGIN),
        (200, {"p-ticket": "t", "p-time": -5}, "sync_penalized", Penalized, PENALTY_MARGIN),
        (
            200,
            {"p-ticket": "t", "p-time": 1e300},
            "sync_penalized",
            Penalized,
            MAX_SERVER_WAIT + PENALTY_MARGIN,
        ),
        (400, "users with entityTypes", "sync_failed", RequestError, 0),
        (200, ["not", "an", "object"], "sync_failed", RequestError, 0),
    ],
)
def test_sync_refusals_are_classified_and_server_numbers_clamped(
    status: int, data: Any, kind: str, error: type, delay: float
) -> None:
    s = session()
    authorized(s)
    s.entered(Node.SYNC_SENT, 1)
    s.sync({})
    [event] = s.receive(answer(1, status, data), 2)
    assert isinstance(event, SyncRejected)
    assert event.fault.kind == kind
    assert isinstance(event.fault.error, error)
    assert event.fault.min_delay == pytest.approx(delay)
    assert math.isfinite(event.fault.min_delay)
    if kind == "sync_penalized" and error is Penalized:
        assert event.fault.ticket == "t"


def test_events_that_race_the_snapshot_are_coalesced_per_entity() -> None:
    s = session()
    for n in range(10_000):
        s.buffer([("order", "Updated", {"id": n % 10, "n": n})])
    s.buffer([("order", "Deleted", {"id": 3})])
    assert s.buffered == 10  # memory bounded by entities, not by events
    updates = s.take_buffered()
    last = {entity["id"]: (event_type, entity) for _, event_type, entity in updates}
    assert last[3] == ("Deleted", {"id": 3})
    assert last[4] == ("Updated", {"id": 4, "n": 9994})
    assert s.buffered == 0


def test_what_else_the_server_may_say() -> None:
    s = session()
    [closing] = s.receive('c[3000,"Go away!"]', 1)
    assert isinstance(closing, ServerClosing)
    assert isinstance(closing.fault.error, ClosedByServer)
    shutdown = 'a[{"e":"shutdown","d":{"reasonCode":7,"reason":"x"}}]'
    [down] = s.receive(shutdown, 1)
    assert isinstance(down, ShutdownAnnounced)
    assert isinstance(down.fault.error, ServerShutdown)
    assert down.fault.error.reason_code == "Unknown"
    assert s.receive('a[{"e":"md","d":{}}]', 1) == [OtherPush("md")]
    assert isinstance(s.receive(b"\x00binary", 1)[0], MalformedInput)
    assert isinstance(s.receive("", 1)[0], MalformedInput)
    assert isinstance(s.receive("o", 1)[0], Opened)
    assert isinstance(s.receive("o", 1)[0], MalformedInput)  # a second 'o'
    deep = 'a[{"e":"props","d":{"entityType":"order","eventType":"Created","entity":{"id":1,"x":'
    deep += "[" * 1000 + "]" * 1000 + "}}}]"
    assert len(deep) < 2200
    [event] = s.receive(deep, 1)
    assert isinstance(event, MalformedInput)
    [valid] = s.receive(props("order", "Created", {"id": 1}), 1)
    assert isinstance(valid, EntityEvents)
    assert closed_fault(1006, "").kind == "dropped"
    assert closed_fault(1009, "too big").kind == "protocol_error"
    assert closed_fault(1000, "bye").kind == "closed_by_server"


def _random_frame(rng: random.Random, ids: int) -> str | bytes:
    choice = rng.randrange(14)
    request_id = rng.choice([0, 1, 2, rng.randrange(-3, ids + 5), 2**70])
    status = rng.choice([200, 200, 401, 400, 429, 500, -1])
    data: Any = rng.choice(
        [
            None,
            {"orders": [{"id": rng.randrange(5)}]},
            {"p-ticket": rng.choice(["t", 5, None, []]), "p-time": rng.choice([1, -1, "x", 1e308])},
            {"p-ticket": "t", "p-captcha": rng.choice([True, 1, "yes"])},
            "text",
            [1, 2],
        ]
    )
    if choice == 0:
        return "o"
    if choice == 1:
        return "h"
    if choice in (2, 3, 4):
        return answer(request_id, status, data)
    if choice == 5:
        return props(
            rng.choice(["order", "fill", "", 7]),  # type: ignore[arg-type]
            rng.choice(["Created", "Updated", "Deleted", "Bogus"]),
            rng.choice([{"id": rng.randrange(5)}, {"id": "x"}, {}]),
        )
    if choice == 6:
        return 'a[{"e":"shutdown","d":' + orjson.dumps(data).decode() + "}]"
    if choice == 7:
        return rng.choice(['c[3000,"Go away!"]', "c[1]", 'c["x",1]', "c"])
    if choice == 8:
        return rng.choice(["x", "", "a", "a[", "a{}", "o1", "hh", "a[1,2,3]"])
    if choice == 9:
        depth = rng.choice([10, 253, 255, 1023, 1025, 3000])
        return "a[" + "[" * depth + "]" * depth + "]"
    if choice == 10:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
    if choice == 11:
        return 'a[{"e":"' + rng.choice(["md", "chart", "clock", "weird", ""]) + '","d":1}]'
    if choice == 12:
        return answer(request_id, status, data)[:-1] + ',{"e":"props"}]'

    return "a" + orjson.dumps([rng.random(), None, {"i": True, "s": 200}]).decode()


def _mixed_frame(rng: random.Random) -> str | bytes:
    """A frame of several messages: props (valid or not) mixed with anything else."""
    if rng.random() < 0.3:
        return _random_frame(rng, 4)
    parts = []
    for _ in range(rng.randrange(1, 5)):
        body: Any = {
            "entityType": rng.choice(["order", "order", "fill", 7]),
            "eventType": rng.choice(["Created", "Updated", "Updated", "Deleted", "x", [], {}]),
            "entity": rng.choice(
                [
                    {"id": rng.randrange(5), "n": rng.random()},
                    [{"id": 1}, {"id": 2}],
                    {},
                    [],
                    # shapes the fast path reads by subscript, not by type check: each must
                    # fail it and reach the general path (a bool or float id, a string or a
                    # number for the entity)
                    {"id": True},
                    {"id": 1.0},
                    {"id": "1"},
                    "entity",
                    3,
                    None,
                ]
            ),
        }
        parts.append(
            rng.choice(
                [
                    {"e": "props", "d": body},
                    {"e": "props", "d": body},
                    {"e": "md", "d": {}},
                    {"i": rng.randrange(3), "s": 200},
                    "junk",
                    # containers of the wrong kind at every level the fast path subscripts
                    {"e": "props", "d": ["entity", "entityType"]},
                    {"e": "props", "d": "d"},
                    {"e": "props"},
                    {"e": ["props"], "d": body},
                    ["e", "props"],
                    7,
                    None,
                ]
            )
        )
    top = rng.random()
    if top < 0.04:  # a top level that is not an array of messages
        return "a" + orjson.dumps({"e": "props", "d": parts[0]}).decode()
    if top < 0.06:
        return rng.choice(['a""', "a{}", 'a"props"', "a5", "anull"])
    return "a" + orjson.dumps(parts).decode()


def _flat(events: list[Any]) -> list[Any]:
    """Events with every run of updates spread out one per entity, for comparison (other
    events by their repr: errors inside them do not compare equal)."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, EntityEvents):
            out.extend(("update", *update) for update in event.updates)
        else:
            out.append(repr(event))
    return out


@pytest.mark.parametrize("seed", range(60))
def test_a_read_gives_the_events_of_its_messages_in_order_and_stops_at_other_events(
    seed: int,
) -> None:
    """Reading a batch of messages gives exactly the events reading them one at a time
    gives, in the same order (updates included, one per entity); consecutive updates come
    as one run; and each call stops right after the first message holding anything else, so
    the caller can act on it before the next message is read."""
    rng = random.Random(seed)
    one, many = session(), session()
    for s in (one, many):
        authorized(s)
        s.entered(Node.LIVE, 1)
    messages = [_mixed_frame(rng) for _ in range(rng.randrange(1, 40))]
    expected = _flat([event for message in messages for event in one.receive(message, 2)])
    got: list[Any] = []
    index = 0
    while index < len(messages):
        events, after = many.receive_batch(messages, 2, index)
        assert after > index
        # updates in a row are one run: never two runs side by side
        kinds = [isinstance(event, EntityEvents) for event in events]
        assert not any(a and b for a, b in itertools.pairwise(kinds))
        # only the last message read may hold something other than updates
        for message in messages[index : after - 1]:
            assert all(isinstance(e, EntityEvents) for e in one.receive(message, 2))
        got += _flat(events)
        index = after
    assert got == expected
    # and both agree with the frame parser alone: updates in place, one event per other frame
    assert [g if isinstance(g, tuple) else "other" for g in got] == _oracle(messages)


def _oracle(messages: list[str | bytes]) -> list[Any]:
    out: list[Any] = []
    for message in messages:
        try:
            frames = parse_frame(message) if isinstance(message, str) else None
        except RemoteProtocolError:
            frames = None
        if frames is None:
            out.append("other")
            continue
        for frame in frames:
            if isinstance(frame, Push) and frame.kind == "props":
                try:
                    event = parse_entity_event(frame.data)
                except RemoteProtocolError:
                    out.append("other")
                    continue
                out += [("update", event.entity_type, event.event_type, e) for e in event.entities]
            else:
                out.append("other")
    return out


@pytest.mark.parametrize("kind", [[], {}, None, 5])
def test_an_unhashable_or_odd_event_type_is_malformed_input(kind: Any) -> None:
    s = session()
    authorized(s)
    s.entered(Node.LIVE, 1)
    bad = (
        "a"
        + orjson.dumps(
            [{"e": "props", "d": {"entityType": "order", "eventType": kind, "entity": {"id": 1}}}]
        ).decode()
    )
    good = props("order", "Updated", {"id": 2})
    events, after = s.receive_batch([good, bad, good], 2)
    assert after == 2
    assert [type(e) for e in events] == [EntityEvents, MalformedInput]
    [rest], _ = s.receive_batch([good, bad, good], 2, after)
    assert isinstance(rest, EntityEvents)


def test_updates_around_an_answer_in_one_frame_keep_their_places() -> None:
    s = session()
    authorized(s)
    s.entered(Node.LIVE, 1)
    first = {
        "e": "props",
        "d": {"entityType": "order", "eventType": "Updated", "entity": {"id": 1}},
    }
    second = {
        "e": "props",
        "d": {"entityType": "order", "eventType": "Created", "entity": {"id": 2}},
    }
    frame = "a" + orjson.dumps([first, {"i": 9, "s": 200}, second]).decode()
    events, after = s.receive_batch([frame, props("order", "Updated", {"id": 3})], 2)
    assert after == 1  # the answer stops the read after its message
    assert [type(e) for e in events] == [EntityEvents, Answer, EntityEvents]
    assert [u[2]["id"] for u in events[0].updates] == [1]  # type: ignore[union-attr]
    assert [u[2]["id"] for u in events[2].updates] == [2]  # type: ignore[union-attr]
    rest, after = s.receive_batch([frame, props("order", "Updated", {"id": 3})], 2, 1)
    assert after == 2
    assert [u[2]["id"] for u in rest[0].updates] == [3]  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(40))
def test_any_script_gives_only_declared_events_and_never_raises(seed: int) -> None:
    """Seeded scripts of any frames in any order, with the table's actions taken as a
    supervisor would: nothing raises, every event is declared, and the protocol promises
    (one snapshot, one authorize answer) hold whatever the server sends."""
    rng = random.Random(seed)
    s = session(split=rng.random() < 0.3, pace=rng.choice([0.0, 5.0]))
    now = 0.0
    snapshots = authorizations = 0
    for _ in range(400):
        now += rng.random()
        if rng.random() < 0.05:
            s.authorize()
        if rng.random() < 0.05 and not s.sync_sent:
            s.sync({})
        if rng.random() < 0.1:
            s.entered(rng.choice(list(Node)), now)
        if rng.random() < 0.1:
            events = s.expire(now + rng.random() * 20)
        else:
            events = s.receive(_random_frame(rng, 4), now)
        for event in events:
            assert isinstance(event, EVENT_TYPES), event
            snapshots += isinstance(event, SnapshotReady)
            authorizations += isinstance(event, Authorized | AuthorizationRejected)
            if isinstance(event, EntityEvents):
                s.buffer(event.updates)
            assert isinstance(event.trigger.value, str)
        assert s.buffered <= 10  # ids 0..4 of the two types that parse: order and fill
        assert math.isfinite(s.next_deadline()) or s.next_deadline() == math.inf
    assert snapshots <= 1
    assert authorizations <= 1


def stream_events(total: int) -> tuple[int, int]:
    """``total`` props frames through session, store writer, store and change feed, with a
    consumer that keeps up; returns the bytes held after 10% and after all of them."""
    import gc
    import tracemalloc
    from collections import Counter

    from trio_tradovate.feed import ChangeFeed
    from trio_tradovate.store import EntityStore
    from trio_tradovate.writer import StoreWriter

    store, feed = EntityStore(), ChangeFeed()
    writer = StoreWriter(store, feed, entity_types=None, counters=Counter(), wake=lambda: None)
    s = session()
    authorized(s)
    s.entered(Node.SYNC_SENT, 1)
    s.sync({})
    [ready] = s.receive(answer(1, data={"orders": [{"id": n} for n in range(500)]}), 1)
    assert isinstance(ready, SnapshotReady)
    writer.snapshot(ready.snapshot, s.take_buffered(), generation=1, owner=0)
    s.entered(Node.LIVE, 1)
    frames = [
        props("order", "Updated", {"id": n % 500, "price": n % 997, "ordStatus": "Working"})
        for n in range(5000)
    ]
    held = []
    tracemalloc.start()
    try:
        for n in range(total):
            for event in s.receive(frames[n % 5000], 2.0):
                assert isinstance(event, EntityEvents)
                writer.events(event.updates, generation=1, owner=0)
            while feed.pop() is not None:
                pass
            if n + 1 in (total // 10, total):
                gc.collect()
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert len(store) == 500
    return held[0], held[1]


def test_memory_is_flat_over_fifty_thousand_events() -> None:
    early, late = stream_events(50_000)
    assert late <= early * 1.05 + 16 * 1024, (early, late)


@pytest.mark.soak
def test_memory_is_flat_over_a_million_events() -> None:
    early, late = stream_events(1_000_000)
    assert late <= early * 1.05 + 16 * 1024, (early, late)
