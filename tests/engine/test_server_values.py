"""Every server-supplied number and text is validated where it enters (issue 8, point 4).

Waits are clamped to ``scheduler.MAX_SERVER_WAIT`` with a warning, malformed expiration times
mean "unknown expiry", the token parser turns any JSON into a token or a typed error, and the
penalty state file survives any content.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tradovate.auth import (
    ASSUMED_LIFETIME,
    PENALTY_MARGIN,
    AccessToken,
    TokenKeeper,
    renew_access_token,
    request_access_token,
)
from trio_tradovate.config import Credentials
from trio_tradovate.errors import AuthenticationError, ConfigError, Penalized
from trio_tradovate.pipeline import Outbound, Request, RequestPipeline
from trio_tradovate.protocol import Response
from trio_tradovate.scheduler import (
    MAX_SERVER_WAIT,
    Job,
    Priority,
    RequestScheduler,
    server_ticket,
    server_wait,
)

REST = "https://demo.tradovateapi.com/v1"
WALL = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
GOOD_TOKEN = {"accessToken": "tok-secret", "userId": 7, "expirationTime": "2025-01-02T04:24:05Z"}

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


# --- server_wait -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "warns"),
    [
        (7, 7.0, False),
        (2.5, 2.5, False),
        ("12", 12.0, False),
        (" 3.5 ", 3.5, False),
        (0, 0.0, False),
        (MAX_SERVER_WAIT, MAX_SERVER_WAIT, False),
        (-5, 0.0, True),
        ("-1", 0.0, True),
        ("soon", 0.0, True),
        ("", 0.0, True),
        (None, 0.0, True),
        (True, 0.0, True),
        ([3], 0.0, True),
        ({"s": 3}, 0.0, True),
        (math.nan, 0.0, True),
        ("nan", 0.0, True),
        (math.inf, MAX_SERVER_WAIT, True),
        ("1e999", MAX_SERVER_WAIT, True),
        (10**400, MAX_SERVER_WAIT, True),
        (-(10**400), 0.0, True),
        (1e300, MAX_SERVER_WAIT, True),
        ("9" * 5000, 0.0, True),
    ],
)
def test_server_wait_clamps_and_warns(
    value: object, expected: float, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trio_tradovate.scheduler"):
        assert server_wait(value, what="p-time") == expected
    assert bool(caplog.records) is warns
    assert all("p-time" in record.getMessage() for record in caplog.records)


@settings(max_examples=300, deadline=None)
@given(JSON | st.integers() | st.text())
def test_server_wait_is_always_a_bounded_float(value: object) -> None:
    wait = server_wait(value, what="p-time")
    assert isinstance(wait, float)
    assert 0.0 <= wait <= MAX_SERVER_WAIT


@settings(max_examples=200, deadline=None)
@given(st.floats(0, MAX_SERVER_WAIT) | st.integers(0, int(MAX_SERVER_WAIT)))
def test_server_wait_keeps_every_valid_wait(value: float) -> None:
    assert server_wait(value, what="p-time") == float(value)
    assert server_wait(repr(value), what="p-time") == float(value)


def test_server_ticket_keeps_text_and_drops_the_rest() -> None:
    assert server_ticket("T-1") == "T-1"
    assert server_ticket(42) == "42"
    assert server_ticket(True) is None
    assert server_ticket({"t": 1}) is None
    assert server_ticket("x" * 10_000) is None


# --- penalties in the scheduler and pipeline ---------------------------------------------------


def test_repeated_penalties_with_a_huge_p_time_never_overflow() -> None:
    scheduler = RequestScheduler()
    job = Job("order/list", None, None, Priority.NORMAL)
    scheduler.submit(job)
    for _ in range(2000):
        wait = scheduler.on_penalty(job, "T", 1e308, now=0.0)
        assert wait == MAX_SERVER_WAIT + PENALTY_MARGIN
    small = Job("order/list", None, None, Priority.NORMAL)
    scheduler.submit(small)
    for _ in range(2000):
        assert scheduler.on_penalty(small, "T", 1, now=0.0) <= MAX_SERVER_WAIT + PENALTY_MARGIN
    assert scheduler.penalty.paused_until <= MAX_SERVER_WAIT + PENALTY_MARGIN


@pytest.mark.parametrize(
    ("p_time", "pause"),
    [("abc", 0.0), (-3, 0.0), ("4", 4.0), (10**400, MAX_SERVER_WAIT), ([1], 0.0)],
)
async def test_pipeline_penalty_with_a_bad_p_time(
    p_time: object, pause: float, autojump_clock: trio.testing.MockClock
) -> None:
    scheduler = RequestScheduler()
    pipeline = RequestPipeline(scheduler, on_lockout=lambda _: None, on_penalty_state=lambda: None)
    outbound = Outbound()
    request = Request("order/list", None, None, Priority.NORMAL)
    outbound.in_flight[0] = request
    now = trio.current_time()
    data = {"p-ticket": {"not": "text"}, "p-time": p_time}
    assert pipeline.on_response(outbound, Response(0, 200, data))
    assert scheduler.penalty.paused_until == pytest.approx(now + pause + PENALTY_MARGIN)
    assert request.ticket is None  # an unusable ticket is dropped, not sent as repr


# --- the REST token answers --------------------------------------------------------------------


def _run(async_fn: Any, *args: Any) -> Any:
    """Run in trio with a virtual clock that skips every sleep (penalty waits included)."""
    return trio.run(async_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


async def _login_against(bodies: list[bytes]) -> tuple[Any, float]:
    """``request_access_token`` against a server answering ``bodies`` in turn (then a good
    token); returns the outcome and the virtual time it took."""
    answers = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        content = answers.pop(0) if answers else orjson.dumps(GOOD_TOKEN)
        return httpx.Response(200, content=content)

    start = trio.current_time()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        try:
            outcome: Any = await request_access_token(
                client, REST, Credentials("user", "pw-secret")
            )
        except (AuthenticationError, Penalized) as exc:
            outcome = exc
    return outcome, trio.current_time() - start


@pytest.mark.parametrize(
    ("p_time", "waited"),
    [
        ("abc", 0.0),
        (-30, 0.0),
        ("12", 12.0),
        (2**63 - 1, MAX_SERVER_WAIT),
        (2**64, MAX_SERVER_WAIT),  # orjson reads integers beyond 64 bits as floats
        (1e308, MAX_SERVER_WAIT),
        ("1e999", MAX_SERVER_WAIT),
        (None, 0.0),
    ],
)
def test_login_penalty_with_a_bad_p_time_is_clamped(p_time: object, waited: float) -> None:
    body = b'{"p-ticket":"T","p-time":%s}' % (
        str(p_time).encode() if isinstance(p_time, int) else orjson.dumps(p_time)
    )
    outcome, elapsed = _run(_login_against, [body])
    assert isinstance(outcome, AccessToken)
    assert elapsed == pytest.approx(waited + PENALTY_MARGIN)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expirationTime", "2025-01-02T04:24:05"),  # no time zone
        ("expirationTime", "next tuesday"),
        ("expirationTime", 1735787045),
        ("expirationTime", "9999-12-31T23:59:59Z"),  # far beyond any token's lifetime
    ],
)
def test_malformed_expiration_means_unknown_expiry(
    field: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> float:
        body = orjson.dumps({**GOOD_TOKEN, field: value})
        transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
        async with httpx.AsyncClient(transport=transport) as client:
            keeper = TokenKeeper(
                client,
                REST,
                Credentials("user", "pw-secret"),
                None,
                wall_clock=lambda: WALL,
                margin=900,
            )
            await keeper.get()
            return keeper._renew_at - trio.current_time()

    with caplog.at_level(logging.WARNING):
        renew_in = _run(scenario)
    assert renew_in == pytest.approx(ASSUMED_LIFETIME - 900)
    assert any("expir" in record.getMessage() for record in caplog.records)
    assert not any("tok-secret" in record.getMessage() for record in caplog.records)


def test_token_fields_of_the_wrong_type_are_ignored() -> None:
    body = orjson.dumps({**GOOD_TOKEN, "userId": True, "name": 5, "mdAccessToken": [1]})
    token, _ = _run(_login_against, [body])
    assert isinstance(token, AccessToken)
    assert (token.user_id, token.name, token.md_token) == (None, None, None)


def test_errortext_of_any_shape_is_an_authentication_error() -> None:
    deep = b"[" * 1000 + b"]" * 1000
    for text in (b'"wrong password"', deep, b'{"a":1}', b"12"):
        outcome, _ = _run(_login_against, [b'{"errorText":%s}' % text])
        assert isinstance(outcome, AuthenticationError)
        assert "pw-secret" not in str(outcome)


@settings(max_examples=150, deadline=None)
@given(JSON.map(lambda value: orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)))
def test_token_parser_over_arbitrary_json(body: bytes) -> None:
    outcome, _ = _run(_login_against, [body])
    assert isinstance(outcome, AccessToken | AuthenticationError | Penalized)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64) | st.just(b"[" * 5000))
def test_token_parser_over_arbitrary_bytes(body: bytes) -> None:
    outcome, _ = _run(_login_against, [body])
    assert isinstance(outcome, AccessToken | AuthenticationError | Penalized)


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_token_parser_over_arbitrary_penalty_answers(extra: Any) -> None:
    body = {"p-ticket": extra, "p-time": extra}
    outcome, elapsed = _run(_login_against, [orjson.dumps(body)] * 5)
    assert isinstance(outcome, AccessToken | AuthenticationError | Penalized)
    assert elapsed <= 4 * (MAX_SERVER_WAIT + PENALTY_MARGIN)


def test_renewal_penalty_with_a_bad_p_time_is_clamped() -> None:
    async def scenario() -> tuple[AccessToken, float]:
        answers = [b'{"p-ticket":"T","p-time":"forever"}', orjson.dumps(GOOD_TOKEN)]
        transport = httpx.MockTransport(lambda r: httpx.Response(200, content=answers.pop(0)))
        start = trio.current_time()
        async with httpx.AsyncClient(transport=transport) as client:
            token = await renew_access_token(client, REST, AccessToken("old-secret", user_id=7))
        return token, trio.current_time() - start

    token, elapsed = _run(scenario)
    assert token.token == "tok-secret"
    assert elapsed == pytest.approx(PENALTY_MARGIN)


# --- the penalty state file --------------------------------------------------------------------


def _load(data: bytes, *, lockout: float = 3600.0) -> RequestScheduler:
    scheduler = RequestScheduler(lockout=lockout)
    scheduler.load_penalty(data, now=100.0, wall=WALL)
    return scheduler


def _assert_bounded(scheduler: RequestScheduler) -> None:
    assert scheduler.penalty.paused_until <= 100.0 + MAX_SERVER_WAIT
    assert scheduler.penalty.lockout_until <= 100.0 + scheduler.lockout
    assert isinstance(scheduler.penalty.lockout_reason, str)


def test_a_lockout_until_year_9999_is_one_lockout() -> None:
    far = {"paused_until": "9999-12-31T23:59:59+00:00", "lockout_until": "9999-12-31T23:59:59Z"}
    scheduler = _load(orjson.dumps({**far, "lockout_reason": "429"}), lockout=1800.0)
    assert scheduler.penalty.lockout_until == 100.0 + 1800.0
    assert scheduler.penalty.paused_until == 100.0 + MAX_SERVER_WAIT
    assert scheduler.locked_out(100.0 + 1799.0)
    assert not scheduler.locked_out(100.0 + 1801.0)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe not json",
        b"[]",
        b"42",
        b'"text"',
        b'{"lockout_until": 5}',
        b'{"lockout_until": "yesterday"}',
        b'{"lockout_until": "2025-01-02T05:00:00"}',  # no time zone
        b'{"paused_until": ["2025-01-02T05:00:00Z"]}',
        b'{"lockout_until": "2025-01-02T05:00:00Z", "lockout_reason": {"x": 1}}',
        b"[" * 5000,
    ],
)
def test_corrupt_penalty_state_is_a_config_error_that_says_so(data: bytes) -> None:
    with pytest.raises(ConfigError, match=r"corrupt.*delete it"):
        _load(data)


def test_saved_state_in_range_loads_as_before() -> None:
    saved = {"lockout_until": (WALL + timedelta(minutes=10)).isoformat(), "lockout_reason": "429"}
    scheduler = _load(orjson.dumps(saved))
    assert scheduler.penalty.lockout_until == pytest.approx(100.0 + 600.0)
    assert scheduler.penalty.lockout_reason == "429"
    past = {"lockout_until": "0001-01-01T00:00:00+14:00", "paused_until": None}
    assert not _load(orjson.dumps(past)).locked_out(100.0)


def _survives(data: bytes) -> None:
    """Loads and is bounded, or raises the typed error that says the file is corrupt."""
    try:
        scheduler = _load(data)
    except ConfigError as exc:
        message = str(exc)
    else:
        _assert_bounded(scheduler)
        return
    assert "corrupt" in message


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_penalty_state_survives_any_json(value: Any) -> None:
    _survives(orjson.dumps(value))


DATES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "paused_until": DATES.map(datetime.isoformat) | JSON,
            "lockout_until": DATES.map(datetime.isoformat) | JSON,
            "lockout_reason": st.text() | JSON,
        },
    )
)
def test_penalty_state_survives_any_shape_of_the_right_keys(value: dict[str, Any]) -> None:
    _survives(orjson.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_penalty_state_survives_any_bytes(data: bytes) -> None:
    _survives(data)
