"""When to try again, sans-I/O: the counters the table's guards read, and the backoff delay.

Theory of operation
-------------------
One :class:`ReconnectPolicy` lives as long as a socket (across its generations). It is the
:class:`~trio_tradovate.statechart.Policy` of that socket's chart: the guards of the table ask
it whether the retry budget is used up, whether a refused token is hopeless, whether the
syncrequest's budget is free. Its counters change at two declared moments only: when a
connection ends (:meth:`connection_ended`, called before the ending trigger is fired, so the
guards see the attempt that just failed) and when the socket goes live (:meth:`went_live`).

The delay after a fault (:meth:`delay`) is exponential with *equal jitter*: attempt ``n``
waits a random time in ``[c/2, c]`` with ``c = min(cap, initial * factor**n)``. The floor of
``c/2`` is what bounds the attempt rate whatever the server does (see ``docs/faults.md``): once
``c`` reaches the 30 s cap, attempts are at least 15 s apart. The attempt counter resets only
after a connection stayed live for ``stable_after`` seconds, so a server that syncs and then
drops every socket still meets growing delays. The first attempt after a stable connection
ends comes within ``after_live_cap`` seconds (Stage 2: within 10 s), also after a
``Maintenance`` shutdown; ``ConnectionQuotaReached`` and ``IPQuotaReached`` wait much longer,
because another connection would evict one of the user's own sessions.
"""

from __future__ import annotations

import logging
import random

from .config import BackoffPolicy
from .errors import ServerShutdown
from .session import AuthorizationRejected, Authorized, Ending, Fault
from .statechart import Guard

logger = logging.getLogger("trio_tradovate.engine")

#: Refusals of just-minted tokens in a row after which more logins cannot help.
HOPELESS_REFUSALS = 2


class ReconnectPolicy:
    """The retry counters of one socket and the guards of its table (see module docstring)."""

    def __init__(self, backoff: BackoffPolicy, rng: random.Random) -> None:
        self.backoff = backoff
        self._rng = rng
        #: Consecutive failed attempts since the last stable connection.
        self.failed_attempts = 0
        #: Consecutive refusals of tokens minted for the very attempt.
        self.fresh_refusals = 0
        self._live_since: float | None = None
        #: Whether the connection that ended last had stayed live for ``stable_after``.
        self.was_stable = False

    def check(self, guard: Guard, event: object) -> bool:
        """Answer one guard of the table for ``event``."""
        if guard is Guard.RETRY_BUDGET_EXHAUSTED:
            budget = self.backoff.retry_budget
            return budget is not None and self.failed_attempts >= budget
        if guard is Guard.TOKEN_HOPELESS:
            return isinstance(event, AuthorizationRejected) and (
                not event.renewable or self.fresh_refusals >= HOPELESS_REFUSALS
            )
        if guard is Guard.SYNC_BUDGET_FREE:
            return isinstance(event, Authorized) and event.sync_delay <= 0
        if guard is Guard.NOTHING_TO_RESTORE:
            return getattr(event, "restore", None) == 0
        raise AssertionError(f"unknown guard {guard}")  # pragma: no cover - Guard is closed

    def went_live(self, now: float) -> None:
        """The snapshot is applied."""
        self._live_since = now
        self.fresh_refusals = 0

    def connection_ended(self, event: Ending, now: float) -> None:
        """Count the attempt ``event`` ended (before its trigger fires)."""
        self.was_stable = (
            self._live_since is not None and now - self._live_since >= self.backoff.stable_after
        )
        if self.was_stable:
            self.failed_attempts = 0
        self._live_since = None
        self.failed_attempts += 1
        if isinstance(event, AuthorizationRejected):
            self.fresh_refusals = self.fresh_refusals + 1 if event.fresh else 0

    def delay(self, fault: Fault) -> tuple[float, str]:
        """How long to wait before the next attempt, and the rule that decided it."""
        policy = self.backoff
        ceiling = policy.ceiling(self.failed_attempts - 1)
        if self.failed_attempts == 1:
            ceiling = min(ceiling, policy.after_live_cap)
        jittered = self._rng.uniform(ceiling / 2, ceiling)
        if isinstance(fault.error, ServerShutdown):
            code = fault.error.reason_code
            wait = policy.shutdown_delay(code)
            if wait > 0:
                logger.error(
                    "Tradovate reports %s: another connection now could evict one of this "
                    "user's sessions; waiting %.0f s (BackoffPolicy.shutdown_delays) instead "
                    "of reconnecting within %g s",
                    code,
                    wait,
                    policy.after_live_cap,
                )
                return wait + self._rng.uniform(0, wait * 0.25), f"shutdown policy {code}"
        if fault.min_delay > 0:
            return max(fault.min_delay + self._rng.uniform(0, 1.0), jittered), "server wait"
        if self.was_stable:
            return jittered, "first attempt after a stable connection"
        return jittered, "exponential backoff"
