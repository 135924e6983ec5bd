"""The real TCP server: REST and /v1/websocket on one loopback port (real clock)."""

from __future__ import annotations

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

from trio_tradovate.sim import SimConfig, open_simulator, open_simulator_server
from trio_tradovate.sim.rawclient import apply_snapshot, open_raw_url

pytestmark = pytest.mark.loopback


async def test_rest_token_then_websocket_authorize_and_sync_on_one_port() -> None:
    with trio.fail_after(10):
        async with (
            open_simulator(SimConfig(activity_interval=None)) as sim,
            open_simulator_server(sim) as server,
        ):
            assert server.rest_url == f"http://127.0.0.1:{server.port}/v1"
            assert server.ws_url == f"ws://127.0.0.1:{server.port}/v1/websocket"
            async with httpx.AsyncClient(base_url=server.rest_url) as http:
                response = await http.post(
                    "/auth/accesstokenrequest",
                    json={"name": "demo-user", "password": "demo-password"},
                )
                assert response.status_code == 200
                token = response.json()["accessToken"]
                bad = await http.get("/auth/me", headers={"Authorization": "Bearer nope"})
                assert bad.status_code == 401
            async with open_raw_url(server.ws_url) as client:
                assert (await client.authorize(token))["s"] == 200
                body = orjson.dumps({"users": [sim.user_id]}).decode()
                reply = await client.call("user/syncrequest", 1, "", body)
                assert apply_snapshot(reply["d"]) == sim.truth()
            assert sim.sockets[0].syncrequest_count == 1


async def test_loopback_refuses_and_rejects_other_resources() -> None:
    with trio.fail_after(10):
        async with (
            open_simulator(SimConfig(activity_interval=None)) as sim,
            open_simulator_server(sim) as server,
        ):
            # Own the TCP stream: trio-websocket leaves it open after a rejected handshake.
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            try:
                async with trio.open_nursery() as nursery:
                    await wrap_client_stream(nursery, stream, "127.0.0.1", "/v2/other")
            except* ConnectionRejected as group:
                rejected = group
            finally:
                await stream.aclose()
            assert "404" in repr(rejected.exceptions)
            sim.refuse_connections(trio.current_time() + 60)
            async with httpx.AsyncClient(base_url=server.rest_url) as http:
                with pytest.raises(httpx.TransportError):
                    await http.get("/auth/me")
            sim.refuse_connections(None)
            assert sim.sockets == ()


async def test_control_endpoint_applies_faults() -> None:
    with trio.fail_after(10):
        async with (
            open_simulator(SimConfig(activity_interval=None)) as sim,
            open_simulator_server(sim) as server,
        ):
            control = f"http://127.0.0.1:{server.port}/_sim/fault"
            async with httpx.AsyncClient() as http:
                async with open_raw_url(server.ws_url) as client:
                    assert (await client.authorize(sim.issue_token()))["s"] == 200
                    ok = await http.post(control, json={"kind": "frame", "text": "a[1]"})
                    assert (ok.status_code, ok.json()) == (200, {"ok": True})
                    assert await client.recv() == "a[1]"
                    # (No closing fault here: trio-websocket leaks the client socket after a
                    # server close, docs/protocol.md §15; test_sim_faults covers closes.)
                    spec = {"kind": "malformed", "malformed": "unknown_frame"}
                    assert (await http.post(control, json=spec)).status_code == 200
                    assert await client.recv() == "x[1]"
                bad = await http.post(control, json={"kind": "explode"})
                assert bad.status_code == 400
                assert "unknown fault kind" in bad.json()["error"]
                junk = await http.post(control, content=b"{nope")
                assert junk.status_code == 400
                assert "error" in junk.json()
                assert (await http.get(control)).status_code == 405
                await http.post(control, json={"kind": "penalize_auth", "p_time": 1})
                login = {"name": "demo-user", "password": "demo-password"}
                penalty = await http.post(f"{server.rest_url}/auth/accesstokenrequest", json=login)
                assert "p-ticket" in penalty.json()
            assert sim.injected == {"frame": 1, "malformed:unknown_frame": 1, "penalize_auth": 1}
            assert [r.path for r in sim.rest_log] == ["/v1/auth/accesstokenrequest"]
