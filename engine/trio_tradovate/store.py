"""The entity store: the account state the server last told us, keyed by ``(entityType, id)``.

It is fed two ways (docs/protocol.md §6): the ``user/syncrequest`` snapshot, whose
collections are plural names (``cashBalances``), and ``props`` events, whose ``entityType`` is
singular camelCase (``cashBalance``). Every application of either returns the
:class:`EntityChange` list it caused, and nothing when nothing changed, so replayed or
duplicated events are harmless (idempotency, Stage 2 §3).

A snapshot after a reconnect is *diffed* against what we hold: entities created, changed or
deleted while the socket was down come out as changes marked ``recovered=True``, so a consumer
that applies every change it receives ends with the server's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from .protocol import EntityEvent, EntityUpdate

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


class EntityChange(NamedTuple):
    """One change to the store, as delivered to consumers.

    ``entity`` is the new value (for ``Deleted``, the last one we held). ``recovered`` is
    ``True`` when the change was derived from a sync snapshot rather than a live ``props``
    event. ``generation`` is the connection it came from. ``coalesced`` marks a change that
    stands for several (see :mod:`trio_tradovate.feed`).

    Immutable, and ``entity`` is a read-only view. A named tuple rather than a frozen
    dataclass because one is made per event on the hot path: 0.14 us against 0.93 us (a
    frozen dataclass sets each field through ``object.__setattr__``). Copies with changed
    fields: ``change._replace(...)``. Read its fields by name: the tuple's own items are the
    library's (the fourth is the stored dict behind the ``entity`` view).
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


#: A change as the store makes it and the feed keeps it until a consumer takes it: the fields
#: of :class:`EntityChange`, in order, in a plain tuple. Why not the named tuple itself: the
#: collector stops tracking a plain tuple of untracked items after one pass, never an instance
#: of a subclass, so hundreds of changes waiting for the consumer were promoted to the oldest
#: generation at every middle collection, and set off full ones. A consumer gets
#: :class:`EntityChange` objects (:func:`as_change`), made when it takes them.
ChangeRecord = tuple[str, int, str, Mapping[str, Any], bool, int, bool]


def as_change(record: ChangeRecord) -> EntityChange:
    """The :class:`EntityChange` of ``record`` (``record`` itself if it is one)."""
    if type(record) is EntityChange:
        return record
    return _new_tuple(EntityChange, record)


def recovered(record: ChangeRecord) -> ChangeRecord:
    """``record`` marked as derived from a snapshot."""
    entity_type, entity_id, event_type, entity, _, generation, coalesced = record
    return (entity_type, entity_id, event_type, entity, True, generation, coalesced)


def _read_only_entity(change: EntityChange) -> Mapping[str, Any]:
    """``EntityChange.entity``: a read-only view of the stored dict, made when asked for. The
    tuple holds the dict itself, as the record it was made from did (a wrapper made per change
    would be one more object the collector tracks while the change waits)."""
    return MappingProxyType(cast("dict[str, Any]", change[3]))  # the item, not this property


# The field's accessor, replaced by one that hands out read-only views (see above).
EntityChange.entity = property(_read_only_entity, doc="The entity, read-only.")  # type: ignore[assignment]


_new_tuple = tuple.__new__

#: The entities of a type the store has never held: read, never written.
_NONE: dict[int, dict[str, Any]] = {}


