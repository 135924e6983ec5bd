"""Garbage-collection discipline on the hot path: keep full collections off the snapshot.

Why: CPython's cyclic collector runs a *full* collection when enough long-lived containers have
piled up since the last one. A many-MB snapshot is exactly that: parsing it allocates
hundreds of thousands of dicts and lists, and applying it keeps them. Measured on this
project's 2-core machine, a 3.7 MB snapshot set off five full collections (0.3-0.8 s in all,
more than the parse itself), and every later full collection walked those objects again
(about 14 ms each, the p99.9 latency spikes of a busy stream).

What :class:`CollectorDiscipline` does, when enabled (``EngineConfig.gc_discipline``):

- while a frame of at least :data:`LARGE_FRAME` characters is parsed and applied, the
  collector is paused (and restored to whatever state the application had it in);
- once a snapshot that came in such a frame is applied, ``gc.freeze()`` moves every object
  alive then (the snapshot included) to the permanent generation: later collections do not
  walk them, and the young generations start empty, so the pause does not turn into a full
  collection a moment later. Small snapshots are not frozen: they cost the collector little,
  and freezing parks each connection's short-lived cyclic garbage until a full collection
  (measured: 60,000 to 198,000 live objects over 1,100 reconnects when every snapshot was
  frozen, 50,000 to 62,000 when none was);
- the first time an engine in the process goes live, whatever the snapshot's size,
  ``gc.freeze()`` runs too (it walks nothing: it moves the generations' lists). A process
  that has just imported and built everything holds tens of thousands of young objects, and
  left alone the collector walks them in its next generation-1 collections and then a full
  one, while events stream: measured at 5,000 events/s on loopback, a 0.25-0.8 ms
  generation-1 pause and sometimes a 15 ms full one within the first seconds, which set the
  p99.9 of a short run. Frozen, they are not walked; later generation-1 collections take
  0.06-0.12 ms. They are given back when that first connection ends, without the full
  collection below (they are the process's own objects, not a snapshot's garbage). Once
  per process, not per engine: ``gc.unfreeze()`` puts what it gives back in the oldest
  generation without counting it towards the next full collection, so a process that
  opened engine after engine, each freezing at its start, parked every one's young garbage
  there out of the collector's sight (the hostile soak, an engine a script: 1,500 objects
  and 0.2 MB more a script, 2.3 GB after about 9,000);
- when a connection whose snapshot was large ends, ``gc.unfreeze()`` gives those objects
  back and one full collection runs then, while the socket is down and no data flows on it,
  so cyclic garbage that was alive at the freeze is freed (nothing accumulates across
  reconnects).

The collector is one per process, and an engine may run several sockets (user-sync shards, a
market-data socket, a replay socket) or share the process with another engine. So a freeze
belongs to the sockets that took it (:class:`SocketCollector`, one per socket): a socket that
froze nothing (a market-data socket) ending gives nothing back and collects nothing, and the
objects are given back, with the collection if any of those snapshots was large, only when
the last socket that froze them, in any engine of the process, has ended its connection.
Until then they stay frozen: ``gc.unfreeze()`` cannot give back one socket's objects and keep
another's, and a full collection while another socket streams is the pause this module
exists to prevent.

Steady streaming of small events allocates no long-lived containers (a flat entity dict is
untracked by the collector), so it triggers no full collection at all; the benchmark counts
them (``make bench``).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

#: Frames at least this long (characters) are parsed with the collector paused.
LARGE_FRAME = 1 << 20

_NOTHING: AbstractContextManager[None] = nullcontext()


class ProcessFreeze:
    """Which sockets hold the process's ``gc.freeze()``, whether a large snapshot is among
    what they froze, and whether an engine of the process has gone live before. One per
    process (:data:`process_freeze`), as the collector is; a test that needs a process
    where no engine has gone live yet puts a new one there."""

    def __init__(self) -> None:
        #: Weak: a socket that is gone without ending its connection (an engine that was
        #: never closed) stops holding the freeze when it is collected.
        self.holders: weakref.WeakSet[SocketCollector] = weakref.WeakSet()
        self.large = False
        #: A snapshot was applied before: the start-up's objects were frozen then.
        self.started = False


#: The process's freeze (see :class:`ProcessFreeze`).
process_freeze = ProcessFreeze()


class CollectorDiscipline:
    """An engine's collector setting (see the module docstring): whether the discipline is
    on. Its sockets each take a :meth:`for_socket` handle."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def for_socket(self) -> SocketCollector:
        """The handle one socket's loop calls around its reads, snapshots and endings."""
        return SocketCollector(self)


class SocketCollector:
    """One socket's side of the discipline: its large frames, the freezes it holds."""

    def __init__(self, discipline: CollectorDiscipline) -> None:
        self._discipline = discipline
        self._large_frame_seen = False

    def around(self, messages: Sequence[str | bytes]) -> AbstractContextManager[None]:
        """A context to handle ``messages`` in: the collector paused if any is large.

        Called once per read, so the common case (nothing large) costs a call and a
        ``max``, and hands back one shared no-op context.
        """
        if not self._discipline.enabled or max(map(len, messages), default=0) < LARGE_FRAME:
            return _NOTHING
        if not gc.isenabled():
            return _NOTHING
        self._large_frame_seen = True
        return self._paused()

    @contextmanager
    def _paused(self) -> Iterator[None]:
        gc.disable()
        try:
            yield
        finally:
            gc.enable()

    def snapshot_applied(self) -> None:
        """A snapshot is in the store and events start to stream: keep later collections
        off it if it was large, and off the start-up's objects the first time (see the
        module docstring); this socket holds the freeze until its connection ends."""
        if not self._discipline.enabled:
            return
        state = process_freeze
        first, state.started = not state.started, True
        if self._large_frame_seen or first:
            gc.freeze()
            state.holders.add(self)
            state.large = state.large or self._large_frame_seen

    def connection_ended(self) -> None:
        """This socket's connection is down: when it was the last to hold the freeze, give
        the frozen objects back, and after a large snapshot free the cyclic garbage among
        them at once."""
        self._large_frame_seen = False
        state = process_freeze
        if self not in state.holders:
            return
        state.holders.discard(self)
        if state.holders:
            return  # another socket still streams on what was frozen
        large, state.large = state.large, False
        if gc.get_freeze_count():
            gc.unfreeze()
            if large:
                gc.collect()
