"""Tradovate's websocket wire format, sans-I/O: text in, typed events out; requests in, text out.

Theory of operation
-------------------
Tradovate frames its websocket traffic the SockJS 0.3.3 way (docs/protocol.md §2): the first
character of every server message says what it is::

    o                     the socket is open; the client must now send ``authorize``
    h                     server heartbeat
    a[{...}, {...}]       one or more messages: responses ``{"i","s","d"}`` and
                          events ``{"e","d"}`` (props, shutdown, md, chart, clock)
    c[3000,"Go away!"]    the server is closing

Client requests are four fields joined by newlines, ``endpoint\\nid\\nquery\\nbody`` (§3), and the
client heartbeat is the two-character text ``[]`` (§5).

Nothing here imports trio or touches a socket: :func:`parse_frame` and :func:`encode_request`
are plain functions, so every case is tested synchronously. A frame that cannot be understood
at all raises :class:`RemoteProtocolError`; inside a good ``a`` frame, one bad element becomes a
:class:`Malformed` event so that the good messages batched with it are not lost. That includes
an element nested deeper than :data:`MAX_NESTING`: whatever orjson accepts (up to 1024
levels; deeper is invalid JSON here) and Python could not compare or print without
``RecursionError`` stops at this door.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from .errors import LocalProtocolError, RemoteProtocolError, excerpt

__all__ = [
    "HEARTBEAT_FRAME",
    "MAX_NESTING",
    "PUSH_KINDS",
    "Close",
    "EntityEvent",
    "EntityUpdate",
    "Heartbeat",
    "Malformed",
    "Open",
    "Push",
    "Response",
    "ServerEvent",
    "encode_request",
    "parse_entity_event",
    "parse_frame",
    "parse_message",
    "props_updates",
    "read_props",
]

#: The client heartbeat (docs/protocol.md §5).
HEARTBEAT_FRAME = "[]"

#: Event kinds Tradovate documents (§2, §7). Others are parsed too and left to the caller.
PUSH_KINDS = frozenset({"props", "shutdown", "md", "chart", "clock"})

#: ``eventType`` values of a ``props`` event (§6).
ENTITY_EVENT_TYPES = frozenset({"Created", "Updated", "Deleted"})

#: The deepest nesting of arrays and objects accepted in one message of an ``a`` frame (its
#: outer array not counted). Tradovate's messages nest four or five levels. orjson parses up
#: to 1024, but what it parsed must also survive Python: ``==`` between two versions of an
#: entity, ``repr`` and logging, and ``orjson.dumps`` (the application's, the CLI's, our error
#: excerpts), which refuses more than 254 levels. Near the interpreter's recursion limit the
#: first two raise ``RecursionError``. So a message deeper than this is malformed where it
#: enters, and nothing downstream ever meets one.
MAX_NESTING = 254

#: Every level opens and closes, so a frame shorter than this cannot hold a message deeper
#: than :data:`MAX_NESTING`; the check is skipped for it, which keeps its cost off the hot
#: path of ``props`` frames (200-300 characters). A longer frame is checked only when it
#: has more ``[`` and ``{`` than the limit (counting them costs about a fifth of the parse;
#: re-encoding costs a third to two fifths, more with many floats).
_NESTING_FLOOR = 2 * (MAX_NESTING + 1)

#: A frame this long (a snapshot) holds more than :data:`MAX_NESTING` brackets in any real
#: case, so counting them first would only add a tenth to the parse: it goes straight to the
#: re-encoding check.
_SURELY_NESTED = 1 << 16


@dataclass(frozen=True, slots=True)
class Open:
    """``o``: the server accepted the socket and waits for ``authorize``."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``h``: the server is alive and has nothing to say."""


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to the request whose id was ``request_id``; ``status`` is an HTTP status."""

    request_id: int
    status: int
    data: Any = None


@dataclass(frozen=True, slots=True)
class Push:
    """A server-initiated event (``props``, ``shutdown``, ``md``, ``chart``, ``clock``, ...)."""

    kind: str
    data: Any


@dataclass(frozen=True, slots=True)
class Close:
    """``c[code,"reason"]``: the server is closing the socket."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """One element of an ``a`` frame that is neither a response nor an event."""

    error: RemoteProtocolError


ServerEvent = Open | Heartbeat | Response | Push | Close | Malformed

_OPEN = Open()
_HEARTBEAT = Heartbeat()


def parse_frame(text: str) -> list[ServerEvent]:
    """Parse one websocket text message from the server into events, in order.

    Raises:
        RemoteProtocolError: the frame as a whole is not a Tradovate frame.
    """
    if not text:
        raise RemoteProtocolError("empty frame", text)
    kind = text[0]
    if kind == "o" or kind == "h":
        if len(text) != 1:
            raise RemoteProtocolError(f"unexpected data after {kind!r} frame", text)
        return [_OPEN if kind == "o" else _HEARTBEAT]
    if kind == "a":
        return _parse_array(text)
    if kind == "c":
        return [_parse_close(text)]
    raise RemoteProtocolError(f"unknown frame type {kind!r}", text)


def _loads(payload: str, whole: str) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise RemoteProtocolError(f"invalid JSON ({exc.msg})", whole) from None


def _parse_array(text: str) -> list[ServerEvent]:
    items = _loads(text[1:], text)
    if not isinstance(items, list):
        raise RemoteProtocolError("'a' frame does not hold a JSON array", text)
    size = len(text)
    if size >= _NESTING_FLOOR and (
        size >= _SURELY_NESTED or text.count("[") + text.count("{") > MAX_NESTING
    ):
        return [parse_message(item) if _encodable(item) else _too_deep(item) for item in items]
    return [parse_message(item) for item in items]


def _encodable(item: Any) -> bool:
    """Whether orjson can write ``item`` back: for a value orjson itself parsed, the only
    failure is nesting deeper than :data:`MAX_NESTING`. This is the nesting check, done in C
    (several times faster than a walk in Python, and a fraction of the parse it follows)."""
    try:
        orjson.dumps(item)
    except orjson.JSONEncodeError:
        return False
    return True


def _too_deep(item: Any) -> Malformed:
    kind = item.get("e") if isinstance(item, dict) else None
    what = f"{excerpt(kind, 40)} event" if isinstance(kind, str) else "message"
    return Malformed(RemoteProtocolError(f"{what} nested deeper than {MAX_NESTING} levels"))


def parse_message(item: Any) -> ServerEvent:
    """One element of an ``a`` frame as a typed event (:class:`Malformed` when it is neither a
    response nor an event)."""
    if not isinstance(item, dict):
        return Malformed(RemoteProtocolError("message is not a JSON object", _dump(item)))
    if "e" in item:
        kind = item["e"]
        if not isinstance(kind, str) or not kind:
            return Malformed(RemoteProtocolError("event kind is not a string", _dump(item)))
        return Push(kind, item.get("d"))
    request_id = item.get("i")
    status = item.get("s")
    if isinstance(request_id, bool) or isinstance(status, bool):
        request_id = None
    if not isinstance(request_id, int) or not isinstance(status, int):
        return Malformed(
            RemoteProtocolError("message has neither 'e' nor integer 'i' and 's'", _dump(item))
        )
    return Response(request_id, status, item.get("d"))


def _parse_close(text: str) -> Close:
    body = _loads(text[1:], text)
    if (
        not isinstance(body, list)
        or len(body) != 2
        or not _is_int(body[0])
        or not isinstance(body[1], str)
    ):
        raise RemoteProtocolError("'c' frame is not [code, \"reason\"]", text)
    return Close(body[0], body[1])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dump(value: Any) -> str:
    """``value`` as JSON text for an error excerpt; never raises.

    orjson re-encodes what it parsed unless it is nested more than 254 levels (it then raises
    ``JSONEncodeError``, a ``TypeError``); ``repr`` would recurse, so it is never the fallback.
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return f"<{type(value).__name__} nested too deeply to show>"


