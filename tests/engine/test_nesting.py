"""No RecursionError at any nesting depth (issue 8, point 4): deep JSON stops at the parser.

orjson parses up to 1024 levels; Python's ``==``, ``repr`` and orjson's own ``dumps`` give up
far sooner. A message nested deeper than ``protocol.MAX_NESTING`` is therefore malformed at
parse time, and JSON deeper than orjson's limit is a ``RemoteProtocolError``.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tradovate import State, open_engine
from trio_tradovate.errors import RemoteProtocolError
from trio_tradovate.protocol import (
    MAX_NESTING,
    EntityEvent,
    Malformed,
    Push,
    Response,
    parse_entity_event,
    parse_frame,
)
from trio_tradovate.sim import Simulator
from trio_tradovate.store import EntityStore

from ..conftest import config_for


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` arrays around ``leaf``: ``[[[1]]]`` for 3."""
    return "[" * depth + leaf + "]" * depth


def props_frame(depth: int, entity_id: int = 1, event: str = "Created") -> str:
    """A ``props`` frame whose entity holds ``depth`` nested arrays (~2 KB at 1,000)."""
    return (
        'a[{"e":"props","d":{"entityType":"order","eventType":"'
        + event
        + f'","entity":{{"id":{entity_id},"x":'
        + nested(depth)
        + "}}}]"
    )


def test_a_thousand_levels_inside_props_is_malformed_not_recursion() -> None:
    frame = props_frame(1000)
    assert 2000 <= len(frame) <= 2200
    [event] = parse_frame(frame)
    assert isinstance(event, Malformed)
    assert "nested deeper than" in str(event.error)


@pytest.mark.parametrize(
    "frame",
    [
        'a[{"i":3,"s":200,"d":' + nested(1000) + "}]",
        'a[{"e":"clock","d":' + nested(1000) + "}]",
        'a[{"e":"props","d":' + nested(1000) + "}]",
        "a[" + nested(1000) + "]",
    ],
)
def test_deep_response_and_push_data_are_malformed(frame: str) -> None:
    [event] = parse_frame(frame)
    assert isinstance(event, Malformed)


def test_deep_sibling_does_not_cost_the_good_message() -> None:
    good = '{"e":"props","d":{"entityType":"order","eventType":"Created","entity":{"id":2}}}'
    events = parse_frame('a[{"e":"clock","d":' + nested(500) + "}," + good + "]")
    assert isinstance(events[0], Malformed)
    assert isinstance(events[1], Push)


def test_depth_limit_is_exact() -> None:
    # {e, d: {entity: {x: ...}}}: the message, d and entity are 3 levels (the array is not
    # counted), and the innermost array holds a scalar.
    assert isinstance(parse_frame(props_frame(MAX_NESTING - 3))[0], Push)
    assert isinstance(parse_frame(props_frame(MAX_NESTING - 2))[0], Malformed)
    assert isinstance(parse_frame("a[" + nested(MAX_NESTING) + "]")[0], Response | Malformed)
    assert isinstance(parse_frame("a[" + nested(MAX_NESTING + 1) + "]")[0], Malformed)


@pytest.mark.parametrize("size", [1 << 15, 1 << 17])
def test_a_deep_message_in_a_long_frame_is_malformed(size: int) -> None:
    """Past 64 KiB the bracket count is skipped (a snapshot always has more than enough):
    a deep message hidden in a long, flat frame is still caught, and its flat sibling kept."""
    padding = '{"i":1,"s":200,"d":"' + "x" * size + '"}'
    events = parse_frame("a[" + padding + ',{"i":2,"s":200,"d":' + nested(300) + "}]")
    assert isinstance(events[0], Response)
    assert isinstance(events[1], Malformed)


def test_orjson_still_refuses_to_write_past_the_limit() -> None:
    """The nesting check is orjson's own refusal to encode deeper than 254 levels; if a new
    orjson moves that limit, this fails and the check needs another implementation."""
    orjson.dumps(orjson.loads(nested(MAX_NESTING)))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(orjson.loads(nested(MAX_NESTING + 1)))
    # a short frame can never be deep; a long, flat one is never walked into a false positive
    flat = 'a[{"i":1,"s":200,"d":[' + ",".join(["{}"] * 500) + "]}]"
    assert isinstance(parse_frame(flat)[0], Response)


