"""The one place that writes the entity store: snapshot, live events, late split parts.

Every change a write causes goes to the change feed (never blocking, see ``feed.py``) and
wakes the delivery task. Sockets reach the store only through a :class:`StoreWriter`, so the
rules (the ``entityTypes`` filter, which shard holds what, ``recovered`` on snapshot diffs)
are applied the same way whoever writes. Sans-I/O: ``wake`` is any callable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from .feed import ChangeFeed
from .protocol import EntityEvent
from .store import EntityStore, singular


class StoreWriter:
    """Writes the store for every socket of one engine and feeds what changed onwards."""

    def __init__(
        self,
        store: EntityStore,
        feed: ChangeFeed,
        *,
        entity_types: frozenset[str] | None,
        counters: Counter[str],
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._feed = feed
        self._entity_types = entity_types
        self._counters = counters
        self._wake = wake

    def snapshot(
        self,
        snapshot: Mapping[str, Any],
        early: Iterable[EntityEvent],
        *,
        generation: int,
        owner: int,
    ) -> None:
        """Replace ``owner``'s view with ``snapshot``, then apply the events that raced it.

        Synchronous from the first change to the last, so no live event can slip between
        the snapshot and the events that were waiting for it.
        """
        push = self._feed.push
        for change in self._store.apply_snapshot(
            snapshot, generation, entity_types=self._entity_types, owner=owner
        ):
            push(change)
        for event in early:
            self.event(event, generation=generation, owner=owner)
        self._wake()

    def event(self, event: EntityEvent, *, generation: int, owner: int) -> None:
        """Apply one live ``props`` event."""
        self._counters["props_events"] += 1
        if self._entity_types is not None and event.entity_type not in self._entity_types:
            self._counters["props_filtered"] += 1
            return
        changes = self._store.apply_event(event, generation, owner=owner)
        if changes:
            push = self._feed.push
            for change in changes:
                push(change)
            self._wake()

    def late_part(self, part: Mapping[str, Any], *, generation: int, owner: int) -> None:
        """A split-snapshot part after the quiet period: upsert what it holds (its entities
        may have looked deleted meanwhile; a late part never deletes anything)."""
        self._counters["late_sync_parts"] += 1
        for collection, values in part.items():
            if not isinstance(values, list):
                continue
            entity_type = singular(collection)
            if self._entity_types is not None and entity_type not in self._entity_types:
                continue
            for raw in values:
                if isinstance(raw, dict) and type(raw.get("id")) is int:
                    event = EntityEvent(entity_type, "Updated", (raw,))
                    for change in self._store.apply_event(event, generation, owner=owner):
                        self._feed.push(replace(change, recovered=True))
        self._wake()
