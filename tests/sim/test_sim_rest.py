"""REST auth over the in-process transport: login, renew, me, expiry and session eviction
(docs/protocol.md §9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, Simulator, open_simulator
from trio_tradovate.sim.rawclient import open_raw

QUIET = SimConfig(activity_interval=None)
LOGIN = {
    "name": "demo-user",
    "password": "demo-password",
    "appId": "app",
    "appVersion": "1.0",
    "cid": 8,
    "sec": "s3cret",
    "deviceId": "device-1",
}


@asynccontextmanager
async def rest(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=sim.rest_transport(), base_url="https://demo.tradovateapi.com/v1"
    ) as client:
        yield client


async def login(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/auth/accesstokenrequest", json={**LOGIN, **overrides})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_accesstokenrequest_ok(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        await trio.sleep(60)
        body = await login(client)
        assert set(body) >= {
            "accessToken",
            "mdAccessToken",
            "expirationTime",
            "userStatus",
            "userId",
            "name",
            "hasLive",
        }
        assert body["userStatus"] == "Active"
        assert body["userId"] == sim.user_id
        assert body["hasLive"] is False
        # 2026-01-05T14:30:00Z + 60 s virtual + 80 min lifetime (§13.1)
        assert body["expirationTime"] == "2026-01-05T15:51:00.000Z"
        expires = datetime.fromisoformat(body["expirationTime"].replace("Z", "+00:00"))
        assert expires.utcoffset() == timedelta(0)


async def test_bad_credentials_give_error_text_with_200() -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        body = await login(client, password="DEMO-PASSWORD")
        assert body == {
            "errorText": "Incorrect username or password. Please try again, "
            "noting that passwords are case-sensitive."
        }


async def test_app_id_and_sec_are_checked_when_configured() -> None:
    config = SimConfig(activity_interval=None, app_id="app", sec="s3cret")
    async with open_simulator(config) as sim, rest(sim) as client:
        assert "accessToken" in await login(client)
        assert "errorText" in await login(client, sec="wrong")
        assert "errorText" in await login(client, appId="other")
    assert "s3cret" not in repr(config)
    assert "demo-password" not in repr(config)


async def test_token_from_rest_authorizes_websocket_and_md_token_too() -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        body = await login(client)
        async with open_raw(sim) as ws:
            assert (await ws.authorize(body["accessToken"]))["s"] == 200
        async with open_raw(sim) as ws:
            assert (await ws.authorize(body["mdAccessToken"]))["s"] == 200


async def test_renew_and_me(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        body = await login(client)
        await trio.sleep(600)
        renewed = await client.get(
            "/auth/renewaccesstoken", headers={"Authorization": f"Bearer {body['accessToken']}"}
        )
        assert renewed.status_code == 200
        new = renewed.json()
        assert new["accessToken"] != body["accessToken"]
        assert new["expirationTime"] > body["expirationTime"]
        me = await client.get("/auth/me", headers={"Authorization": f"Bearer {new['accessToken']}"})
        assert me.status_code == 200
        assert me.json()["userId"] == sim.user_id
        # Renewal must not open a session: two more logins evict only the first session.
        await login(client)
        await login(client)
        stale = await client.get(
            "/auth/me", headers={"Authorization": f"Bearer {new['accessToken']}"}
        )
        assert stale.status_code == 401


async def test_tokens_expire_by_time(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(SimConfig(activity_interval=None, token_lifetime=100)) as sim:
        token = sim.issue_token()
        await trio.sleep(100)
        async with open_raw(sim) as ws:
            assert (await ws.authorize(token))["s"] == 401


async def test_expire_tokens_gives_401_on_authorize_and_renew() -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        body = await login(client)
        async with open_raw(sim) as live:
            await live.authorize(body["accessToken"])
            sim.expire_tokens()
            async with open_raw(sim) as ws:
                reply = await ws.authorize(body["accessToken"])
                assert reply == {"i": 0, "s": 401, "d": "Invalid access token"}
            renew = await client.get(
                "/auth/renewaccesstoken", headers={"Authorization": f"Bearer {body['accessToken']}"}
            )
            assert renew.status_code == 401
            # §13.2 default: an already authorized socket stays usable after expiry.
            assert (await live.call("account/list", 5))["s"] == 200
        assert "accessToken" in await login(client)


async def test_third_session_evicts_oldest_and_closes_its_sockets() -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        first = await login(client)
        second = await login(client)
        async with open_raw(sim) as ws:
            await ws.authorize(first["accessToken"])
            await login(client)
            frames = await ws.until_closed()
            assert frames[-1] == 'c[3000,"Go away!"]'
        assert sim.sockets[0].close_reason == "evicted"
        async with open_raw(sim) as ws:
            assert (await ws.authorize(first["accessToken"]))["s"] == 401
        async with open_raw(sim) as ws:
            assert (await ws.authorize(second["accessToken"]))["s"] == 200


async def test_rest_endpoints_need_bearer_and_share_websocket_dispatch() -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as client:
        assert (await client.get("/account/list")).status_code == 401
        token = sim.issue_token()
        headers = {"Authorization": f"Bearer {token}"}
        listed = await client.get("/account/list", headers=headers)
        assert listed.status_code == 200
        assert len(listed.json()) == 2
        found = await client.get("/contract/find", params={"name": "ESZ6"}, headers=headers)
        assert found.json()["name"] == "ESZ6"
        missing = await client.get("/nothing/here", headers=headers)
        assert missing.status_code == 404
