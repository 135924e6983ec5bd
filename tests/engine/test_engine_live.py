"""The engine against the in-process simulator, in virtual time."""

from __future__ import annotations

import itertools
import logging

import httpx
import orjson
import pytest
import trio

from trio_tradovate import (
    AuthenticationError,
    EngineStopped,
    RequestError,
    State,
    SyncOptions,
    open_engine,
)
from trio_tradovate.sim import Simulator

from ..conftest import config_for, settle


async def test_full_path_to_live_and_store_equals_truth(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        record = await engine.wait_for(State.LIVE)
        assert [r.dest for r in engine.transitions] == [
            State.CONNECTING,
            State.AUTHENTICATING,
            State.SYNCING,
            State.LIVE,
        ]
        assert record.generation == 1
        assert engine.store.as_dict() == sim.truth()
        await trio.sleep(30)  # activity streams in as props events
        await settle(sim)
        assert engine.store.as_dict() == sim.truth()
        assert engine.counters["props_events"] > 0
    assert engine.state is State.STOPPED
    [audit] = sim.sockets
    assert audit.syncrequest_count == 1
    assert [r.endpoint for r in audit.requests][:2] == ["authorize", "user/syncrequest"]


async def test_drop_then_reauth_one_sync_and_truth(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        await trio.sleep(5)
        await sim.drop_connections()
        await trio.sleep(20)  # activity continues while we are away and after
        dropped_at = sim.sockets[0].closed_at
        assert dropped_at is not None
        await engine.wait_for(State.LIVE)
        assert engine.generation == 2
        assert len(sim.sockets) == 2
        second = sim.sockets[1]
        assert second.opened_at - dropped_at <= 1.0  # first retry within 1 s
        assert [r.endpoint for r in second.requests][:2] == ["authorize", "user/syncrequest"]
        assert second.syncrequest_count == 1
        await settle(sim)
        assert engine.store.as_dict() == sim.truth()
        reasons = [r.reason for r in engine.transitions if r.dest is State.BACKOFF]
        assert len(reasons) == 1
        assert reasons[0].startswith("dropped")


async def test_heartbeats_at_configured_interval(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim, heartbeat_interval=1.5)) as engine:
        await engine.wait_for(State.LIVE)
        await trio.sleep(60)
    beats = sim.sockets[0].client_heartbeats
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) >= 39
    assert all(abs(gap - 1.5) < 1e-6 for gap in gaps), gaps


async def test_stall_is_detected_by_watchdog(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim, server_silence_timeout=10)) as engine:
        await engine.wait_for(State.LIVE)
        sim.stall()
        stalled_at = trio.current_time()
        record = await engine.wait_for(State.BACKOFF)
        assert record.reason.startswith("stalled")
        # The last frame came at most one server heartbeat before the stall began.
        assert 10 - 2.5 <= record.time - stalled_at <= 10 + 1e-6
        sim.stall(False)
        await engine.wait_for(State.LIVE)
        await settle(sim)
        assert engine.store.as_dict() == sim.truth()


async def test_invalid_credentials_stop_without_a_storm(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    from trio_tradovate import Credentials

    config = config_for(sim, credentials=Credentials(sim.config.username, "wrong"))
    async with open_engine(config) as engine:
        with pytest.raises(EngineStopped) as info:
            await engine.wait_for(State.LIVE)
        assert "credentials_rejected" in info.value.reason
        assert isinstance(info.value.error, AuthenticationError)
        assert "Incorrect username or password" in str(info.value.error)
        await trio.sleep(600)
        assert engine.state is State.STOPPED
    assert sim.sockets == ()


async def test_invalid_token_is_typed_and_not_retried(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = config_for(sim, credentials=None, access_token="not-a-real-token", user_id=sim.user_id)
    async with open_engine(config) as engine:
        with pytest.raises(EngineStopped) as info:
            await engine.wait_for(State.LIVE)
        assert "auth_rejected" in info.value.reason
        assert "401" in info.value.reason
        await trio.sleep(600)
    assert len(sim.sockets) == 1
    assert sim.sockets[0].auth_attempts[0][1] == 401


async def test_expired_token_with_credentials_logs_in_again_once(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        await engine.wait_for(State.LIVE)
        sim.expire_tokens()
        await sim.drop_connections()
        await engine.wait_for(State.BACKOFF)
        await engine.wait_for(State.LIVE)
        await trio.sleep(300)
        assert engine.state is State.LIVE
    statuses = [status for audit in sim.sockets for _, status in audit.auth_attempts]
    assert statuses.count(401) <= 1
    assert statuses[-1] == 200


async def test_requests_correlate_and_fail_typed(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(config_for(sim)) as engine:
        accounts = await engine.request("account/list")
        assert {a["id"] for a in accounts} == {key[1] for key in sim.truth() if key[0] == "account"}
        with pytest.raises(RequestError) as info:
            await engine.request("no/such")
        assert info.value.status == 404


async def test_no_secret_in_any_log_record(
    sim: Simulator, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        response = await sim.handle_http(request)
        body = orjson.loads(await response.aread())
        if isinstance(body, dict) and isinstance(body.get("accessToken"), str):
            tokens.append(body["accessToken"])
        return response

    config = config_for(sim, http_transport=httpx.MockTransport(capture))
    async with open_engine(config) as engine:
        await engine.wait_for(State.LIVE)
        await sim.drop_connections()
        await engine.wait_for(State.BACKOFF)
        await engine.wait_for(State.LIVE)
        assert tokens
        secrets = [*tokens, sim.config.password]
        assert all(t not in repr(engine.config) + repr(engine.token_status) for t in tokens)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records
    for secret in secrets:
        assert secret not in text


async def test_sync_body_is_configurable_and_entity_types_filter_the_store(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    account_ids = sorted(k[1] for k in sim.truth() if k[0] == "account")
    sync = SyncOptions(
        accounts=tuple(account_ids[:1]), entity_types=("order", "position", "account")
    )
    body = {"accounts": account_ids[:1], "entityTypes": ["order", "position", "account"]}
    async with open_engine(config_for(sim, sync=sync)) as engine:
        await engine.wait_for(State.LIVE)
        await trio.sleep(20)
        await settle(sim)
        types = {key[0] for key, _ in engine.store.items()}
    assert types <= {"order", "position", "account"}
    assert "order" in types
    [audit] = sim.sockets
    [sent] = [r for r in audit.requests if r.endpoint == "user/syncrequest"]
    assert orjson.loads(sent.body) == body
