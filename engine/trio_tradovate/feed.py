"""From store changes to the consumer: bounded memory, exactly-once fills, coalesced gaps.

Theory of operation
-------------------
The reader must never wait for the application: while it waits, it cannot read the answer to
an order cancellation either. So the reader hands every :class:`EntityChange` to a
:class:`ChangeFeed` (synchronous, never blocks), and the consumer takes changes out of it
directly (``delivery.ChangeStream``), one at a time or in batches: no task and no channel sit
in between.

While the consumer keeps up, every change passes through in order, as it came: the latest
``window`` changes (``EngineConfig.event_buffer``) are admitted uncoalesced. When it falls
further behind, changes wait in the feed, **coalesced per entity**: a second change to
an entity that is still waiting replaces the first, keeping its place in line. The feed
therefore never holds more than one change per entity, whatever the event rate: memory is
bounded by the size of the account, not by the backlog. A merged change is marked
``coalesced=True`` (the gap marker): intermediate values were skipped.

On the way out each change is checked against what the consumer was last given for that
entity, so the consumer sees only real changes: ``Created`` for an entity it does not hold,
``Updated`` with a value different from the one it holds, ``Deleted`` for one it holds, and
nothing when the net effect of a coalesced run is nil (created then deleted while waiting, or
changed and changed back). Applying every delivered change yields exactly the store's state.

Fills get one more guarantee: a fill id is announced as ``Created`` once, ever. Snapshot
diffs already avoid re-announcing fills the store holds; :class:`FillLedger` covers what the
store cannot know, such as a fill re-created after a deletion, or (with a checkpoint file)
fills a previous process already delivered.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError
from .store import ChangeRecord, EntityChange, EntityKey, as_change, entity_of

_new_tuple = tuple.__new__


class FillLedger:
    """The fill ids already announced to the consumer, optionally persisted."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._ids: set[int] = set()
        self._dirty = False
        if path is not None and path.exists():
            try:
                saved = orjson.loads(path.read_bytes())
                self._ids = {int(i) for i in saved["fills"]}
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"checkpoint file {path} is not valid: {exc}") from None

    def __contains__(self, fill_id: int) -> bool:
        return fill_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, fill_id: int) -> None:
        """Remember ``fill_id`` as announced."""
        if fill_id not in self._ids:
            self._ids.add(fill_id)
            self._dirty = True

    def save(self) -> None:
        """Write the checkpoint if it changed, atomically (write, then rename)."""
        if self._path is None or not self._dirty:
            return
        temporary = self._path.with_suffix(self._path.suffix + ".tmp")
        temporary.write_bytes(orjson.dumps({"fills": sorted(self._ids)}))
        os.replace(temporary, self._path)
        self._dirty = False


