"""Websocket basics: open frame, authorize, heartbeats and the server's timeouts
(docs/protocol.md §2-§5, §12)."""

from __future__ import annotations

from typing import cast

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, wrap_client_stream

from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.sim.rawclient import open_raw

QUIET = SimConfig(activity_interval=None)


async def test_authorize_with_valid_token_answers_200_without_d() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        reply = await client.authorize(sim.issue_token(), rid=0)
        assert reply == {"s": 200, "i": 0}
        audit = sim.sockets[0]
        assert audit.authorized_at is not None
        assert [status for _, status in audit.auth_attempts] == [200]
        assert audit.requests[0].endpoint == "authorize"
        assert audit.requests[0].body == "<redacted>"


async def test_authorize_tolerates_json_quoted_token_and_undefined_query() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        token = orjson.dumps(sim.issue_token()).decode()
        reply = await client.call("authorize", 3, "undefined", token)
        assert reply["s"] == 200


async def test_authorize_with_bad_token_answers_401_invalid_access_token() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        reply = await client.authorize("not-a-token", rid=0)
        assert reply == {"i": 0, "s": 401, "d": "Invalid access token"}
        assert sim.sockets[0].authorized_at is None
        assert sim.sockets[0].auth_attempts[0][1] == 401


async def test_request_before_authorize_is_401_and_a_violation() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        reply = await client.call("account/list", 1)
        assert reply == {"i": 1, "s": 401, "d": "Invalid access token"}
        assert sim.sockets[0].violations == ["request before authorize"]


async def test_endpoints_are_case_insensitive_and_unknown_is_404_string() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        listed = await client.call("Account/List", 1)
        assert listed["s"] == 200
        assert len(listed["d"]) == 2
        missing = await client.call("quote/subscribe", 2)
        assert missing == {"i": 2, "s": 404, "d": "Not found: quote/subscribe"}
        assert sim.sockets[0].requests[1].endpoint == "account/list"


async def test_duplicate_request_id_is_a_violation() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token(), rid=1)
        await client.call("account/list", 1)
        assert sim.sockets[0].violations == ["duplicate request id"]


async def test_idle_heartbeats_every_interval(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        start = sim.sockets[0].opened_at
        await client.authorize(sim.issue_token())
        times = []
        for _ in range(3):
            await client.send("[]")
            assert await client.recv() == "h"
            times.append(trio.current_time() - start)
        assert times == [2.5, 5.0, 7.5]
        assert sim.sockets[0].frames_sent["h"] == 3
        assert len(sim.sockets[0].client_heartbeats) == 3


async def test_no_idle_heartbeat_while_streaming(autojump_clock: trio.testing.MockClock) -> None:
    config = SimConfig(activity_interval=1.0, client_heartbeat_timeout=100.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        await client.call("user/syncrequest", 1, "", f'{{"users":[{sim.user_id}]}}')
        with trio.move_on_after(10.2):
            while True:
                await client.recv()
        assert sim.sockets[0].frames_sent["h"] == 0
        assert sim.sockets[0].frames_sent["a"] >= 11


async def test_auth_timeout_closes_with_go_away(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        frames = await client.until_closed()
        assert frames[-1] == 'c[3000,"Go away!"]'
        audit = sim.sockets[0]
        assert audit.close_reason == "auth timeout"
        assert audit.closed_at is not None
        assert audit.closed_at - audit.opened_at == pytest.approx(10.0)
        assert client.ws.closed is not None
        assert client.ws.closed.code == 1000


async def test_heartbeat_timeout_closes(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        frames = await client.until_closed()
        assert frames[-1] == 'c[3000,"Go away!"]'
        audit = sim.sockets[0]
        assert audit.close_reason == "heartbeat timeout"
        assert audit.closed_at is not None
        assert audit.closed_at - audit.opened_at == pytest.approx(15.0)


async def test_client_heartbeats_keep_socket_open(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())

        async def beat() -> None:
            while True:
                await trio.sleep(2.5)
                await client.send("[]")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat)
            with trio.move_on_after(60):
                await client.until_closed()
                pytest.fail("server closed a heartbeating socket")
            nursery.cancel_scope.cancel()
        assert sim.sockets[0].close_reason is None
        assert len(sim.sockets[0].client_heartbeats) >= 23


async def test_client_close_is_recorded(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim:
        async with open_raw(sim) as client:
            await client.authorize(sim.issue_token())
        await trio.testing.wait_all_tasks_blocked()
        assert sim.sockets[0].closed_at is not None
        assert sim.sockets[0].close_reason == "client closed"


async def test_wrong_resource_is_rejected_404() -> None:
    async with open_simulator(QUIET) as sim:
        stream = await sim.connector()("h", 1, tls=False)
        codes: list[int] = []
        try:
            async with trio.open_nursery() as nursery:
                await wrap_client_stream(nursery, cast(trio.SocketStream, stream), "h", "/v1/other")
        except* ConnectionRejected as group:
            codes = [exc.status_code for exc in _leaves(group)]
        await stream.aclose()
        assert codes
        assert set(codes) == {404}
        assert sim.sockets == ()


def _leaves(group: BaseExceptionGroup[ConnectionRejected]) -> list[ConnectionRejected]:
    out: list[ConnectionRejected] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out += _leaves(exc)
        else:
            out.append(exc)
    return out


async def test_closed_socket_raises_connection_closed_for_client() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        await sim.close_connections()
        frames = await client.until_closed()
        assert frames == ['c[3000,"Go away!"]']
        with pytest.raises(ConnectionClosed):
            await client.recv()
