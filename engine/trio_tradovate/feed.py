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

Several consumers: every subscriber (``Engine.events()``) has a :class:`ChangeFeed` of its
own, because "once" is measured against what *that* consumer holds. The writer pushes into a
:class:`ChangeSink`: the one feed itself while there is one subscriber (nothing in between:
one consumer pays nothing for the possibility of several), a :class:`FanOut` over the feeds
when there are several (the same record tuples go into each, no object per consumer), and
:data:`DISCARD` when there is none. Each subscriber's :class:`FillLedger` is a
:meth:`~FillLedger.fork` of the engine's, which keeps the checkpoint file.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import orjson

from .errors import ConfigError
from .store import ChangeRecord, EntityChange, EntityKey

#: ``EntityChange`` from a record (``tuple.__new__``, not the named tuple's Python-level
#: ``__new__``: no Python call per change, and usable by ``map``).
_as_change = partial(tuple.__new__, EntityChange)
#: The consumer holds nothing of this type: read, never written.
_NONE: dict[int, Mapping[str, Any]] = {}


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
        #: What the checkpoint file held when read: the previous process's announcements.
        self._loaded = frozenset(self._ids)
        #: The ledger this one reports new ids to, and saves through (see :meth:`fork`).
        self._parent: FillLedger | None = None

    def fork(self) -> FillLedger:
        """A ledger for one more consumer: it starts from what the checkpoint file held, keeps
        its own record (a fill is announced once to *each* consumer), and reports every new id
        here, so that this ledger's checkpoint holds the fills any consumer was told about."""
        child = FillLedger()
        child._ids = set(self._loaded)
        child._parent = self
        return child

    def __contains__(self, fill_id: int) -> bool:
        return fill_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, fill_id: int) -> None:
        """Remember ``fill_id`` as announced."""
        if fill_id not in self._ids:
            self._ids.add(fill_id)
            self._dirty = True
            if self._parent is not None:
                self._parent.add(fill_id)

    def save(self) -> None:
        """Write the checkpoint if it changed, atomically (write, then rename)."""
        if self._parent is not None:
            self._parent.save()
            return
        if self._path is None or not self._dirty:
            return
        temporary = self._path.with_suffix(self._path.suffix + ".tmp")
        temporary.write_bytes(orjson.dumps({"fills": sorted(self._ids)}))
        os.replace(temporary, self._path)
        self._dirty = False


class ChangeSink(Protocol):
    """Where the store's writer puts changes: a :class:`ChangeFeed`, a :class:`FanOut` of
    several, or :data:`DISCARD`."""

    def extend(self, records: list[ChangeRecord]) -> None:
        """Queue ``records``, in order (the list is not kept: the caller may reuse it)."""

    def defer(self, records: list[ChangeRecord]) -> None:
        """Queue a snapshot diff (see :meth:`ChangeFeed.defer`)."""


class _Discard:
    """The sink while nobody subscribes: a later subscriber starts from the store itself."""

    def extend(self, records: list[ChangeRecord]) -> None:
        pass

    def defer(self, records: list[ChangeRecord]) -> None:
        pass


#: The sink of an engine without subscribers.
DISCARD: ChangeSink = _Discard()


class FanOut:
    """Several subscribers' feeds behind one sink. Each record is one immutable tuple,
    shared by every feed that holds it: an extra consumer costs a reference per change, and
    its own coalescing keeps what it holds bounded by the account."""

    __slots__ = ("feeds",)

    def __init__(self, feeds: tuple[ChangeFeed, ...]) -> None:
        self.feeds = feeds

    def extend(self, records: list[ChangeRecord]) -> None:
        for feed in self.feeds:
            feed.extend(records)

    def defer(self, records: list[ChangeRecord]) -> None:
        for feed in self.feeds:
            feed.defer(records)


