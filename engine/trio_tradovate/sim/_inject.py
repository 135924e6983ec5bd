"""Malformed server frames for the conformance "error classes" (sans-I/O text builders).

docs/protocol.md §11 (Stage 2: no crash on malformed data) and §12 client rule (8)
("ignore unknown ``e`` kinds/fields") are what these frames exercise. Each one is built so that
a client which *wrongly* applies it would visibly diverge from ``truth()``: the bad ``props``
events name real entities and carry a ``MALFORMED`` marker, so a lenient parser that coerces
types or guesses defaults corrupts real state instead of harmlessly adding junk.

``bad_batch`` is not here: it mutates the world, so :class:`~._core.SimCore` builds it.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = ["MALFORMED_KINDS", "malformed_frame"]

#: Every kind :meth:`Simulator.inject_malformed` accepts.
MALFORMED_KINDS: Final = (
    "invalid_json",
    "unknown_frame",
    "unknown_event",
    "props_missing_fields",
    "props_wrong_types",
    "oversized",
    "bad_batch",
)


def _frame(messages: list[Any]) -> str:
    return "a" + orjson.dumps(messages).decode()


def malformed_frame(kind: str, *, account_id: int, oversized_bytes: int) -> str:
    """The text of one malformed frame of ``kind`` (any kind but ``bad_batch``).

    ``account_id`` names a real account so that misapplied events hit real state.
    """
    if kind == "invalid_json":
        return 'a[{"e":"props","d":{'  # truncated mid-object
    if kind == "unknown_frame":
        return "x[1]"  # §2 knows only o, h, a, c
    if kind == "unknown_event":
        return _frame([{"e": "brandNewKind", "d": {}}])
    if kind == "props_missing_fields":
        return _frame(
            [
                # no entityType: the client cannot know which collection this is
                {
                    "e": "props",
                    "d": {
                        "eventType": "Updated",
                        "entity": {"id": account_id, "name": "MALFORMED"},
                    },
                },
                # no entity id: nothing to upsert by (§6 dedupe key is (entityType, id))
                {
                    "e": "props",
                    "d": {"entityType": "account", "eventType": "Updated", "entity": {}},
                },
                # no entity at all
                {"e": "props", "d": {"entityType": "account", "eventType": "Deleted"}},
            ]
        )
    if kind == "props_wrong_types":
        return _frame(
            [
                # id as a string: int("…") would silently overwrite the real account
                {
                    "e": "props",
                    "d": {
                        "entityType": "account",
                        "eventType": "Updated",
                        "entity": {"id": str(account_id), "name": "MALFORMED"},
                    },
                },
                # eventType outside Created/Updated/Deleted (§6)
                {
                    "e": "props",
                    "d": {
                        "entityType": "account",
                        "eventType": "Exploded",
                        "entity": {"id": account_id, "name": "MALFORMED"},
                    },
                },
                # d and entityType of the wrong JSON types
                {"e": "props", "d": ["account"]},
                {"e": "props", "d": {"entityType": 7, "eventType": "Deleted", "entity": {}}},
            ]
        )
    if kind == "oversized":
        head = 'a[{"e":"junk","d":{"pad":"'
        tail = '"}}]'
        return head + "x" * max(0, oversized_bytes - len(head) - len(tail)) + tail
    raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