def encode_request(
    endpoint: str,
    request_id: int,
    query: str | Mapping[str, Any] | None = None,
    body: Any = None,
) -> str:
    """Encode one request frame ``endpoint\\nid\\nquery\\nbody`` (docs/protocol.md §3).

    ``body`` is sent as is when it is a ``str`` (``authorize`` carries the raw token), else as
    JSON. ``query`` may be a ready ``k=v&k2=v2`` string or a mapping.

    Raises:
        LocalProtocolError: the endpoint, id or query cannot be carried by the format.
    """
    if not endpoint or endpoint.strip() != endpoint or endpoint.startswith("/"):
        raise LocalProtocolError(
            f"endpoint must be a path like 'account/list' without a leading '/': {endpoint!r}"
        )
    if "\n" in endpoint:
        raise LocalProtocolError(f"endpoint contains a newline: {endpoint!r}")
    if not _is_int(request_id) or request_id < 0:
        raise LocalProtocolError(f"request id must be a non-negative int, got {request_id!r}")
    if query is None:
        query_text = ""
    elif isinstance(query, str):
        query_text = query
    else:
        query_text = urlencode({k: _query_value(v) for k, v in query.items()})
    if "\n" in query_text:
        raise LocalProtocolError("query contains a newline")
    if body is None:
        body_text = ""
    elif isinstance(body, str):
        body_text = body
    else:
        try:
            body_text = orjson.dumps(body).decode()
        except TypeError as exc:
            raise LocalProtocolError(f"request body is not JSON-serialisable: {exc}") from None
    return f"{endpoint}\n{request_id}\n{query_text}\n{body_text}"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


