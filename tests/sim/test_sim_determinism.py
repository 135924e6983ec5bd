"""Same seed + same client actions => identical world and identical frames."""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing

from trio_tradovate.sim import SimConfig, open_simulator
from trio_tradovate.sim.rawclient import open_raw


async def _script(seed: int) -> tuple[dict[tuple[str, int], dict[str, Any]], list[str]]:
    config = SimConfig(seed=seed, client_heartbeat_timeout=1000.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        start = trio.current_time()
        await client.authorize(sim.issue_token())
        await client.call("user/syncrequest", 1, "", f'{{"users":[{sim.user_id}]}}')
        await trio.sleep_until(start + 3.3)
        account_id = min(k[1] for k in sim.truth() if k[0] == "account")
        body = {
            "accountId": account_id,
            "action": "Buy",
            "symbol": "MESZ6",
            "orderQty": 1,
            "orderType": "Market",
            "isAutomated": True,
        }
        await client.request("order/placeorder", 2, "", orjson.dumps(body).decode())
        with trio.move_on_at(start + 12.3):
            while True:
                await client.recv()
        return sim.truth(), list(client.frames)


async def test_same_seed_same_world_and_frames(autojump_clock: trio.testing.MockClock) -> None:
    truth_a, frames_a = await _script(seed=42)
    truth_b, frames_b = await _script(seed=42)
    assert truth_a == truth_b
    assert frames_a == frames_b
    assert len(frames_a) > 10
    truth_c, _ = await _script(seed=43)
    assert truth_c != truth_a