@pytest.mark.parametrize("depth", [1025, 1100, 5000])
def test_deeper_than_orjson_parses_is_remote_protocol_error(depth: int) -> None:
    with pytest.raises(RemoteProtocolError, match="depth limit"):
        parse_frame("a" + nested(depth))


@pytest.mark.parametrize("depth", [1023, 1024])
def test_at_orjson_limit_the_message_is_malformed(depth: int) -> None:
    [event] = parse_frame("a" + nested(depth))
    assert isinstance(event, Malformed)


def test_accepted_entities_compare_and_print_without_recursion() -> None:
    """What the parser lets through, the store can compare and anyone can print or dump."""
    [push] = parse_frame(props_frame(MAX_NESTING - 3))
    assert isinstance(push, Push)
    event = parse_entity_event(push.data)
    store = EntityStore()
    assert len(store.apply_event(event, 1)) == 1
    assert store.apply_event(event, 1) == []  # equal: compared, not crashed
    repr(store.get("order", 1))
    orjson.dumps(push.data)


def test_error_excerpt_of_deep_data_never_recurses() -> None:
    deep: Any = orjson.loads(nested(1000))
    with pytest.raises(RemoteProtocolError, match="too deeply to show"):
        parse_entity_event({"entityType": "order", "eventType": "X", "entity": deep})


# --- properties --------------------------------------------------------------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def deep_json_text(draw: st.DrawFn, max_depth: int = 1100) -> str:
    """JSON text nested 0-``max_depth`` levels through a random mix of arrays and objects
    (chosen by a drawn seed: drawing a thousand booleans would make Hypothesis slow)."""
    depth = draw(st.integers(0, max_depth))
    mix = random.Random(draw(st.integers(0, 2**32)))
    kinds = [mix.random() < 0.5 for _ in range(depth)]
    core = orjson.dumps(draw(JSON)).decode()
    opening = "".join('{"k":' if is_object else "[" for is_object in kinds)
    closing = "".join("}" if is_object else "]" for is_object in reversed(kinds))
    return opening + core + closing


def _only_remote_protocol_errors(text: str) -> None:
    try:
        events = parse_frame(text)
    except RemoteProtocolError:
        return
    for event in events:
        if isinstance(event, Push) and event.kind == "props":
            try:
                parsed = parse_entity_event(event.data)
            except RemoteProtocolError:
                continue
            assert isinstance(parsed, EntityEvent)
            EntityStore().apply_event(parsed, 1)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_frame_on_arbitrary_text_raises_only_remote_protocol_error(text: str) -> None:
    _only_remote_protocol_errors(text)
    _only_remote_protocol_errors("a" + text)
    _only_remote_protocol_errors("c" + text)


@settings(max_examples=200, deadline=None)
@given(deep_json_text(), st.sampled_from([("a[", "]"), ("a", ""), ('a[{"i":1,"s":200,"d":', "}]")]))
def test_parse_frame_on_nested_json_raises_only_remote_protocol_error(
    body: str, shape: tuple[str, str]
) -> None:
    _only_remote_protocol_errors(shape[0] + body + shape[1])
    props = 'a[{"e":"props","d":{"entityType":"fill","eventType":"Updated","entity":'
    _only_remote_protocol_errors(props + '{"id":5,"v":' + body + "}}}]")


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, deep_json_text(max_depth=1000).map(orjson.loads)))
def test_entity_event_parser_raises_only_remote_protocol_error(data: Any) -> None:
    for candidate in (
        data,
        {"entityType": "order", "eventType": "Created", "entity": data},
        {"entityType": data, "eventType": data, "entity": {"id": 1, "v": data}},
    ):
        with contextlib.suppress(RemoteProtocolError):
            parse_entity_event(candidate)


# --- through the engine ------------------------------------------------------------------------


async def test_engine_skips_deep_frames_and_stays_live(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        before = engine.counters["malformed"]
        frames = [
            props_frame(1000, entity_id=987654),
            props_frame(1000, entity_id=987654, event="Updated"),
            'a[{"i":424242,"s":200,"d":' + nested(1000) + "}]",
            'a[{"e":"props","d":' + nested(1000) + "}]",
            'a[{"e":"md","d":' + nested(1000) + "}]",
            "a" + nested(1100),
        ]
        for frame in frames:
            sim.inject_frame(frame)
            await trio.sleep(0.5)
        assert engine.state is State.LIVE
        assert engine.counters["malformed"] - before == len(frames)
        assert engine.store.get("order", 987654) is None