#: One entity of a ``props`` event: ``(entityType, eventType, entity)``, ``entity`` a dict
#: with an integer ``id`` (§6). A plain tuple: the hot path makes one per event, and a tuple
#: costs a fifth of a frozen dataclass.
EntityUpdate = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class EntityEvent:
    """A parsed ``props`` payload: ``entities`` holds one or more entity mappings (§6)."""

    entity_type: str
    event_type: str
    entities: tuple[Mapping[str, Any], ...]


def props_updates(data: Any, out: list[EntityUpdate]) -> None:
    """Validate the ``d`` of a ``props`` event (``entity`` one object or an array) and append
    one :data:`EntityUpdate` per entity to ``out``; nothing is appended when it is invalid.

    Raises:
        RemoteProtocolError: a field is missing or has the wrong type.
    """
    if type(data) is not dict:
        raise RemoteProtocolError("props payload is not an object", _dump(data))
    entity_type = data.get("entityType")
    event_type = data.get("eventType")
    entity = data.get("entity")
    if type(entity_type) is not str or not entity_type:
        raise RemoteProtocolError("props event without a string entityType", _dump(data))
    if type(event_type) is not str or event_type not in ENTITY_EVENT_TYPES:  # may be a list
        raise RemoteProtocolError("props event with an unknown eventType", _dump(data))
    kind: str = event_type
    if type(entity) is dict:  # the common case: one entity, no list made for it
        if type(entity.get("id")) is not int:
            raise RemoteProtocolError("props entity without an integer id", _dump(data))
        out.append((entity_type, kind, entity))
        return
    checked: list[EntityUpdate] = []
    for item in entity if isinstance(entity, list) else [entity]:
        if type(item) is not dict or type(item.get("id")) is not int:
            raise RemoteProtocolError("props entity without an integer id", _dump(data))
        checked.append((entity_type, kind, item))
    out.extend(checked)


def read_props(messages: Sequence[str | bytes], start: int, out: list[EntityUpdate]) -> int:
    """The hot path of the user-sync socket: append the updates of ``messages[start:]`` to
    ``out`` for as long as each message is a small ``a`` frame of valid single-entity
    ``props`` events only; return the index of the first message that is not (``len`` when
    all were), which the caller reads the general way (:func:`parse_frame`).

    One call per read rather than several per event: the checks are those of
    :func:`props_updates`, written out, and a message that fails any of them leaves ``out``
    as it was, so the general path reads it whole and reports its fault in its place.
    """
    loads = orjson.loads
    append = out.append
    kinds = ENTITY_EVENT_TYPES
    index = start
    end = len(messages)
    while index < end:
        message = messages[index]
        if type(message) is not str or message[:1] != "a" or len(message) >= _NESTING_FLOOR:
            return index
        before = len(out)
        # Subscripts instead of type checks: JSON gives dicts, lists, strings, numbers,
        # booleans and null, and of these only a dict can be subscripted by a string without
        # raising (KeyError when the field is missing, TypeError for anything else); a
        # top level that is not a list fails the same way when iterated or subscripted. So
        # every field read below proves its container a dict, and a try block (free when
        # nothing is raised) replaces six type checks per event.
        try:
            items = loads(message[1:])
            if type(items) is not list:
                return index
            for item in items:
                if item["e"] != "props":
                    break
                data = item["d"]
                entity = data["entity"]
                entity_type = data["entityType"]
                event_type = data["eventType"]
                if (
                    type(entity["id"]) is int  # not a bool, a float or a string
                    and type(entity_type) is str
                    and entity_type
                    # the usual "Updated" settled by one comparison; a set lookup only
                    # of a str (of a list it would raise)
                    and (
                        event_type == "Updated" or (type(event_type) is str and event_type in kinds)
                    )
                ):
                    append((entity_type, event_type, entity))
                    continue
                break
            else:
                index += 1
                continue
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass
        # not a run of valid props events: the general path reads it whole
        del out[before:]
        return index
    return index


def parse_entity_event(data: Any) -> EntityEvent:
    """Validate the ``d`` of a ``props`` event into one :class:`EntityEvent` (the same rules
    as :func:`props_updates`, which the engine's hot path uses).

    Raises:
        RemoteProtocolError: a field is missing or has the wrong type.
    """
    updates: list[EntityUpdate] = []
    props_updates(data, updates)  # valid from here on: an empty array gives no updates
    entities = tuple(entity for _, _, entity in updates)
    return EntityEvent(data["entityType"], data["eventType"], entities)
