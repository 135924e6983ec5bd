"""The entity store: the account state the server last told us, keyed by ``(entityType, id)``.

It is fed two ways (tradovate-protocol.md §6): the ``user/syncrequest`` snapshot, whose
collections are plural names (``cashBalances``), and ``props`` events, whose ``entityType`` is
singular camelCase (``cashBalance``). Every application of either returns the
:class:`EntityChange` list it caused, and nothing when nothing changed, so replayed or
duplicated events are harmless (idempotency, Stage 2 §3).

A snapshot after a reconnect is *diffed* against what we hold: entities created, changed or
deleted while the socket was down come out as changes marked ``recovered=True``, so a consumer
that applies every change it receives ends with the server's state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .protocol import EntityEvent

EntityKey = tuple[str, int]

_IRREGULAR_PLURALS = {
    "accountRiskStatuses": "accountRiskStatus",
    "currencies": "currency",
    "properties": "property",
    "userProperties": "userProperty",
}


def singular(collection: str) -> str:
    """``cashBalances`` -> ``cashBalance``: the entityType of a snapshot collection."""
    if collection in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[collection]
    if collection.endswith("ies"):
        return collection[:-3] + "y"
    if collection.endswith("s"):
        return collection[:-1]
    return collection


@dataclass(frozen=True, slots=True)
class EntityChange:
    """One change to the store, as delivered to consumers.

    ``entity`` is the new value (for ``Deleted``, the last one we held). ``recovered`` is
    ``True`` when the change was derived from a sync snapshot rather than a live ``props``
    event. ``generation`` is the connection it came from. ``coalesced`` marks a change that
    stands for several (see :mod:`trio_tradovate.feed`).
    """

    entity_type: str
    entity_id: int
    event_type: str
    entity: Mapping[str, Any]
    recovered: bool
    generation: int
    #: Intermediate values of this entity were skipped while the consumer was behind.
    coalesced: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "entityType": self.entity_type,
            "id": self.entity_id,
            "eventType": self.event_type,
            "recovered": self.recovered,
            "coalesced": self.coalesced,
            "generation": self.generation,
            "entity": dict(self.entity),
        }


class EntityStore:
    """All entities we know, read-only to applications (values are read-only mappings)."""

    def __init__(self) -> None:
        self._entities: dict[EntityKey, Mapping[str, Any]] = {}
        #: Which sockets (shards) have this entity in their view: a resync of one shard may
        #: only delete what no other shard still holds (contracts, products reach them all).
        self._owners: dict[EntityKey, set[int]] = {}
        #: ids per entity type, so per-type queries do not scan the whole store.
        self._by_type: dict[str, set[int]] = {}
        #: Snapshot entries without an integer id, skipped.
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._entities)

    def __contains__(self, key: object) -> bool:
        return key in self._entities

    def get(self, entity_type: str, entity_id: int) -> Mapping[str, Any] | None:
        """The entity, or ``None``."""
        return self._entities.get((entity_type, entity_id))

    def of_type(self, entity_type: str) -> list[Mapping[str, Any]]:
        """Every entity of one type, by id."""
        ids = sorted(self._by_type.get(entity_type, ()))
        return [self._entities[(entity_type, entity_id)] for entity_id in ids]

    def items(self) -> Iterator[tuple[EntityKey, Mapping[str, Any]]]:
        """Every ``((entityType, id), entity)`` pair."""
        return iter(list(self._entities.items()))

    def as_dict(self) -> dict[EntityKey, dict[str, Any]]:
        """A plain, mutable copy (for comparisons and dumps)."""
        return {key: dict(value) for key, value in self._entities.items()}

    def apply_event(
        self, event: EntityEvent, generation: int, *, owner: int = 0
    ) -> list[EntityChange]:
        """Apply one ``props`` event from socket ``owner``; return what actually changed."""
        changes: list[EntityChange] = []
        entity_type, event_type = event.entity_type, event.event_type
        owners_of = self._owners
        for raw in event.entities:
            key = (entity_type, raw["id"])  # an int: parse_entity_event checked it
            if event_type == "Deleted":
                owners_of.pop(key, None)
            else:
                owners = owners_of.get(key)
                if owners is None:
                    owners_of[key] = {owner}
                elif owner not in owners:
                    owners.add(owner)
            change = self._apply_one(key, event_type, raw, generation, recovered=False)
            if change is not None:
                changes.append(change)
        return changes

    def _apply_one(
        self,
        key: EntityKey,
        event_type: str,
        raw: Mapping[str, Any],
        generation: int,
        *,
        recovered: bool,
    ) -> EntityChange | None:
        current = self._entities.get(key)
        if event_type == "Deleted":
            if current is None:
                return None
            del self._entities[key]
            self._by_type[key[0]].discard(key[1])
            return EntityChange(key[0], key[1], "Deleted", current, recovered, generation)
        if current is not None and current == raw:
            return None
        value = MappingProxyType(dict(raw))
        self._entities[key] = value
        if current is None:  # only a new entity changes the index (no set made per event)
            ids = self._by_type.get(key[0])
            if ids is None:
                self._by_type[key[0]] = {key[1]}
            else:
                ids.add(key[1])
            return EntityChange(key[0], key[1], "Created", value, recovered, generation)
        return EntityChange(key[0], key[1], "Updated", value, recovered, generation)

    def apply_snapshot(
        self,
        snapshot: Mapping[str, Any],
        generation: int,
        *,
        entity_types: frozenset[str] | None,
        owner: int = 0,
    ) -> list[EntityChange]:
        """Replace socket ``owner``'s view with a sync snapshot; return the diff as changes.

        Only the types present in the snapshot (or in ``entity_types`` when the sync asked
        for a subset) are replaced: a type the server did not send is not deleted, and
        neither is an entity another shard still holds.
        """
        incoming: dict[EntityKey, Mapping[str, Any]] = {}
        covered: set[str] = set()
        for collection, values in snapshot.items():
            if not isinstance(values, list):
                continue
            entity_type = singular(collection)
            if entity_types is not None and entity_type not in entity_types:
                continue
            covered.add(entity_type)
            for raw in values:
                if not isinstance(raw, dict):
                    self.skipped += 1
                    continue
                entity_id = raw.get("id")
                if not isinstance(entity_id, int) or isinstance(entity_id, bool):
                    self.skipped += 1
                    continue
                incoming[(entity_type, entity_id)] = raw
        changes: list[EntityChange] = []
        for key in [k for k in self._entities if k[0] in covered and k not in incoming]:
            owners = self._owners.get(key, {owner})
            owners.discard(owner)
            if owners:
                continue  # another shard still holds it
            self._owners.pop(key, None)
            change = self._apply_one(key, "Deleted", {}, generation, recovered=True)
            if change is not None:
                changes.append(change)
        for key, raw in incoming.items():
            self._owners.setdefault(key, set()).add(owner)
            change = self._apply_one(key, "Updated", raw, generation, recovered=True)
            if change is not None:
                changes.append(change)
        return changes