class ChangeFeed:
    """The waiting room between the store and the consumer channel (see module docstring)."""

    def __init__(self, ledger: FillLedger | None = None, *, window: int = 0) -> None:
        #: Changes admitted for the consumer, oldest first: the ``window`` most recent changes
        #: are kept as they came (no coalescing) while the consumer keeps up.
        #: The hot path's plain records (:data:`~.store.ChangeRecord`) and the slow path's
        #: changes side by side: both are made :class:`EntityChange` when taken.
        self._ready: deque[ChangeRecord] = deque()
        self.window = window
        self._waiting: OrderedDict[EntityKey, EntityChange] = OrderedDict()
        #: What the consumer holds: the last value delivered per entity (the store's own
        #: dicts, shared: this costs references, not copies).
        self._delivered: dict[EntityKey, Mapping[str, Any]] = {}
        self.ledger = ledger if ledger is not None else FillLedger()
        #: Changes merged into one another while the consumer was behind.
        self.coalesced = 0
        #: Changes dropped on the way out because their net effect on the consumer was nil.
        self.no_ops = 0
        #: Fill ``Created`` changes suppressed because that fill id was announced before.
        self.repeated_fills = 0
        #: The most changes that ever waited at once.
        self.high_water = 0

    def __len__(self) -> int:
        return len(self._ready) + len(self._waiting)

    def push(self, record: ChangeRecord) -> None:
        """Queue a change: admitted as it is while fewer than ``window`` changes wait and none
        is coalescing; otherwise merged into one still waiting for the same entity."""
        change = as_change(record)
        if not self._waiting and len(self._ready) < self.window:
            admitted = self._admit(change)
            if admitted is not None:
                self._ready.append(admitted)
            return
        key = (change.entity_type, change.entity_id)
        waiting = self._waiting.get(key)
        if change.event_type == "Deleted" and key not in self._delivered:
            # The consumer never held it: nothing to tell, and nothing to keep waiting.
            if waiting is not None:
                del self._waiting[key]
                self.coalesced += 1
            return
        if waiting is not None:
            self.coalesced += 1
            change = change._replace(
                coalesced=True, recovered=waiting.recovered or change.recovered
            )
        self._waiting[key] = change  # an existing key keeps its place in line
        self.high_water = max(self.high_water, len(self._waiting))

    def extend(self, records: list[ChangeRecord]) -> None:
        """:meth:`push` each of ``records``, in order. The hot path: while they all fit in the
        window and nothing is coalescing, an update to an entity the consumer holds is
        admitted here as the plain record it is, without a method call (what :meth:`_admit`
        would do for it)."""
        ready = self._ready
        if self._waiting or len(ready) + len(records) > self.window:
            for record in records:
                self.push(record)
            return
        delivered = self._delivered
        admit = self._admit
        append = ready.append
        for record in records:
            entity_type, entity_id, event_type, entity, _, _, coalesced = record
            if event_type == "Updated" and not coalesced:
                key = (entity_type, entity_id)
                if key in delivered:
                    delivered[key] = entity
                    append(record)
                    continue
            admitted = admit(as_change(record))
            if admitted is not None:
                append(admitted)

    def pop(self) -> EntityChange | None:
        """The oldest waiting change that changes what the consumer holds, or ``None``."""
        if self._ready:
            return as_change(self._ready.popleft())
        while self._waiting:
            _, change = self._waiting.popitem(last=False)
            admitted = self._admit(change)
            if admitted is not None:
                return admitted
        return None

    def pop_many(self, limit: int) -> list[EntityChange]:
        """Up to ``limit`` changes, oldest first (what :meth:`pop` would give one by one)."""
        ready = self._ready
        if len(ready) <= limit and not self._waiting:
            # the common case when backed up a little: one pass over the records
            new = _new_tuple  # an EntityChange in line (the slow path's) is copied as well
            batch = [new(EntityChange, record) for record in ready]
            ready.clear()
            return batch
        batch = []
        while len(batch) < limit:
            change = self.pop()
            if change is None:
                break
            batch.append(change)
        return batch

    def _admit(self, change: EntityChange) -> EntityChange | None:
        """``change`` relative to what the consumer holds, or ``None`` when it changes nothing
        for the consumer (records what the consumer will hold once it is given)."""
        key = (change.entity_type, change.entity_id)
        held = self._delivered.get(key)
        if change.event_type == "Deleted":
            if held is None:
                self.no_ops += 1
                return None
            del self._delivered[key]
            return change._replace(entity=held)
        # Only a merged change can equal what the consumer holds ("changed and changed back"):
        # an unmerged one follows the value the consumer was last given, and the store emits
        # no change that changes nothing. So the hot path skips the comparison.
        entity = entity_of(change)
        if held is not None and change.coalesced and (held is entity or held == entity):
            self.no_ops += 1
            return None
        if held is None and change.entity_type == "fill":
            if change.entity_id in self.ledger:
                self.repeated_fills += 1
                return None
            self.ledger.add(change.entity_id)
        self._delivered[key] = entity
        kind = "Created" if held is None else "Updated"
        return change if change.event_type == kind else change._replace(event_type=kind)
