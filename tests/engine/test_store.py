"""The entity store: snapshot, idempotent props, snapshot diffs."""

from __future__ import annotations

from typing import Any

import pytest

from trio_tradovate.protocol import EntityEvent, parse_entity_event
from trio_tradovate.store import EntityChange, EntityStore, as_change, singular


def props(entity_type: str, event_type: str, entity: object) -> EntityEvent:
    return parse_entity_event(
        {"entityType": entity_type, "eventType": event_type, "entity": entity}
    )


@pytest.mark.parametrize(
    ("plural", "expected"),
    [
        ("cashBalances", "cashBalance"),
        ("users", "user"),
        ("accountRiskStatuses", "accountRiskStatus"),
        ("currencies", "currency"),
        ("userProperties", "userProperty"),
        ("fillPairs", "fillPair"),
        ("contractMaturities", "contractMaturity"),
    ],
)
def test_collection_names_become_entity_types(plural: str, expected: str) -> None:
    assert singular(plural) == expected


def snapshot(store: EntityStore, data: dict[str, Any], generation: int) -> list[EntityChange]:
    """``apply_snapshot``'s records as the changes a consumer would be given."""
    return [as_change(r) for r in store.apply_snapshot(data, generation, entity_types=None)]


def test_snapshot_then_props_upsert_and_delete() -> None:
    store = EntityStore()
    first = snapshot(
        store,
        {"orders": [{"id": 1, "ordStatus": "Working"}], "positions": [], "junk": 5},
        1,
    )
    assert [(c.entity_type, c.entity_id, c.event_type, c.recovered) for c in first] == [
        ("order", 1, "Created", True)
    ]
    changes = store.apply_event(props("order", "Updated", {"id": 1, "ordStatus": "Filled"}), 1)
    assert [(c.event_type, c.recovered) for c in changes] == [("Updated", False)]
    assert store.get("order", 1) == {"id": 1, "ordStatus": "Filled"}
    many = store.apply_event(props("fill", "Created", [{"id": 5}, {"id": 6}]), 1)
    assert [c.entity_id for c in many] == [5, 6]
    gone = store.apply_event(props("order", "Deleted", {"id": 1}), 1)
    assert [(c.event_type, c.entity["ordStatus"]) for c in gone] == [("Deleted", "Filled")]
    assert store.get("order", 1) is None


def test_props_are_idempotent() -> None:
    store = EntityStore()
    event = props("position", "Updated", {"id": 3, "netPos": 2})
    assert len(store.apply_event(event, 1)) == 1
    assert store.apply_event(event, 1) == []
    assert store.apply_event(props("position", "Deleted", {"id": 99}), 1) == []


def test_resync_diff_reports_only_what_changed() -> None:
    store = EntityStore()
    store.apply_snapshot(
        {"orders": [{"id": 1, "s": "W"}, {"id": 2, "s": "W"}], "accounts": [{"id": 9}]},
        1,
        entity_types=None,
    )
    changes = snapshot(
        store, {"orders": [{"id": 2, "s": "F"}, {"id": 3, "s": "W"}], "accounts": [{"id": 9}]}, 2
    )
    assert sorted((c.entity_id, c.event_type) for c in changes) == [
        (1, "Deleted"),
        (2, "Updated"),
        (3, "Created"),
    ]
    assert all(c.recovered and c.generation == 2 for c in changes)


def test_types_missing_from_a_snapshot_are_kept() -> None:
    store = EntityStore()
    store.apply_snapshot({"orders": [{"id": 1}], "contracts": [{"id": 7}]}, 1, entity_types=None)
    store.apply_snapshot({"orders": []}, 2, entity_types=None)
    assert store.get("contract", 7) == {"id": 7}
    assert store.get("order", 1) is None


def test_entity_type_filter_and_bad_rows() -> None:
    store = EntityStore()
    store.apply_snapshot(
        {"orders": [{"id": 1}, {"id": "x"}, "junk"], "fills": [{"id": 2}]},
        1,
        entity_types=frozenset({"order"}),
    )
    assert len(store) == 1
    assert store.skipped == 2


def test_entities_are_read_only() -> None:
    store = EntityStore()
    store.apply_snapshot({"orders": [{"id": 1}]}, 1, entity_types=None)
    entity = store.get("order", 1)
    assert entity is not None
    with pytest.raises(TypeError):
        entity["id"] = 2  # type: ignore[index]


def test_deleting_what_was_never_held_grows_nothing() -> None:
    """A stream of deletions of made-up types and ids (a hostile server's) leaves the store
    as it was: no entity, and no per-type structure made for them."""
    store = EntityStore(shared=False)
    changes = store.apply_updates([(f"type{n}", "Deleted", {"id": n}) for n in range(1000)], 1)
    assert changes == []
    assert len(store) == 0
    assert store.of_type("type5") == []
    assert store.as_dict() == {}
    assert store.apply_updates([("order", "Created", {"id": 1})], 1)
    assert store.apply_updates([("order", "Deleted", {"id": 2})], 1) == []
    assert [e["id"] for e in store.of_type("order")] == [1]
