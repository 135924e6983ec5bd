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
- the first time the engine goes live, whatever the snapshot's size, ``gc.freeze()`` runs
  too (it walks nothing: it moves the generations' lists). A process that has just
  imported and built everything holds tens of thousands of young objects, and left alone
  the collector walks them in its next generation-1 collections and then a full one, while
  events stream: measured at 5,000 events/s on loopback, a 0.25-0.8 ms generation-1 pause
  and sometimes a 15 ms full one within the first seconds, which set the p99.9 of a short
  run. Frozen, they are not walked; later generation-1 collections take 0.06-0.12 ms. They
  are given back when that first connection ends, without the full collection below
  (they are the process's own objects, not a snapshot's garbage; the next full
  collection the collector runs of itself walks them);
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


class _Freeze:
    """Which sockets hold the process's ``gc.freeze()``, and whether a large snapshot is
    among what they froze. One per process, as the collector is."""

    def __init__(self) -> None:
        #: Weak: a socket that is gone without ending its connection (an engine that was
        #: never closed) stops holding the freeze when it is collected.
        self.holders: weakref.WeakSet[SocketCollector] = weakref.WeakSet()
        self.large = False


_FREEZE = _Freeze()


class CollectorDiscipline:
    """An engine's collector settings around snapshots (see the module docstring): whether
    the discipline is on, and whether the engine has gone live before. Its sockets each take
    a :meth:`for_socket` handle."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        #: A snapshot was applied before: the start-up's objects were frozen then.
        self._started = False

    def for_socket(self) -> SocketCollector:
        """The handle one socket's loop calls around its reads, snapshots and endings."""
        return SocketCollector(self)

    def first_snapshot(self) -> bool:
        """Whether this is the engine's first snapshot (the start-up's objects are frozen
        with it); from now on, no longer."""
        first, self._started = not self._started, True
        return first


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
        discipline = self._discipline
        if not discipline.enabled:
            return
        first = discipline.first_snapshot()
        if self._large_frame_seen or first:
            gc.freeze()
            _FREEZE.holders.add(self)
            _FREEZE.large = _FREEZE.large or self._large_frame_seen

    def connection_ended(self) -> None:
        """This socket's connection is down: when it was the last to hold the freeze, give
        the frozen objects back, and after a large snapshot free the cyclic garbage among
        them at once."""
        self._large_frame_seen = False
        if self not in _FREEZE.holders:
            return
        _FREEZE.holders.discard(self)
        if _FREEZE.holders:
            return  # another socket still streams on what was frozen
        large, _FREEZE.large = _FREEZE.large, False
        if gc.get_freeze_count():
            gc.unfreeze()
            if large:
                gc.collect()
