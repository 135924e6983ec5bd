"""The wire format, synchronously: every frame kind, batching, and malformed input."""

from __future__ import annotations

import pytest

from trio_tradovate.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from trio_tradovate.protocol import (
    HEARTBEAT_FRAME,
    Close,
    EntityEvent,
    Heartbeat,
    Malformed,
    Open,
    Push,
    Response,
    encode_request,
    parse_entity_event,
    parse_frame,
)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("o", [Open()]),
        ("h", [Heartbeat()]),
        ('a[{"i":0,"s":200}]', [Response(0, 200, None)]),
        (
            'a[{"s":401,"i":3,"d":"Invalid access token"}]',
            [Response(3, 401, "Invalid access token")],
        ),
        (
            'a[{"i":7,"s":200,"d":{"id":1,"name":"ESM2"}}]',
            [Response(7, 200, {"id": 1, "name": "ESM2"})],
        ),
        (
            'a[{"e":"props","d":{"entityType":"order","eventType":"Created","entity":{"id":1}}}]',
            [Push("props", {"entityType": "order", "eventType": "Created", "entity": {"id": 1}})],
        ),
        (
            'a[{"e":"shutdown","d":{"reasonCode":"Maintenance"}}]',
            [Push("shutdown", {"reasonCode": "Maintenance"})],
        ),
        ('a[{"e":"md","d":{"quotes":[]}}]', [Push("md", {"quotes": []})]),
        ('a[{"e":"chart","d":{"charts":[]}}]', [Push("chart", {"charts": []})]),
        (
            'a[{"e":"clock","d":"{\\"t\\":\\"x\\",\\"s\\":20}"}]',
            [Push("clock", '{"t":"x","s":20}')],
        ),
        ('a[{"e":"brandNew","d":1}]', [Push("brandNew", 1)]),
        ('c[3000,"Go away!"]', [Close(3000, "Go away!")]),
        ("a[]", []),
    ],
)
def test_every_frame_kind_parses(frame: str, expected: list[object]) -> None:
    assert parse_frame(frame) == expected


def test_one_array_frame_carries_many_messages_in_order() -> None:
    frame = (
        'a[{"i":1,"s":200,"d":[]},'
        '{"e":"props","d":{"entityType":"fill","eventType":"Created","entity":{"id":9}}},'
        '{"i":2,"s":404,"d":"Not found: x/y"}]'
    )
    events = parse_frame(frame)
    assert [type(e) for e in events] == [Response, Push, Response]
    assert events[2] == Response(2, 404, "Not found: x/y")


MALFORMED_FRAMES = [
    "",
    "x",
    "oo",
    "h[]",
    "a",
    "a[",
    'a{"i":1}',
    "a[1,2",
    "c",
    "c[3000]",
    'c["3000","x"]',
    "c[3000,5]",
    'c{"code":1}',
    "\ufeffo",
]


@pytest.mark.parametrize("frame", MALFORMED_FRAMES)
def test_malformed_frames_raise_remote_protocol_error_with_excerpt(frame: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_frame(frame)
    assert info.value.excerpt == (repr(frame[:120]) if frame else "")


def test_excerpt_is_truncated() -> None:
    frame = "a[" + "x" * 5000
    with pytest.raises(RemoteProtocolError) as info:
        parse_frame(frame)
    assert len(info.value.excerpt) < 200
    assert "5002 chars" in info.value.excerpt


@pytest.mark.parametrize(
    "element",
    [
        "1",
        '"text"',
        "null",
        "[]",
        '{"i":1}',
        '{"s":200}',
        '{"i":"1","s":200}',
        '{"i":true,"s":200}',
        '{"e":5,"d":1}',
        '{"e":"","d":1}',
    ],
)
def test_a_bad_element_does_not_lose_its_neighbours(element: str) -> None:
    events = parse_frame(f'a[{{"i":1,"s":200}},{element},{{"i":2,"s":200}}]')
    assert events[0] == Response(1, 200, None)
    assert isinstance(events[1], Malformed)
    assert isinstance(events[1].error, RemoteProtocolError)
    assert events[2] == Response(2, 200, None)


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")


def test_encode_request_layout() -> None:
    assert encode_request("authorize", 0, None, "tok") == "authorize\n0\n\ntok"
    assert encode_request("user/syncrequest", 1, None, {"users": [5]}) == (
        'user/syncrequest\n1\n\n{"users":[5]}'
    )
    assert encode_request("contract/find", 4, "name=MESM5") == "contract/find\n4\nname=MESM5\n"
    assert encode_request("contract/items", 2, {"ids": [1, 2], "x": True}) == (
        "contract/items\n2\nids=1%2C2&x=true\n"
    )
    assert HEARTBEAT_FRAME == "[]"


@pytest.mark.parametrize(
    ("endpoint", "request_id", "query", "body"),
    [
        ("", 1, None, None),
        ("/account/list", 1, None, None),
        ("account/list\nx", 1, None, None),
        (" account/list", 1, None, None),
        ("account/list", -1, None, None),
        ("account/list", True, None, None),
        ("account/list", 1, "a=1\nb", None),
        ("account/list", 1, None, {"x": object()}),
    ],
)
def test_encode_request_rejects_what_the_format_cannot_carry(
    endpoint: str, request_id: int, query: str | None, body: object
) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(endpoint, request_id, query, body)


def test_entity_event_accepts_object_or_array() -> None:
    one = parse_entity_event({"entityType": "order", "eventType": "Updated", "entity": {"id": 1}})
    many = parse_entity_event(
        {"entityType": "fill", "eventType": "Created", "entity": [{"id": 1}, {"id": 2}]}
    )
    assert one == EntityEvent("order", "Updated", ({"id": 1},))
    assert [e["id"] for e in many.entities] == [1, 2]


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"eventType": "Created", "entity": {"id": 1}},
        {"entityType": 5, "eventType": "Created", "entity": {"id": 1}},
        {"entityType": "order", "eventType": "Exploded", "entity": {"id": 1}},
        {"entityType": "order", "eventType": "Created"},
        {"entityType": "order", "eventType": "Created", "entity": {"id": "1"}},
        {"entityType": "order", "eventType": "Created", "entity": [{"id": 1}, "x"]},
        # unhashable: a set lookup of these raised TypeError, out of the parser
        {"entityType": "order", "eventType": [], "entity": {"id": 1}},
        {"entityType": "order", "eventType": {"a": 1}, "entity": {"id": 1}},
    ],
)
def test_entity_event_rejects_missing_or_mistyped_fields(data: object) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_entity_event(data)
