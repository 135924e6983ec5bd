"""Token lifecycle: background renewal, single-flight, renew before re-login, penalties."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
import trio

from trio_tradovate import CaptchaRequired, Credentials, EngineStopped, State, open_engine
from trio_tradovate.auth import AccessToken, TokenKeeper
from trio_tradovate.sim import SimConfig, Simulator, open_simulator

from ..conftest import config_for, sim_wall_clock


class CountingTransport(httpx.AsyncBaseTransport):
    """Forwards to the simulator, counts requests by path, and can script penalties."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.paths: Counter[str] = Counter()
        self.penalties: list[dict[str, object]] = []
        self.bodies: list[dict[str, object]] = []
        self.times: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rsplit("/v1", 1)[-1]
        self.paths[path] += 1
        if path == "/auth/accesstokenrequest":
            await request.aread()
            self.bodies.append(orjson.loads(request.content))
            self.times.append(trio.current_time())
            if self.penalties:
                return httpx.Response(200, json=self.penalties.pop(0))
        return await self.sim.handle_http(request)


def keeper_for(sim: Simulator, http: httpx.AsyncClient, **extra: Any) -> TokenKeeper:
    """A token keeper that logs in to ``sim`` as its demo user, with no token yet."""
    return TokenKeeper(
        http,
        "https://demo.tradovateapi.com/v1",
        Credentials(sim.config.username, sim.config.password),
        None,
        wall_clock=sim_wall_clock(sim),
        margin=900,
        **extra,
    )


async def test_background_renewal_keeps_one_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(SimConfig(seed=3, activity_interval=60)) as sim:
        transport = CountingTransport(sim)
        async with open_engine(config_for(sim, http_transport=transport)) as engine:
            await engine.wait_for(State.LIVE)
            await trio.sleep(3 * 3600)  # tokens live 80 min; renewal at 65 min
            assert engine.state is State.LIVE
            assert engine.generation == 1
    assert transport.paths["/auth/accesstokenrequest"] == 1
    assert transport.paths["/auth/renewaccesstoken"] >= 2
    assert engine.token_status.renewals == transport.paths["/auth/renewaccesstoken"]
    assert engine.token_status.logins == 1