class ChangeFeed:
    """The waiting room between the store and the consumer channel (see module docstring)."""

    def __init__(self, ledger: FillLedger | None = None, *, window: int = 0) -> None:
        #: Changes admitted for the consumer, oldest first: the ``window`` most recent changes
        #: are kept as they came (no coalescing) while the consumer keeps up. Plain records
        #: (:data:`~.store.ChangeRecord`) here and in :attr:`_waiting`: a consumer gets each
        #: as an :class:`EntityChange` when it takes it.
        self._ready: deque[ChangeRecord] = deque()
        self.window = window
        self._waiting: OrderedDict[EntityKey, ChangeRecord] = OrderedDict()
        #: Snapshot diffs queued whole (:meth:`defer`), admitted when taken: between
        #: :attr:`_ready` and :attr:`_waiting` in line, and while one is here every new change
        #: waits behind it.
        self._deferred: deque[ChangeRecord] = deque()
        #: What the consumer holds: the last value delivered per entity (the store's own
        #: dicts, shared: this costs references, not copies).
        #: By type, then by id, as the store keeps them (no key tuple hashed per change).
        self._delivered: dict[str, dict[int, Mapping[str, Any]]] = {}
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
        return len(self._ready) + len(self._deferred) + len(self._waiting)

    @property
    def held(self) -> int:
        """How many entities the consumer holds (what it was given, net of deletions)."""
        return sum(map(len, self._delivered.values()))

    def clear(self) -> None:
        """Forget everything waiting and everything the consumer holds, its fill record
        included (it left; the engine's checkpoint keeps what it was told)."""
        self._ready.clear()
        self._waiting.clear()
        self._deferred.clear()
        self._delivered.clear()
        self.ledger = FillLedger()

    def push(self, record: ChangeRecord) -> None:
        """Queue a change: admitted as it is while fewer than ``window`` changes wait and none
        is coalescing; otherwise merged into one still waiting for the same entity."""
        self.extend([record])

    def extend(self, records: list[ChangeRecord]) -> None:
        """:meth:`push` each of ``records``, in order.

        The hot path: while they fit in the window and nothing is coalescing, an update to an
        entity the consumer holds is admitted here as the plain record it is, without a
        method call (what :meth:`_admit` would do for it). Behind the window, records wait
        merged per entity (a snapshot's tens of thousands go this way, in one loop).
        """
        ready = self._ready
        room = 0 if self._waiting or self._deferred else self.window - len(ready)
        if room > 0:
            delivered = self._delivered
            admit = self._admit
            append = ready.append
            admitted_all = len(records) <= room
            last_type = None
            held: dict[int, Mapping[str, Any]] = _NONE
            for record in records if admitted_all else records[:room]:
                entity_type, entity_id, event_type, entity, _, _, coalesced = record
                if event_type == "Updated" and not coalesced:
                    if entity_type != last_type:
                        held = delivered.get(entity_type, _NONE)
                        last_type = entity_type
                    if entity_id in held:
                        held[entity_id] = entity
                        append(record)
                        continue
                admitted = admit(record)
                if admitted is not None:
                    append(admitted)
                    last_type = None  # the admission may have made the type's dict
            if admitted_all:
                return
            records = records[room:]
        waiting = self._waiting
        delivered = self._delivered
        # What the consumer holds is known only once deferred records ahead were admitted.
        known = not self._deferred
        for record in records:
            key = (record[0], record[1])
            earlier = waiting.get(key)
            if known and record[2] == "Deleted" and key[1] not in delivered.get(key[0], _NONE):
                # The consumer never held it: nothing to tell, and nothing to keep waiting.
                if earlier is not None:
                    del waiting[key]
                    self.coalesced += 1
                continue
            if earlier is not None:
                self.coalesced += 1
                entity_type, entity_id, event_type, entity, recovered, generation, _ = record
                record = (
                    entity_type,
                    entity_id,
                    event_type,
                    entity,
                    earlier[4] or recovered,
                    generation,
                    True,
                )
            waiting[key] = record  # an existing key keeps its place in line
        if len(waiting) > self.high_water:
            self.high_water = len(waiting)

    def defer(self, records: list[ChangeRecord]) -> None:
        """Queue a snapshot diff (at most one record per entity) as it is, to be admitted
        when the consumer takes it, as :meth:`extend` would have: applying a snapshot of
        tens of thousands of entities then costs the reader one append, and memory stays
        bounded by the account (one record per entity). Behind changes still coalescing,
        it goes the general way, to keep the order."""
        if self._waiting:
            self.extend(records)
        else:
            self._deferred.extend(records)

    def pop(self) -> EntityChange | None:
        """The oldest waiting change that changes what the consumer holds, or ``None``."""
        batch = self.pop_many(1)
        return batch[0] if batch else None

    def pop_many(self, limit: int) -> list[EntityChange]:
        """Up to ``limit`` changes, oldest first (what :meth:`pop` would give one by one)."""
        ready = self._ready
        if len(ready) <= limit:
            # the common case: one pass over the records
            batch = list(map(_as_change, ready))
            ready.clear()
        else:
            popleft = ready.popleft
            batch = [_as_change(popleft()) for _ in range(limit)]
        if len(batch) < limit and (self._deferred or self._waiting):
            # then snapshot diffs, then what waits coalesced, each admitted as it is taken
            admit = self._admit
            append = batch.append
            for line, take in (
                (self._deferred, self._deferred.popleft),
                (self._waiting, self._take_waiting),
            ):
                while line and len(batch) < limit:
                    admitted = admit(take())
                    if admitted is not None:
                        append(_as_change(admitted))
        return batch

    def _take_waiting(self) -> ChangeRecord:
        return self._waiting.popitem(last=False)[1]

    def _admit(self, record: ChangeRecord) -> ChangeRecord | None:
        """``record`` relative to what the consumer holds, or ``None`` when it changes nothing
        for the consumer (records what the consumer will hold once it is given)."""
        entity_type, entity_id, event_type, entity, recovered, generation, coalesced = record
        delivered = self._delivered.get(entity_type, _NONE)
        held = delivered.get(entity_id)
        if event_type == "Deleted":
            if held is None:
                self.no_ops += 1
                return None
            del delivered[entity_id]
            return (entity_type, entity_id, event_type, held, recovered, generation, coalesced)
        # Only a merged change can equal what the consumer holds ("changed and changed back"):
        # an unmerged one follows the value the consumer was last given, and the store emits
        # no change that changes nothing. So the hot path skips the comparison.
        if held is not None and coalesced and (held is entity or held == entity):
            self.no_ops += 1
            return None
        if held is None and entity_type == "fill":
            if entity_id in self.ledger:
                self.repeated_fills += 1
                return None
            self.ledger.add(entity_id)
        if delivered is _NONE:
            delivered = self._delivered[entity_type] = {}
        delivered[entity_id] = entity
        kind = "Created" if held is None else "Updated"
        if event_type == kind:
            return record
        return (entity_type, entity_id, kind, entity, recovered, generation, coalesced)