class EntityStore:
    """All entities we know, read-only to applications (values are read-only mappings)."""

    def __init__(self, *, shared: bool = True) -> None:
        #: Plain dicts, as parsed: a dict of scalars is not tracked by the cyclic collector, so
        #: holding thousands of them, replaced at every event, sets off no full collection.
        #: Readers get read-only views (:meth:`get`, :attr:`EntityChange.entity`).
        #: By type, then by id: a snapshot of one type goes in with one ``dict.update``, a
        #: type's ids are its dict's keys, and no key tuple is made per event.
        self._entities: dict[str, dict[int, dict[str, Any]]] = {}
        #: Which sockets (shards) have this entity in their view: a resync of one shard may
        #: only delete what no other shard still holds (contracts, products reach them all).
        #: Kept only when several sockets write (``shared``): with one, every entity is its.
        self._owners: dict[EntityKey, set[int]] = {}
        self._shared = shared
        #: Snapshot entries without an integer id, skipped.
        self.skipped = 0

    def __len__(self) -> int:
        return sum(len(typed) for typed in self._entities.values())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        typed = self._entities.get(key[0])
        return typed is not None and key[1] in typed

    def get(self, entity_type: str, entity_id: int) -> Mapping[str, Any] | None:
        """The entity (a read-only view), or ``None``."""
        value = self._entities.get(entity_type, {}).get(entity_id)
        return None if value is None else MappingProxyType(value)

    def of_type(self, entity_type: str) -> list[Mapping[str, Any]]:
        """Every entity of one type, by id (read-only views)."""
        typed = self._entities.get(entity_type, {})
        return [MappingProxyType(typed[entity_id]) for entity_id in sorted(typed)]

    def items(self) -> Iterator[tuple[EntityKey, Mapping[str, Any]]]:
        """Every ``((entityType, id), entity)`` pair (read-only views)."""
        return iter(
            [
                ((entity_type, entity_id), MappingProxyType(value))
                for entity_type, typed in self._entities.items()
                for entity_id, value in typed.items()
            ]
        )

    def contents(self, generation: int) -> list[ChangeRecord]:
        """Everything held, as ``Created`` records marked ``recovered`` (what a snapshot
        diffed against an empty store gives): how a new subscriber to the change feed starts
        from the store's state. The records hold the stored dicts themselves (no copies)."""
        return [
            (entity_type, entity_id, "Created", value, True, generation, False)
            for entity_type, typed in self._entities.items()
            for entity_id, value in typed.items()
        ]

    def as_dict(self) -> dict[EntityKey, dict[str, Any]]:
        """A plain, mutable copy (for comparisons and dumps)."""
        return {key: dict(value) for key, value in self.items()}

    def apply_event(
        self, event: EntityEvent, generation: int, *, owner: int = 0
    ) -> list[EntityChange]:
        """Apply one ``props`` event from socket ``owner``; return what actually changed. The
        entities are copied (the caller keeps its mappings)."""
        updates = [(event.entity_type, event.event_type, dict(raw)) for raw in event.entities]
        return [as_change(r) for r in self.apply_updates(updates, generation, owner=owner)]

    def apply_updates(
        self, updates: Iterable[EntityUpdate], generation: int, *, owner: int = 0
    ) -> list[ChangeRecord]:
        """Apply live ``props`` updates from socket ``owner``, in order; return what actually
        changed.

        The store takes ownership of each entity dict (it is the parser's fresh output and
        nobody else's): it is wrapped read-only, never copied. This is the engine's hot path,
        so the loop is written out with its lookups bound to locals.
        """
        if self._shared:
            return self._apply_shared(updates, generation, owner)
        changes: list[ChangeRecord] = []
        append = changes.append
        entities = self._entities
        last_type = None
        typed: dict[int, dict[str, Any]] = _NONE
        for entity_type, event_type, raw in updates:
            if entity_type != last_type:  # a run is mostly of one or two types
                # (no dict is made for a type until an entity of it is stored: a stream of
                # deletions of made-up types must not grow the store)
                typed = entities.get(entity_type, _NONE)
                last_type = entity_type
            entity_id: int = raw["id"]  # an int: props_updates checked it
            current = typed.get(entity_id)
            # the usual case first: an update (or a repeated create) of an entity we hold
            if current is not None and event_type != "Deleted":
                if current != raw:
                    typed[entity_id] = raw
                    append((entity_type, entity_id, "Updated", raw, False, generation, False))
                continue
            if event_type == "Deleted":
                if current is not None:
                    del typed[entity_id]
                    append((entity_type, entity_id, "Deleted", current, False, generation, False))
                continue
            if typed is _NONE:
                typed = entities[entity_type] = {}
            typed[entity_id] = raw
            append((entity_type, entity_id, "Created", raw, False, generation, False))
        return changes

    def _apply_shared(
        self, updates: Iterable[EntityUpdate], generation: int, owner: int
    ) -> list[ChangeRecord]:
        """:meth:`apply_updates` when several sockets share the store: the same, and each
        entity remembers which sockets hold it (a snapshot of one socket must not delete what
        another still holds)."""
        changes: list[ChangeRecord] = []
        append = changes.append
        entities = self._entities
        owners_of = self._owners
        last_type = None
        typed: dict[int, dict[str, Any]] = _NONE
        for entity_type, event_type, raw in updates:
            if entity_type != last_type:
                typed = entities.get(entity_type, _NONE)
                last_type = entity_type
            entity_id: int = raw["id"]
            current = typed.get(entity_id)
            if event_type == "Deleted":
                owners_of.pop((entity_type, entity_id), None)
                if current is not None:
                    del typed[entity_id]
                    append((entity_type, entity_id, "Deleted", current, False, generation, False))
                continue
            owners = owners_of.get((entity_type, entity_id))
            if owners is None:
                owners_of[(entity_type, entity_id)] = {owner}
            elif owner not in owners:
                owners.add(owner)
            if current is None:
                if typed is _NONE:
                    typed = entities[entity_type] = {}
                typed[entity_id] = raw
                append((entity_type, entity_id, "Created", raw, False, generation, False))
            elif current != raw:
                typed[entity_id] = raw
                append((entity_type, entity_id, "Updated", raw, False, generation, False))
        return changes

    def apply_snapshot(
        self,
        snapshot: Mapping[str, Any],
        generation: int,
        *,
        entity_types: frozenset[str] | None,
        owner: int = 0,
    ) -> list[ChangeRecord]:
        """Replace socket ``owner``'s view with a sync snapshot; return the diff as changes.

        Only the types present in the snapshot (or in ``entity_types`` when the sync asked
        for a subset) are replaced: a type the server did not send is not deleted, and
        neither is an entity another shard still holds.
        """
        # By type, then by id: the id checks and the by-type index are per type, and a
        # duplicate id within the snapshot keeps its last value (as a dict would).
        incoming: dict[str, dict[int, dict[str, Any]]] = {}
        for collection, values in snapshot.items():
            if type(values) is not list:
                continue
            entity_type = singular(collection)
            if entity_types is not None and entity_type not in entity_types:
                continue
            of_type = incoming.setdefault(entity_type, {})
            for raw in values:
                if type(raw) is dict:
                    entity_id = raw.get("id")
                    if type(entity_id) is int:
                        of_type[entity_id] = raw
                        continue
                self.skipped += 1
        changes: list[ChangeRecord] = []
        append = changes.append
        entities = self._entities
        owners_of = self._owners
        shared = self._shared
        for entity_type, of_type in incoming.items():  # first what went while we were away
            typed = entities.setdefault(entity_type, {})
            for entity_id in sorted(typed.keys() - of_type.keys()):
                key = (entity_type, entity_id)
                owners = owners_of.get(key, {owner})
                owners.discard(owner)
                if owners:
                    continue  # another shard still holds it
                owners_of.pop(key, None)
                last = typed.pop(entity_id)
                append((entity_type, entity_id, "Deleted", last, True, generation, False))
        for entity_type, of_type in incoming.items():
            typed = entities[entity_type]
            if shared:
                for entity_id in of_type:
                    owners_of.setdefault((entity_type, entity_id), set()).add(owner)
            if not typed:  # the first sync of this type: all of it is new, in one update
                typed.update(of_type)
                changes += [
                    (entity_type, entity_id, "Created", raw, True, generation, False)
                    for entity_id, raw in of_type.items()
                ]
                continue
            for entity_id, raw in of_type.items():
                current = typed.get(entity_id)
                if current is None:
                    typed[entity_id] = raw
                    append((entity_type, entity_id, "Created", raw, True, generation, False))
                elif current != raw:
                    typed[entity_id] = raw
                    append((entity_type, entity_id, "Updated", raw, True, generation, False))
        return changes