async def test_concurrent_needs_share_one_refresh(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    transport = CountingTransport(sim)
    async with httpx.AsyncClient(transport=transport) as http:
        keeper = keeper_for(sim, http)
        results: list[AccessToken] = []

        async def need() -> None:
            results.append(await keeper.get())

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(need)
        assert len({id(token) for token in results}) == 1
        assert transport.paths["/auth/accesstokenrequest"] == 1
        keeper.reject(results[0])
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(need)
        assert len({id(token) for token in results[10:]}) == 1
        # a refused token is renewed first (same session), not replaced by a new login
        assert transport.paths["/auth/renewaccesstoken"] == 1
        assert transport.paths["/auth/accesstokenrequest"] == 1


async def test_expired_token_tries_renew_then_logs_in(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    transport = CountingTransport(sim)
    async with open_engine(config_for(sim, http_transport=transport)) as engine:
        await engine.wait_for(State.LIVE)
        sim.expire_tokens()
        await sim.drop_connections()
        await engine.wait_for(State.BACKOFF)
        await engine.wait_for(State.LIVE)
    assert transport.paths["/auth/renewaccesstoken"] >= 1
    assert transport.paths["/auth/accesstokenrequest"] == 2


async def test_time_penalty_on_login_is_waited_and_ticket_resent(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    transport = CountingTransport(sim)
    transport.penalties.append({"p-ticket": "TICKET-1", "p-time": 7})
    async with open_engine(config_for(sim, http_transport=transport)) as engine:
        await engine.wait_for(State.LIVE)
    assert transport.bodies[1]["p-ticket"] == "TICKET-1"
    assert "p-ticket" not in transport.bodies[0]
    assert {k: v for k, v in transport.bodies[1].items() if k != "p-ticket"} == transport.bodies[0]
    assert transport.times[1] - transport.times[0] == pytest.approx(7.25)  # p-time + margin


async def test_captcha_stops_with_a_clear_error(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    transport = CountingTransport(sim)
    transport.penalties.append({"p-ticket": "T", "p-time": 5, "p-captcha": True})
    async with open_engine(config_for(sim, http_transport=transport)) as engine:
        with pytest.raises(EngineStopped) as info:
            await engine.wait_for(State.LIVE)
        await trio.sleep(3600)
    assert isinstance(info.value.error, CaptchaRequired)
    assert "captcha" in str(info.value.error)
    assert transport.paths["/auth/accesstokenrequest"] == 1
    assert sim.sockets == ()


class BogusTokens(CountingTransport):
    """Logins succeed, but every token they hand out is one the websocket will refuse."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/auth/accesstokenrequest"):
            await response.aread()
            body = {**orjson.loads(response.content), "accessToken": f"bogus-{len(self.bodies)}"}
            return httpx.Response(200, json=body)
        return response


async def test_fresh_tokens_refused_twice_in_a_row_stop_the_engine(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    transport = BogusTokens(sim)
    async with open_engine(config_for(sim, http_transport=transport)) as engine:
        with pytest.raises(EngineStopped) as info:
            await engine.wait_for(State.LIVE)
        await trio.sleep(3600)
    assert info.value.reason.startswith("auth_rejected")
    assert transport.paths["/auth/accesstokenrequest"] == 2  # no login storm
    assert [status for a in sim.sockets for _, status in a.auth_attempts] == [401, 401]


async def test_a_login_penalised_again_and_again_is_retried_later_not_fatal(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    transport = CountingTransport(sim)
    transport.penalties.extend({"p-ticket": f"T{i}", "p-time": 2} for i in range(4))
    async with open_engine(config_for(sim, http_transport=transport)) as engine:
        failed = await engine.wait_for(State.BACKOFF)
        assert failed.reason.startswith("login_penalized")
        await engine.wait_for(State.LIVE)
    assert transport.paths["/auth/accesstokenrequest"] == 5
    # three waits were honoured; the fourth penalty was not waited out for nothing
    assert failed.time == pytest.approx(3 * 2.25)


async def test_a_skewed_clock_never_causes_a_renewal_storm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from datetime import timedelta

    async with open_simulator(SimConfig(seed=3, activity_interval=60)) as sim:
        transport = CountingTransport(sim)
        truth_clock = sim_wall_clock(sim)

        def a_year_ahead() -> datetime:
            return truth_clock() + timedelta(days=365)

        config = config_for(sim, http_transport=transport, wall_clock=a_year_ahead)
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            await trio.sleep(3600)
            assert engine.state is State.LIVE
    assert transport.paths["/auth/renewaccesstoken"] <= 12  # at most one per 5 minutes
    assert transport.paths["/auth/accesstokenrequest"] == 1


async def test_a_caller_token_is_renewed_before_its_assumed_lifetime_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(SimConfig(seed=3, activity_interval=60)) as sim:
        transport = CountingTransport(sim)
        config = config_for(
            sim,
            http_transport=transport,
            credentials=None,
            access_token=sim.issue_token(),
            user_id=sim.user_id,
        )
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            await trio.sleep(66 * 60)  # 80 min assumed lifetime, renewed 15 min before
            assert transport.paths["/auth/renewaccesstoken"] == 1
            await sim.drop_connections()  # a reconnect with the renewed token works
            await engine.wait_for(State.BACKOFF)
            await engine.wait_for(State.LIVE)


async def test_renewals_are_paced_by_their_budget(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    from trio_tradovate.scheduler import RateGovernor, Window

    transport = CountingTransport(sim)
    governor = RateGovernor({"auth/renewaccesstoken": (Window(3, 3600.0),)})
    times: list[float] = []

    async def pace(endpoint: str) -> None:
        await trio.sleep(governor.reserve(endpoint, trio.current_time()))
        times.append(trio.current_time())

    async with httpx.AsyncClient(transport=transport) as http:
        keeper = keeper_for(sim, http, pace=pace)
        for _ in range(5):  # five refusals in a row: each wants a renewal
            keeper.reject(await keeper.get())
        await keeper.get()
    assert len(times) == 5
    assert times[3] - times[0] >= 3600  # the fourth renewal waited for the window
