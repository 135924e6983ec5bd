"""The penalty region: a captcha or 429 lockout as a declared, recorded span of time.

Tradovate's lockouts are per user (P-RL), so one region serves the whole engine, whatever
socket or request provoked it. :meth:`PenaltyRegion.begin` fires ``lockout_began`` (the
request scheduler already holds the lockout's end); :meth:`PenaltyRegion.run` is the region's
one supervisor task: it sleeps until the lockout's end and fires ``lockout_ended``. A lockout
saved by an earlier process is resumed when the engine starts, and recorded as begun then.
The running penalty is saved to ``penalty_state_file`` whenever it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import trio

from .scheduler import RequestScheduler
from .statechart import (
    PENALTY_TABLE,
    PenaltyNode,
    PenaltyTrigger,
    State,
    Statechart,
    TransitionRecord,
)

logger = logging.getLogger("trio_tradovate.requests")


class PenaltyRegion:
    """The engine's penalty region (see the module docstring)."""

    def __init__(
        self,
        scheduler: RequestScheduler,
        *,
        path: Path | None,
        wall_clock: Callable[[], datetime],
        wall_stamp: Callable[[], str],
        on_record: Callable[[TransitionRecord], None],
        engine_state: Callable[[], State],
    ) -> None:
        self._scheduler = scheduler
        self._path = path
        self._wall_clock = wall_clock
        self._changed = trio.Event()
        self._chart: Statechart[PenaltyNode, PenaltyTrigger] = Statechart(
            PENALTY_TABLE,
            clock=trio.current_time,
            on_record=on_record,
            wall_clock=wall_stamp,
            state_of=lambda node: engine_state(),
        )

    @property
    def node(self) -> PenaltyNode:
        """Whether a lockout is running."""
        return self._chart.node

    def lockout(self, reason: str) -> None:
        """A captcha or 429 answer to a socket's own request (the syncrequest)."""
        self._scheduler.on_lockout(reason, trio.current_time())
        self.begin(reason)

    def begin(self, reason: str) -> None:
        """The scheduler holds a new or longer lockout: record it and save it."""
        self.save()
        seconds = self._scheduler.penalty.lockout_until - trio.current_time()
        self._chart.fire(
            PenaltyTrigger.LOCKOUT_BEGAN,
            reason=f"{reason}: only cancellations and liquidations go out for {seconds:.0f} s",
        )
        self._changed.set()

    def save(self) -> None:
        """Write the running pause and lockout, if a file is configured."""
        if self._path is None:
            return
        data = self._scheduler.dump_penalty(trio.current_time(), self._wall_clock())
        # A few hundred bytes, written only when a penalty starts: not worth a thread.
        self._path.write_bytes(data)

    def load(self) -> None:
        """Resume a pause or lockout saved by an earlier run (before the engine starts)."""
        path = self._path
        if path is None or not path.exists():
            return
        self._scheduler.load_penalty(path.read_bytes(), trio.current_time(), self._wall_clock())

    async def run(self) -> None:
        """Record a restored lockout, then fire ``lockout_ended`` whenever one runs out."""
        scheduler = self._scheduler
        if scheduler.locked_out(trio.current_time()):
            logger.error(
                "a penalty lockout (%s) saved by an earlier run is still running: only "
                "cancellations and liquidations are sent until it ends",
                scheduler.penalty.lockout_reason,
            )
            self.begin(f"{scheduler.penalty.lockout_reason} (saved by an earlier run)")
        while True:
            if self._chart.node is PenaltyNode.CLEAR:
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            await trio.sleep_until(scheduler.penalty.lockout_until)
            if not scheduler.locked_out(trio.current_time()):  # not extended meanwhile
                self._chart.fire(PenaltyTrigger.LOCKOUT_ENDED, reason="the lockout time is over")
