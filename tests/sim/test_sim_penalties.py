"""docs/protocol.md §8 throttling on the websocket: scripted p-tickets, scripted 429s and rolling
limits."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import trio
import trio.testing

from trio_tradovate.sim import DEFAULT_REQUEST_LIMITS, SimConfig, Simulator, open_simulator
from trio_tradovate.sim.rawclient import RawClient, open_raw

QUIET = SimConfig(activity_interval=None, client_heartbeat_timeout=10_000.0)


def with_ticket(ticket: str, body: dict[str, Any] | None = None) -> str:
    """§8: the original body plus ``"p-ticket"``."""
    return orjson.dumps({**(body or {}), "p-ticket": ticket}).decode()


async def authorized(client: RawClient, sim: Simulator) -> None:
    assert (await client.authorize(sim.issue_token()))["s"] == 200


async def test_ticket_accepted_after_p_time(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.penalize_requests(p_time=5.0)
        start = trio.current_time()
        penalty = await client.call("account/list", 1)
        assert penalty == {
            "i": 1,
            "s": 200,
            "d": {"p-ticket": penalty["d"]["p-ticket"], "p-time": 5.0},
        }
        await trio.sleep(5)
        retry = await client.call("account/list", 2, "", with_ticket(penalty["d"]["p-ticket"]))
        assert retry["s"] == 200
        assert [a["id"] for a in retry["d"]] == sorted(
            k[1] for k in sim.truth() if k[0] == "account"
        )
        audit = sim.sockets[0]
        [issued] = audit.penalties
        assert (issued.time, issued.endpoint, issued.id, issued.reason) == (
            start,
            "account/list",
            1,
            "script",
        )
        assert issued.ticket == penalty["d"]["p-ticket"]
        [record] = audit.retries
        assert (record.id, record.ticket, record.elapsed, record.accepted) == (
            2,
            issued.ticket,
            5.0,
            True,
        )
        assert sim.injected["penalize_requests"] == 1


async def test_penalized_order_is_not_executed_until_the_ticketed_resend(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        account = min(k[1] for k in sim.truth() if k[0] == "account")
        order = {
            "accountId": account,
            "action": "Buy",
            "symbol": "ESZ6",
            "orderQty": 2,
            "orderType": "Limit",
            "price": 100.0,
            "isAutomated": True,
        }
        before = sim.truth()
        sim.penalize_requests(endpoint="order/placeOrder", p_time=1.5)
        penalty = await client.call("order/placeorder", 1, "", orjson.dumps(order).decode())
        assert "p-ticket" in penalty["d"]
        assert sim.truth() == before
        await trio.sleep(1.5)
        placed = await client.call(
            "order/placeorder", 2, "", with_ticket(penalty["d"]["p-ticket"], order)
        )
        new = set(sim.truth()) - set(before)
        assert {k for k in new if k[0] == "order"} == {("order", placed["d"]["orderId"])}
        assert {k[0] for k in new} == {"order", "orderVersion", "command"}


async def test_too_early_resend_is_penalized_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.penalize_requests(p_time=5.0)
        first = (await client.call("auth/me", 1))["d"]["p-ticket"]
        await trio.sleep(4.9)
        early = await client.call("auth/me", 2, "", with_ticket(first))
        second = early["d"]["p-ticket"]
        assert second != first
        assert early["d"]["p-time"] == 5.0
        await trio.sleep(5)
        assert (await client.call("auth/me", 3, "", with_ticket(second)))["d"]["userId"] == (
            sim.user_id
        )
        retries = sim.sockets[0].retries
        assert [(r.accepted, r.elapsed) for r in retries] == [(False, 4.9), (True, 5.0)]
        assert [p.reason for p in sim.sockets[0].penalties] == ["script", "retry"]


async def test_wrong_ticket_is_penalized_again(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.penalize_requests(endpoint="auth/me", p_time=2.0)
        real = (await client.call("auth/me", 1))["d"]["p-ticket"]
        await trio.sleep(3)
        wrong = await client.call("auth/me", 2, "", with_ticket("not-a-ticket"))
        assert "p-ticket" in wrong["d"]
        # A ticket earned on one endpoint is no good on another.
        elsewhere = await client.call("account/list", 3, "", with_ticket(real))
        assert "p-ticket" in elsewhere["d"]
        [unknown, misplaced] = sim.sockets[0].retries
        assert (unknown.elapsed, unknown.accepted) == (None, False)
        assert (misplaced.elapsed, misplaced.accepted) == (3.0, False)


async def test_captcha_penalty_is_never_lifted(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.penalize_requests(p_time=1.0, captcha=True)
        penalty = (await client.call("account/list", 1))["d"]
        assert penalty["p-captcha"] is True
        await trio.sleep(60)
        retry = await client.call("account/list", 2, "", with_ticket(penalty["p-ticket"]))
        assert retry["d"]["p-captcha"] is True
        assert sim.sockets[0].penalties[-1].captcha
        assert (await client.call("account/list", 3))["d"][0]["name"].startswith("DEMO")


async def test_endpoint_and_nth_select_the_request() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.penalize_requests(endpoint="Account/List", nth=2, times=2)
        results = []
        for rid, endpoint in enumerate(
            ["account/list", "auth/me", "ACCOUNT/LIST", "account/list", "account/list"], 1
        ):
            reply = await client.call(endpoint, rid)
            results.append(isinstance(reply["d"], dict) and "p-ticket" in reply["d"])
        assert results == [False, False, True, True, False]
        assert [p.id for p in sim.sockets[0].penalties] == [3, 4]


async def test_penalize_requests_leaves_rest_and_authorize_alone() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        sim.penalize_requests()
        async with httpx.AsyncClient(
            transport=sim.rest_transport(), base_url="https://demo.tradovateapi.com/v1"
        ) as http:
            me = await http.get(
                "/auth/me", headers={"Authorization": f"Bearer {sim.issue_token()}"}
            )
            assert me.json()["userId"] == sim.user_id
        await authorized(client, sim)
        assert "p-ticket" in (await client.call("auth/me", 1))["d"]


async def test_rate_limit_429_on_websocket_and_rest() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.rate_limit_429(endpoint="account/list")
        assert await client.call("auth/me", 1) != {"s": 429, "i": 1}
        assert await client.call("account/list", 2) == {"s": 429, "i": 2}
        assert (await client.call("account/list", 3))["s"] == 200
        assert sim.sockets[0].refused_429 == [(sim.sockets[0].requests[-2].time, "account/list", 2)]
        sim.rate_limit_429(times=2)
        async with httpx.AsyncClient(
            transport=sim.rest_transport(), base_url="https://demo.tradovateapi.com/v1"
        ) as http:
            login = {"name": "demo-user", "password": "demo-password"}
            refused = await http.post("/auth/accesstokenrequest", json=login)
            assert refused.status_code == 429
            assert refused.content == b""
        assert await client.call("auth/me", 4) == {"s": 429, "i": 4}
        assert (await client.call("auth/me", 5))["s"] == 200
        assert [r.status for r in sim.rest_log] == [429]
        assert sim.injected["rate_limit_429"] == 2


async def test_exceeding_a_rolling_limit_earns_a_ticket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SimConfig(
        activity_interval=None,
        client_heartbeat_timeout=10_000.0,
        request_limits={"Account/List": (3, 10.0), "*": (5, 10.0)},
        limit_p_time=2.0,
    )
    async with open_simulator(config) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        for rid in (1, 2, 3):
            assert (await client.call("account/list", rid))["s"] == 200
        limited = await client.call("account/list", 4)
        assert limited["d"]["p-time"] == 2.0
        assert sim.sockets[0].penalties[0].reason == "limit"
        # The ticket lets the resend through although the window is still full.
        await trio.sleep(2)
        retry = await client.call("account/list", 5, "", with_ticket(limited["d"]["p-ticket"]))
        assert isinstance(retry["d"], list)
        # "*" counts every endpoint: 4 executed so far, so one more, then a ticket.
        assert (await client.call("auth/me", 6))["s"] == 200
        assert "p-ticket" in (await client.call("auth/me", 7))["d"]
        await trio.sleep(10)  # the rolling window has passed
        assert isinstance((await client.call("account/list", 8))["d"], list)


async def test_default_limits_let_500_requests_at_once_through() -> None:
    assert dict(DEFAULT_REQUEST_LIMITS) == {"*": (5000, 3600.0), "user/syncrequest": (300, 3600.0)}
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        for rid in range(1, 501):
            await client.request("account/list", rid)
        replies = [await client.response(rid) for rid in range(1, 501)]
        assert all(isinstance(r["d"], list) for r in replies)
        assert sim.sockets[0].penalties == []


async def test_penalized_syncrequest_runs_only_on_the_ticketed_resend(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await authorized(client, sim)
        sim.penalize_requests(endpoint="user/syncRequest", p_time=3.0)
        body = {"users": [sim.user_id]}
        penalty = await client.call("user/syncrequest", 1, "", orjson.dumps(body).decode())
        assert sim.sockets[0].syncrequest_count == 0
        await trio.sleep(3)
        reply = await client.call(
            "user/syncrequest", 2, "", with_ticket(penalty["d"]["p-ticket"], body)
        )
        assert reply["d"]["users"][0]["id"] == sim.user_id
        assert sim.sockets[0].syncrequest_count == 1
        assert sim.sockets[0].violations == []


async def test_rest_get_presents_its_ticket_as_a_query_parameter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SimConfig(activity_interval=None, request_limits={"auth/me": (1, 60.0)})
    async with (
        open_simulator(config) as sim,
        httpx.AsyncClient(
            transport=sim.rest_transport(), base_url="https://demo.tradovateapi.com/v1"
        ) as http,
    ):
        headers = {"Authorization": f"Bearer {sim.issue_token()}"}
        assert (await http.get("/auth/me", headers=headers)).json()["userId"] == sim.user_id
        penalty = (await http.get("/auth/me", headers=headers)).json()
        await trio.sleep(3)
        ok = await http.get("/auth/me", headers=headers, params={"p-ticket": penalty["p-ticket"]})
        assert ok.json()["userId"] == sim.user_id
        assert [(r.penalty is not None, r.accepted) for r in sim.rest_log] == [
            (False, None),
            (True, None),
            (False, True),
        ]
