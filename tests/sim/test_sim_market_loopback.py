"""The loopback server serves the market-data socket on its own path (real clock)."""

from __future__ import annotations

import orjson
import pytest
import trio

from trio_tradovate.sim import SimConfig, open_simulator, open_simulator_server
from trio_tradovate.sim.rawclient import open_raw_url

pytestmark = pytest.mark.loopback


async def test_loopback_server_serves_md_on_its_own_path() -> None:
    config = SimConfig(activity_interval=None, md_step_interval=0.75)
    with trio.fail_after(10):
        await _md_on_its_own_path(config)


async def _md_on_its_own_path(config: SimConfig) -> None:
    async with open_simulator(config) as sim, open_simulator_server(sim) as server:
        assert server.md_url.endswith("/md/v1/websocket")
        async with open_raw_url(server.md_url) as client:
            await client.authorize(sim.issue_token())
            await client.call("md/subscribeQuote", 1, "", orjson.dumps({"symbol": "ESZ6"}).decode())
            event = await client.event("md")
            assert event["d"]["quotes"][0]["contractId"] == sim.contract_id("ESZ6")
        async with open_raw_url(server.ws_url) as user:
            await user.authorize(sim.issue_token())
        assert [a.role for a in sim.sockets] == ["md", "user"]
