"""The one place that writes the entity store: snapshot, live events, late split parts.

Every change a write causes goes to the change feed (never blocking, see ``feed.py``) and
wakes the delivery task. Sockets reach the store only through a :class:`StoreWriter`, so the
rules (the ``entityTypes`` filter, which shard holds what, ``recovered`` on snapshot diffs)
are applied the same way whoever writes. Sans-I/O: ``wake`` is any callable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from .feed import ChangeSink
from .protocol import EntityUpdate
from .store import EntityStore, recovered, singular


def _nothing() -> None:
    pass


class StoreWriter:
    """Writes the store for every socket of one engine and feeds what changed onwards."""

    def __init__(
        self,
        store: EntityStore,
        feed: ChangeSink,
        *,
        entity_types: frozenset[str] | None,
        counters: Counter[str],
        wake: Callable[[], None],
        on_write: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._feed = feed
        self._entity_types = entity_types
        self._counters = counters
        self._wake = wake
        #: Told after every write that changed the store (order handles wait on it), whoever
        #: subscribes to the changes.
        self._on_write = on_write if on_write is not None else _nothing

    def route(self, feed: ChangeSink, wake: Callable[[], None]) -> None:
        """Write to ``feed`` and wake ``wake`` from now on: the subscribers changed (see
        ``delivery.ChangeHub``). The hot path keeps calling one sink and one wake-up."""
        self._feed = feed
        self._wake = wake

    def snapshot(
        self,
        snapshot: Mapping[str, Any],
        early: list[EntityUpdate],
        *,
        generation: int,
        owner: int,
    ) -> None:
        """Replace ``owner``'s view with ``snapshot``, then apply the updates that raced it.

        Synchronous from the first change to the last, so no live event can slip between
        the snapshot and the events that were waiting for it.
        """
        self._feed.defer(
            self._store.apply_snapshot(
                snapshot, generation, entity_types=self._entity_types, owner=owner
            )
        )
        if early:
            self.events(early, generation=generation, owner=owner)
        self._wake()
        self._on_write()

    def events(self, updates: list[EntityUpdate], *, generation: int, owner: int) -> None:
        """Apply live ``props`` updates (one per entity, in the order they came)."""
        self._counters["props_events"] += len(updates)
        wanted = self._entity_types
        if wanted is not None:
            kept = [update for update in updates if update[0] in wanted]
            if len(kept) != len(updates):
                self._counters["props_filtered"] += len(updates) - len(kept)
            updates = kept
        changes = self._store.apply_updates(updates, generation, owner=owner)
        if changes:
            self._feed.extend(changes)
            self._wake()
            self._on_write()

    def late_part(self, part: Mapping[str, Any], *, generation: int, owner: int) -> None:
        """A split-snapshot part after the quiet period: upsert what it holds (its entities
        may have looked deleted meanwhile; a late part never deletes anything)."""
        self._counters["late_sync_parts"] += 1
        updates: list[EntityUpdate] = []
        for collection, values in part.items():
            if not isinstance(values, list):
                continue
            entity_type = singular(collection)
            if self._entity_types is not None and entity_type not in self._entity_types:
                continue
            updates.extend(
                (entity_type, "Updated", raw)
                for raw in values
                if isinstance(raw, dict) and type(raw.get("id")) is int
            )
        changes = self._store.apply_updates(updates, generation, owner=owner)
        self._feed.extend([recovered(change) for change in changes])
        self._wake()
        self._on_write()
