"""The trio side of application requests: callers wait here, one sender per connection drains
the :class:`~trio_tradovate.scheduler.RequestScheduler`, answers come back from the reader.

A request's single ``await`` spans everything that can happen to it: waiting for the engine to
be live, pacing, a ``p-ticket`` penalty and its resend with a new id, and a reconnect (a
read-only request still unanswered when its socket dies goes out again on the next one). What
never happens is a blind resend of a money-moving request: when its socket dies before the
answer, the caller gets :class:`OutcomeUnknown` and reconciles from the re-synced store.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import trio

from .errors import (
    CaptchaRequired,
    ConnectionLost,
    OutcomeUnknown,
    Penalized,
    RateLimited,
    RequestError,
    RequestTimeout,
    TradovateError,
)
from .protocol import Response, encode_request
from .scheduler import Job, RequestScheduler, server_ticket

logger = logging.getLogger("trio_tradovate.requests")


@dataclass(eq=False)
class Request(Job):
    """A :class:`Job` plus what its caller waits on."""

    done: trio.Event = field(default_factory=trio.Event)
    response: Response | None = None
    error: TradovateError | None = None
    #: The caller stopped waiting: never send it, drop a late reply quietly.
    abandoned: bool = False

    def finish(
        self, *, response: Response | None = None, error: TradovateError | None = None
    ) -> None:
        if self.done.is_set():
            return
        self.response = response
        self.error = error
        self.done.set()


class Outbound:
    """One connection's view of the pipeline: request ids and the requests in flight on it.

    ``ids`` is the socket's id sequence, shared with the session's own requests (authorize,
    syncrequest), so no two requests of one socket ever carry the same id.
    """

    def __init__(self, ids: Iterator[int] | None = None) -> None:
        self.ids: Iterator[int] = ids if ids is not None else count(0)
        self.in_flight: dict[int, Request] = {}


class RequestPipeline:
    """Queue, pacing and penalties for every application request of one engine."""

    def __init__(
        self,
        scheduler: RequestScheduler,
        *,
        on_lockout: Callable[[str], None],
        on_penalty_state: Callable[[], None],
    ) -> None:
        self.scheduler = scheduler
        self._wake = trio.Event()
        self._on_lockout = on_lockout
        self._on_penalty_state = on_penalty_state

    def _kick(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def call(self, request: Request, limit: float) -> Any:
        """Queue ``request``, wait for its answer (at most ``limit`` s), return its ``d``."""
        try:
            with trio.fail_after(limit):
                self.scheduler.submit(request)
                self._kick()
                await request.done.wait()
        except trio.TooSlowError:
            timeout = RequestTimeout(f"{request.endpoint}: no answer within {limit:g} s")
            if request.sent and request.money_moving:
                raise OutcomeUnknown(request.endpoint, request.body) from timeout
            raise timeout from None
        finally:
            if not request.done.is_set():
                request.abandoned = True
                self.scheduler.discard(request)
        if request.error is not None:
            raise request.error
        response = request.response
        assert response is not None
        if response.status >= 400:
            text = response.data if isinstance(response.data, str) else str(response.data)
            raise RequestError(request.endpoint, response.status, text)
        return response.data

    async def run_sender(
        self,
        outbound: Outbound,
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        """Drain the scheduler onto one connection. The supervisor starts this only once the
        socket is live: nothing but ``authorize`` may precede authorization."""
        while True:
            request, wait = self.scheduler.next_job(trio.current_time())
            if request is None:
                with trio.move_on_after(wait):
                    await self._wake.wait()
                continue
            assert isinstance(request, Request)
            if request.abandoned or request.done.is_set():
                continue
            request_id = next(outbound.ids)
            outbound.in_flight[request_id] = request
            request.sent = request.ever_sent = True  # from here the server may act on it
            await send(
                encode_request(request.endpoint, request_id, request.query, request.send_body())
            )

    def on_response(self, outbound: Outbound, response: Response) -> bool:
        """Route a response; ``False`` when no request of ours is waiting for it."""
        request = outbound.in_flight.pop(response.request_id, None)
        if request is None:
            return False
        if request.abandoned:
            logger.debug("late reply to abandoned %s dropped", request.endpoint)
            return True
        data = response.data
        now = trio.current_time()
        if response.status == 200 and isinstance(data, dict) and "p-ticket" in data:
            if data.get("p-captcha"):
                self._lock_out(request, "captcha", now)
                return True
            wait = self.scheduler.on_penalty(
                request, server_ticket(data["p-ticket"]), data.get("p-time"), now
            )
            logger.warning(
                "%s penalised (p-ticket): every request waits %.1f s, then it is resent "
                "with its ticket",
                request.endpoint,
                wait,
            )
            self._on_penalty_state()
            self._kick()
            return True
        if response.status == 429:
            self._lock_out(request, "429", now)
            return True
        request.finish(response=response)
        return True

    def _lock_out(self, request: Request, reason: str, now: float) -> None:
        """A captcha or a 429: fail ``request`` and start the lockout (P-RL: about an hour)."""
        self.scheduler.on_lockout(reason, now)
        stop = f"non-essential requests stop for {self.scheduler.lockout:g} s"
        error: Penalized
        if reason == "captcha":
            error = CaptchaRequired(
                f"{request.endpoint}: Tradovate asks for a captcha; no program can answer it; "
                f"{stop}"
            )
        else:
            error = RateLimited(f"{request.endpoint}: rate limited (429); {stop}")
        request.finish(error=error)
        self._penalty_changed(reason)

    def _penalty_changed(self, reason: str) -> None:
        self._on_penalty_state()
        self._on_lockout(reason)
        self._kick()

    def connection_lost(self, outbound: Outbound, cause: TradovateError | None) -> None:
        """The socket died: re-queue read-only requests in flight, fail money-moving ones."""
        for request in outbound.in_flight.values():
            if request.abandoned or request.done.is_set():
                continue
            if request.money_moving:
                error = OutcomeUnknown(request.endpoint, request.body)
                error.__cause__ = cause
                request.finish(error=error)
            else:
                logger.info(
                    "%s unanswered when the socket died: resent when live", request.endpoint
                )
                self.scheduler.requeue(request)
        outbound.in_flight.clear()
        self._kick()

    def stop(self, error: TradovateError) -> None:
        """The engine stopped: every queued request fails with ``error``."""
        for leftover in self.scheduler.drain():
            assert isinstance(leftover, Request)
            leftover.finish(error=error)

    @staticmethod
    def not_live_error(endpoint: str) -> ConnectionLost:
        """For callers that asked to fail fast instead of waiting for the engine to be live."""
        return ConnectionLost(f"{endpoint}: the engine is not live and wait=False was given")
