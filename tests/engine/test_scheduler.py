"""The request scheduler, synchronously: priorities, pacing, penalties, lockouts, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trio_tradovate.errors import ConfigError
from trio_tradovate.scheduler import (
    DEFAULT_LIMITS,
    Job,
    Priority,
    RateGovernor,
    RequestScheduler,
    Window,
    classify,
)


def job(endpoint: str, body: object = None) -> Job:
    return Job(endpoint, None, body, classify(endpoint))


def drain(scheduler: RequestScheduler, now: float) -> list[str]:
    sent: list[str] = []
    while True:
        chosen, _ = scheduler.next_job(now)
        if chosen is None:
            return sent
        sent.append(chosen.endpoint)


@pytest.mark.parametrize(
    ("endpoint", "priority"),
    [
        ("order/cancelorder", Priority.CANCEL),
        ("order/liquidateposition", Priority.CANCEL),
        ("order/placeorder", Priority.ORDER),
        ("order/modifyorder", Priority.ORDER),
        ("order/placeoco", Priority.ORDER),
        ("account/list", Priority.BULK),
        ("contract/ldeps", Priority.BULK),
        ("md/subscribequote", Priority.BULK),
        ("contract/find", Priority.NORMAL),
        ("auth/me", Priority.NORMAL),
    ],
)
def test_classification(endpoint: str, priority: Priority) -> None:
    assert classify(endpoint) is priority


def test_a_cancel_overtakes_a_thousand_queued_queries() -> None:
    scheduler = RequestScheduler(governor=RateGovernor({}))
    for _ in range(1000):
        scheduler.submit(job("account/list"))
    scheduler.submit(job("contract/find"))
    scheduler.submit(job("order/placeorder"))
    scheduler.submit(job("order/cancelorder"))
    order = drain(scheduler, 0.0)
    assert order[:3] == ["order/cancelorder", "order/placeorder", "contract/find"]
    assert len(order) == 1003


def test_governor_sliding_windows() -> None:
    governor = RateGovernor({"*": (Window(3, 1.0),), "user/syncrequest": (Window(2, 100.0),)})
    for t in (0.0, 0.1, 0.2):
        assert governor.delay("a/b", t) == 0
        governor.record("a/b", t)
    assert governor.delay("a/b", 0.3) == pytest.approx(0.7)
    assert governor.delay("a/b", 1.0) == 0
    governor.record("user/syncrequest", 5.0)
    governor.record("user/syncrequest", 6.0)
    assert governor.delay("user/syncrequest", 7.0) == pytest.approx(98.0)


def test_scheduler_paces_instead_of_bursting() -> None:
    scheduler = RequestScheduler(governor=RateGovernor({"*": (Window(10, 1.0),)}))
    for _ in range(25):
        scheduler.submit(job("contract/find"))
    assert len(drain(scheduler, 0.0)) == 10
    chosen, wait = scheduler.next_job(0.5)
    assert chosen is None
    assert wait == pytest.approx(0.5)
    assert len(drain(scheduler, 1.0)) == 10


def test_penalty_pauses_everything_then_resends_with_ticket_first() -> None:
    scheduler = RequestScheduler(governor=RateGovernor({}))
    first = job("contract/find", {"name": "ESZ6"})
    scheduler.submit(first)
    scheduler.submit(job("account/list"))
    assert scheduler.next_job(0.0)[0] is first
    assert scheduler.on_penalty(first, "T-1", 5.0, now=0.0) == 5.25  # p-time + margin
    scheduler.submit(job("order/cancelorder"))
    paused, wait = scheduler.next_job(5.15)
    assert paused is None
    assert wait == pytest.approx(0.1)
    again, _ = scheduler.next_job(5.25)
    assert again is not None
    assert again.endpoint == "order/cancelorder"  # priority still applies after the pause
    again, _ = scheduler.next_job(5.25)
    assert again is first
    assert first.send_body() == {"name": "ESZ6", "p-ticket": "T-1"}
    assert first.body == {"name": "ESZ6"}  # the original body is untouched
    assert scheduler.on_penalty(first, "T-2", 5.0, now=5.0) == 10.25  # repeat: longer


def test_lockout_lets_only_cancellations_through() -> None:
    scheduler = RequestScheduler(governor=RateGovernor({}), lockout=3600)
    scheduler.submit(job("account/list"))
    scheduler.submit(job("order/placeorder"))
    scheduler.on_lockout("captcha", now=0.0)
    scheduler.submit(job("order/cancelorder"))
    assert drain(scheduler, 10.0) == ["order/cancelorder"]
    held, wait = scheduler.next_job(10.0)
    assert held is None
    assert wait == pytest.approx(3590.0)
    assert drain(scheduler, 3600.0) == ["order/placeorder", "account/list"]


def test_penalty_state_survives_a_restart() -> None:
    wall = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    before = RequestScheduler()
    before.on_lockout("429", now=100.0)
    saved = before.dump_penalty(now=100.0, wall=wall)
    after = RequestScheduler()
    # a new process, 10 minutes later, whose trio clock starts at 0
    after.load_penalty(saved, now=0.0, wall=wall + timedelta(minutes=10))
    assert after.locked_out(0.0)
    assert after.penalty.lockout_until == pytest.approx(3000.0)
    assert after.penalty.lockout_reason == "429"
    expired = RequestScheduler()
    expired.load_penalty(saved, now=0.0, wall=wall + timedelta(hours=2))
    assert not expired.locked_out(0.0)


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"lockout_until": "yesterday"}'])
def test_bad_penalty_state_is_a_config_error(data: bytes) -> None:
    with pytest.raises(ConfigError):
        RequestScheduler().load_penalty(data, now=0.0, wall=datetime.now(UTC))


def test_default_limits_cover_every_request_and_sync() -> None:
    assert "*" in DEFAULT_LIMITS
    assert DEFAULT_LIMITS["user/syncrequest"][0].limit < 300
    with pytest.raises(ConfigError):
        Window(0, 1.0)


def test_reserve_books_the_first_free_moment() -> None:
    governor = RateGovernor({"auth/renewaccesstoken": (Window(2, 100.0),)})
    assert governor.reserve("auth/renewaccesstoken", 0.0) == 0
    assert governor.reserve("auth/renewaccesstoken", 1.0) == 0
    assert governor.reserve("auth/renewaccesstoken", 2.0) == pytest.approx(98.0)
    assert governor.reserve("auth/renewaccesstoken", 3.0) == pytest.approx(98.0)  # t=101
