"""Fault injection for the conformance error classes: raw and malformed frames, duplicated and
replayed props, split writes, failing renewals and penalised logins (§8, §11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from trio_tradovate.sim import (
    FAULT_KINDS,
    MALFORMED_KINDS,
    FaultError,
    SimConfig,
    Simulator,
    apply_fault,
    open_simulator,
)
from trio_tradovate.sim._core import SimCore
from trio_tradovate.sim._simulator import _SimStream
from trio_tradovate.sim.rawclient import RawClient, State, apply_events, apply_snapshot, open_raw

QUIET = SimConfig(activity_interval=None, client_heartbeat_timeout=1000.0)
LOGIN = {"name": "demo-user", "password": "demo-password"}


async def synced(client: RawClient, sim: Simulator) -> State:
    await client.authorize(sim.issue_token())
    body = orjson.dumps({"users": [sim.user_id]}).decode()
    reply = await client.call("user/syncrequest", 1, "", body)
    return apply_snapshot(reply["d"])


async def next_frame(client: RawClient) -> str:
    """The next frame that is not a server heartbeat."""
    while True:
        frame = await client.recv()
        if frame != "h":
            return frame


async def place_market(client: RawClient, sim: Simulator, rid: int) -> dict[str, Any]:
    account = sim.truth()[("account", min(k[1] for k in sim.truth() if k[0] == "account"))]
    body = {
        "accountId": account["id"],
        "action": "Buy",
        "symbol": "MESZ6",
        "orderQty": 1,
        "orderType": "Market",
        "isAutomated": True,
    }
    return await client.call("order/placeorder", rid, "", orjson.dumps(body).decode())


def props_in(frame: str) -> list[dict[str, Any]]:
    return [m for m in orjson.loads(frame[1:]) if isinstance(m, dict) and m.get("e") == "props"]


@asynccontextmanager
async def rest(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=sim.rest_transport(), base_url="https://demo.tradovateapi.com/v1"
    ) as client:
        yield client


async def test_inject_frame_reaches_every_open_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as first, open_raw(sim) as second:
        await first.authorize(sim.issue_token())  # the second never authorizes
        sim.inject_frame("a[42]")
        assert await next_frame(first) == "a[42]"
        assert await next_frame(second) == "a[42]"
        assert sim.injected["frame"] == 1
        assert all(audit.frames_sent["a"] >= 1 for audit in sim.sockets)


@pytest.mark.parametrize(
    "kind",
    ["invalid_json", "unknown_frame", "unknown_event", "props_missing_fields", "props_wrong_types"],
)
async def test_malformed_frames_never_change_truth(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        state = await synced(client, sim)
        sim.inject_malformed(kind)
        frame = await next_frame(client)
        assert sim.truth() == state
        assert sim.injected[f"malformed:{kind}"] == 1
        if kind == "invalid_json":
            assert frame == 'a[{"e":"props","d":{'
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(frame[1:])
        elif kind == "unknown_frame":
            assert frame == "x[1]"
        elif kind == "unknown_event":
            assert orjson.loads(frame[1:]) == [{"e": "brandNewKind", "d": {}}]
        else:
            events = orjson.loads(frame[1:])
            assert events
            assert all(e["e"] == "props" for e in events)
            for event in events:
                data = event["d"]
                entity = data.get("entity") if isinstance(data, dict) else None
                well_formed = (
                    isinstance(data, dict)
                    and isinstance(data.get("entityType"), str)
                    and data.get("eventType") in ("Created", "Updated", "Deleted")
                    and isinstance(entity, dict)
                    and isinstance(entity.get("id"), int)
                )
                assert not well_formed, event
        # The socket is still usable afterwards.
        assert (await client.call("account/list", 2))["s"] == 200


async def test_oversized_frame_has_the_configured_size() -> None:
    config = SimConfig(activity_interval=None, oversized_bytes=5000)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        sim.inject_malformed("oversized")
        frame = await next_frame(client)
        assert len(frame.encode()) == 5000
        assert orjson.loads(frame[1:])[0]["e"] == "junk"  # valid JSON junk


async def test_default_oversized_frame_exceeds_a_default_client_limit() -> None:
    assert SimConfig().oversized_bytes == 2 * 2**20 + 1
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        state = await synced(client, sim)
        sim.inject_malformed("oversized")
        with pytest.raises(ConnectionClosed) as info:
            await next_frame(client)
        assert info.value.reason is not None
        assert info.value.reason.code == 1009  # MESSAGE_TOO_BIG (docs/protocol.md §15)
        assert sim.truth() == state


async def test_bad_batch_mutates_only_through_its_valid_events() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        state = await synced(client, sim)
        before = sim.truth()
        sim.inject_malformed("bad_batch")
        frame = await next_frame(client)
        elements = orjson.loads(frame[1:])
        assert [isinstance(e, dict) for e in elements] == [True, False, True]
        assert sim.truth() != before  # the valid events are real mutations
        assert state == before  # a client that drops the whole frame falls behind
        apply_events(state, [e for e in elements if isinstance(e, dict)])
        assert state == sim.truth()


async def test_bad_batch_to_an_unsynced_socket_has_no_props() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        await client.authorize(sim.issue_token())
        sim.inject_malformed("bad_batch")
        assert await next_frame(client) == 'a["junk"]'


async def test_unknown_malformed_kind_is_refused() -> None:
    async with open_simulator(QUIET) as sim:
        with pytest.raises(ValueError, match="unknown malformed kind"):
            sim.inject_malformed("nonsense")
        assert not sim.injected
        assert set(MALFORMED_KINDS) >= {"bad_batch", "oversized"}


async def test_duplicate_props_sends_every_props_frame_twice() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        state = await synced(client, sim)
        sim.duplicate_props()
        assert (await place_market(client, sim, 2))["s"] == 200
        sim.duplicate_props(False)
        assert (await client.call("account/list", 3))["s"] == 200
        props_frames = [f for f in client.frames if f.startswith("a") and props_in(f)]
        # Market order: one order batch and one fill batch, each sent twice in a row.
        assert len(props_frames) == 4
        assert props_frames[0] == props_frames[1]
        assert props_frames[2] == props_frames[3]
        apply_events(state, client.events)
        assert state == sim.truth()


async def test_replay_props_resends_the_last_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = SimConfig(seed=3, activity_interval=1.0, client_heartbeat_timeout=1000.0)
    async with open_simulator(config) as sim, open_raw(sim) as client:
        state = await synced(client, sim)
        with trio.move_on_after(10.5):
            while True:
                frame = await client.recv()
                if frame.startswith("a"):
                    client.events.extend(orjson.loads(frame[1:]))
        sim.pause_activity()
        sent = list(client.events)
        assert len(sent) >= 5
        truth = sim.truth()
        sim.replay_props(5)
        replay = await next_frame(client)
        assert orjson.loads(replay[1:]) == sent[-5:]
        assert sim.truth() == truth
        apply_events(state, sent + sent[-5:])
        assert state == truth
        assert sim.injected["replay_props"] == 1


class _Recorder(trio.abc.Stream):
    """Records the size of every write (a stand-in for the server's TCP stream)."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.writes.append(len(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_split_frames_writes_in_small_pieces() -> None:
    core = SimCore(QUIET, 0.0)
    recorder = _Recorder()
    stream = _SimStream(recorder, core, trio.Event)
    core.split_max_bytes = 7
    await stream.send_all(b"x" * 23)
    assert recorder.writes == [7, 7, 7, 2]
    core.split_max_bytes = None
    await stream.send_all(b"x" * 23)
    assert recorder.writes[-1] == 23


async def test_split_frames_end_to_end_keeps_the_protocol_intact() -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        sim.split_frames(3)
        state = await synced(client, sim)
        assert state == sim.truth()
        assert (await place_market(client, sim, 2))["s"] == 200
        assert (await client.call("account/list", 3))["s"] == 200  # flushes the fill batch
        sim.split_frames(None)
        apply_events(state, client.events)
        assert state == sim.truth()
        assert sim.injected["split_frames"] == 1
        with pytest.raises(ValueError, match="max_bytes"):
            sim.split_frames(0)


async def test_fail_renewals() -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as http:
        headers = {"Authorization": f"Bearer {sim.issue_token()}"}
        sim.fail_renewals()
        assert (await http.get("/auth/renewaccesstoken", headers=headers)).status_code == 401
        assert (await http.get("/auth/me", headers=headers)).status_code == 200
        sim.fail_renewals(False)
        renewed = await http.get("/auth/renewaccesstoken", headers=headers)
        assert renewed.status_code == 200
        assert "accessToken" in renewed.json()


async def test_penalize_auth_ticket_flow(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as http:
        sim.penalize_auth(10.0)
        first = await http.post("/auth/accesstokenrequest", json=LOGIN)
        assert first.status_code == 200
        penalty = first.json()
        assert set(penalty) == {"p-ticket", "p-time"}
        assert penalty["p-time"] == 10.0
        await trio.sleep(4)
        early = await http.post(
            "/auth/accesstokenrequest", json={**LOGIN, "p-ticket": penalty["p-ticket"]}
        )
        again = early.json()
        assert "accessToken" not in again
        assert again["p-ticket"] != penalty["p-ticket"]
        await trio.sleep(10)
        wrong = await http.post("/auth/accesstokenrequest", json={**LOGIN, "p-ticket": "bogus"})
        assert "p-ticket" in wrong.json()
        await trio.sleep(10)
        stale = await http.post(  # the first ticket was withdrawn by the early resend
            "/auth/accesstokenrequest", json={**LOGIN, "p-ticket": penalty["p-ticket"]}
        )
        latest = stale.json()["p-ticket"]
        await trio.sleep(10)
        ok = await http.post("/auth/accesstokenrequest", json={**LOGIN, "p-ticket": latest})
        assert "accessToken" in ok.json()
        plain = await http.post("/auth/accesstokenrequest", json=LOGIN)  # times=1 is spent
        assert "accessToken" in plain.json()
        log = sim.rest_log
        assert [(r.penalty is not None, r.accepted) for r in log] == [
            (True, None),
            (True, False),
            (True, False),
            (True, False),
            (False, True),
            (False, None),
        ]
        assert log[1].ticket_presented == penalty["p-ticket"]
        assert log[4].ticket_presented == latest
        assert log[4].status == 200
        assert all(r.path == "/v1/auth/accesstokenrequest" for r in log)
        assert "demo-password" not in repr(log)
        assert sim.injected["penalize_auth"] == 1


async def test_penalize_auth_with_captcha_is_never_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulator(QUIET) as sim, rest(sim) as http:
        sim.penalize_auth(1.0, captcha=True, times=2)
        penalty = (await http.post("/auth/accesstokenrequest", json=LOGIN)).json()
        assert penalty["p-captcha"] is True
        await trio.sleep(5)
        retry = await http.post(
            "/auth/accesstokenrequest", json={**LOGIN, "p-ticket": penalty["p-ticket"]}
        )
        assert retry.json()["p-captcha"] is True
        second = (await http.post("/auth/accesstokenrequest", json=LOGIN)).json()
        assert second["p-captcha"] is True  # times=2
        assert "accessToken" in (await http.post("/auth/accesstokenrequest", json=LOGIN)).json()


async def test_apply_fault_maps_specs_to_controls(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(QUIET) as sim, open_raw(sim) as client:
        state = await synced(client, sim)
        await apply_fault(sim, {"kind": "malformed", "malformed": "unknown_event"})
        assert orjson.loads((await next_frame(client))[1:])[0]["e"] == "brandNewKind"
        await apply_fault(sim, {"kind": "duplicate_props", "on": False})
        await apply_fault(sim, {"kind": "replay_props", "count": 3})
        await apply_fault(sim, {"kind": "split_frames", "max_bytes": None})
        await apply_fault(sim, {"kind": "penalize_auth", "p_time": 2, "captcha": True})
        await apply_fault(sim, {"kind": "refuse", "seconds": None})
        await apply_fault(sim, {"kind": "fail_renewals"})
        for bad in (
            {"kind": "explode"},
            {"kind": 3},
            {"kind": "malformed"},
            {"kind": "malformed", "malformed": "nonsense"},
            {"kind": "replay_props", "count": "3"},
            {"kind": "replay_props", "count": 3.5},
            {"kind": "split_frames", "max_bytes": 0},
            {"kind": "drop", "extra": 1},
            {"kind": "penalize_requests", "times": 0},
            {"kind": "ignore_authorize", "on": 1},
        ):
            with pytest.raises(FaultError):
                await apply_fault(sim, bad)
        assert sim.truth() == state
        await apply_fault(sim, {"kind": "shutdown", "reasonCode": "IPQuotaReached"})
        frames = await client.until_closed()
        assert orjson.loads(frames[-2][1:])[0]["d"] == {"reasonCode": "IPQuotaReached"}
        assert sim.injected["shutdown"] == 1
        assert sim.injected["malformed:unknown_event"] == 1
        assert "duplicate_props" not in sim.injected  # switching off is not counted
        assert set(FAULT_KINDS) >= {"drop", "stall", "penalize_requests", "rate_limit_429"}
