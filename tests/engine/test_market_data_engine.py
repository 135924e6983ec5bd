"""The market-data socket against the in-process simulator, in virtual time.

The simulator's per-socket audit (``sim.md_requests``, ``sim.live_subscriptions()``) says
what the server was asked and holds, so restoring is checked from the server's side.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import trio

from trio_tradovate import (
    Bar,
    ChartSpec,
    ConfigError,
    EndOfHistory,
    EngineConfig,
    EngineStopped,
    MarketDataFeed,
    Quote,
    ReplayOptions,
    ReplayRefused,
    StaleConfig,
    State,
    Subscription,
    open_engine,
    open_market_data,
    open_replay,
)
from trio_tradovate.marketdata import parse_time
from trio_tradovate.sim import Simulator

from ..conftest import settle


def md_config(sim: Simulator, **overrides: Any) -> EngineConfig:
    settings: dict[str, Any] = {"md_stale": StaleConfig(quote=None, dom=None)}
    settings.update(overrides)
    return sim.engine_config(**settings)


def md_sockets(sim: Simulator) -> list[int]:
    return [audit.index for audit in sim.sockets if audit.role == "md"]


def asked_on(sim: Simulator, socket: int) -> Counter[tuple[str, Any]]:
    return Counter(
        (record.endpoint, record.symbol)
        for record in sim.md_requests
        if record.socket == socket and record.endpoint.startswith("md/subscribe")
    )


def state_of(md: MarketDataFeed) -> State:
    """The feed's state now (a call, so the type checker does not narrow it)."""
    return md.state


def is_stale(subscription: Subscription) -> bool:
    return subscription.status.stale


async def drop_md(sim: Simulator) -> None:
    await sim.drop_connections(where=lambda audit: audit.role == "md")


async def test_quotes_alone_typed_and_live(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_market_data(md_config(sim)) as md:
        async with md.quotes("ESZ6") as quotes:
            update = await quotes.receive()
            assert isinstance(update.value, Quote)
            assert update.value.contract_id == sim.contract_id("ESZ6")
            assert update.value.bid is not None
        assert state_of(md) is State.LIVE
        await trio.sleep(1)  # the release goes out on the open socket
    assert state_of(md) is State.STOPPED
    [socket] = md_sockets(sim)
    assert asked_on(sim, socket) == Counter({("md/subscribequote", "ESZ6"): 1})
    assert [r.endpoint for r in sim.md_requests][-1] == "md/unsubscribequote"


async def test_two_consumers_one_server_subscription(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_market_data(md_config(sim)) as md:
        first, second = md.quotes("NQZ6"), md.quotes("NQZ6")
        a = await first.receive()
        b = await second.receive()
        assert a.value == b.value  # one stream, fanned out to both
        first.close()
        await trio.sleep(3)
        assert ("quote", "NQZ6") in next(iter(sim.live_subscriptions().values()))
        await second.receive()  # still streaming for the one left
        second.close()
        await trio.sleep(3)
        assert next(iter(sim.live_subscriptions().values())) == frozenset()
    [socket] = md_sockets(sim)
    assert asked_on(sim, socket) == Counter({("md/subscribequote", "NQZ6"): 1})


@pytest.mark.parametrize("seed", range(4))
async def test_every_subscription_restored_exactly_once_after_random_drops(
    sim: Simulator, seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    async with open_market_data(md_config(sim)) as md:
        subs = [md.quotes("ESZ6"), md.quotes("NQZ6"), md.dom("MESZ6"), md.histogram("ESZ6")]
        subs.append(md.quotes(sim.contract_id("MESZ6")))
        for sub in subs[:3]:
            await sub.receive()
        for _ in range(3):
            await trio.sleep(rng.uniform(0.0, 20.0))
            await drop_md(sim)
            await trio.sleep(rng.uniform(0.0, 3.0))
        await trio.sleep(40)
        assert state_of(md) is State.LIVE
        wanted = Counter(
            {
                ("md/subscribequote", "ESZ6"): 1,
                ("md/subscribequote", "NQZ6"): 1,
                ("md/subscribedom", "MESZ6"): 1,
                ("md/subscribehistogram", "ESZ6"): 1,
                ("md/subscribequote", sim.contract_id("MESZ6")): 1,
            }
        )
        sockets = md_sockets(sim)
        assert len(sockets) >= 2
        for socket in sockets:
            if any(
                r.socket == socket and r.endpoint == "md/subscribequote" for r in sim.md_requests
            ):
                asked = asked_on(sim, socket)
                assert all(count == 1 for count in asked.values()), asked
        assert asked_on(sim, sockets[-1]) == wanted
        live = sim.live_subscriptions()[sockets[-1]]
        assert {("quote", "ESZ6"), ("quote", "NQZ6"), ("dom", "MESZ6")} <= live
        assert ("histogram", "ESZ6") in live
        assert len(live) == 5
        for sub in subs:
            update = await sub.receive()  # every one streams again
            assert update.key == sub.key


async def test_unsubscribe_while_disconnected_stays_unsubscribed(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_market_data(md_config(sim)) as md:
        keep, leave = md.quotes("ESZ6"), md.quotes("NQZ6")
        await keep.receive()
        await leave.receive()
        sim.refuse_connections(until=trio.current_time() + 5)
        await drop_md(sim)
        await trio.sleep(0.1)
        assert state_of(md) is not State.LIVE
        leave.close()
        await trio.sleep(30)
        assert state_of(md) is State.LIVE
        last = md_sockets(sim)[-1]
        assert asked_on(sim, last) == Counter({("md/subscribequote", "ESZ6"): 1})
        assert not any(r.socket == last and r.symbol == "NQZ6" for r in sim.md_requests)


async def test_chart_resumed_without_gap_or_duplicate(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    spec = ChartSpec("MinuteBar", 1, "UnderlyingUnits", as_much_as_elements=10)
    bars: list[Any] = []
    async with open_market_data(md_config(sim)) as md, md.chart("ESZ6", spec) as chart:
        with trio.move_on_after(200):
            async for update in chart:
                if isinstance(update.value, Bar):
                    bars.append(update)
        await drop_md(sim)
        with trio.move_on_after(300):
            async for update in chart:
                if isinstance(update.value, Bar):
                    bars.append(update)
        assert chart.status.gaps == 0
    stamps = [u.value.timestamp for u in bars]
    assert stamps == sorted(stamps)
    distinct = sorted(set(stamps))
    steps = {(b - a).total_seconds() for a, b in itertools.pairwise(distinct)}
    assert steps == {60.0}, steps  # no minute missing across the drop
    assert not any(u.gap for u in bars)
    getcharts = [r for r in sim.md_requests if r.endpoint == "md/getchart"]
    assert len(getcharts) == 2
    assert "asFarAsTimestamp" in getcharts[1].body


async def test_history_then_end_of_history_then_realtime(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    spec = ChartSpec("Tick", 1, "UnderlyingUnits", as_much_as_elements=20)
    async with open_market_data(md_config(sim)) as md, md.chart("NQZ6", spec) as chart:
        seen: list[Any] = []
        async for update in chart:
            seen.append(update.value)
            if len(seen) > 30:
                break
    eoh = next(i for i, v in enumerate(seen) if isinstance(v, EndOfHistory))
    assert eoh >= 1
    ids = [v.id for v in seen if not isinstance(v, EndOfHistory)]
    assert ids == sorted(set(ids))


async def test_frozen_subscription_detected_and_resubscribed_once(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = md_config(sim, md_stale=StaleConfig(quote=15.0))
    async with open_market_data(config) as md:
        frozen, alive = md.quotes("ESZ6"), md.quotes("NQZ6")
        await frozen.receive()
        await alive.receive()
        sim.freeze_subscription("ESZ6", "quote", until_resubscribed=False)
        status = await frozen.wait_status_change()
        assert status.stale
        assert not is_stale(alive)
        await trio.sleep(120)
        assert md.counters["stale_resubscribes"] == 1
        assert is_stale(frozen)
        sim.unfreeze_subscriptions()
        await trio.sleep(5)
        assert not is_stale(frozen)
        assert state_of(md) is State.LIVE
    assert len(md_sockets(sim)) == 1  # never a reconnect
    [socket] = md_sockets(sim)
    assert asked_on(sim, socket)[("md/subscribequote", "ESZ6")] == 2


async def test_slow_quote_consumer_holds_one_value(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_market_data(md_config(sim)) as md, md.quotes("ESZ6") as quotes:
        await trio.sleep(600)  # never read for ten minutes
        status = quotes.status
        assert status.lag == 1
        assert status.conflated > 100
        update = await quotes.receive()
        assert isinstance(update.value, Quote)
        assert update.value.conflated


async def test_quiet_market_is_not_a_dead_socket(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_market_data(md_config(sim)) as md, md.quotes("ESZ6") as quotes:
        await quotes.receive()
        sim.quiet_market(True)
        await trio.sleep(120)
        assert state_of(md) is State.LIVE
        assert len(md_sockets(sim)) == 1  # only h for two minutes: not a dead socket
        assert md.counters.get("unrouted", 0) == 0
        sim.quiet_market(False)
        sim.silence_market(True)  # nothing at all, not even h: the watchdog ends it
        await trio.sleep(15)
        assert len(md_sockets(sim)) >= 2  # the silent one was left
        sim.silence_market(False)
        await trio.sleep(30)
        assert state_of(md) is State.LIVE
        await quotes.receive()


async def test_md_beside_the_user_socket_in_one_engine(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(md_config(sim, market_data=True)) as engine:
        assert engine.market_data is not None
        quotes = engine.market_data.quotes("ESZ6")
        await engine.wait_for(State.LIVE)
        update = await quotes.receive()
        assert isinstance(update.value, Quote)
        assert engine.store.as_dict() != {}
        roles = sorted(audit.role for audit in sim.sockets)
        assert roles == ["md", "user"]
    with pytest.raises(EngineStopped):
        await quotes.receive()


async def test_a_429_on_a_subscription_locks_out_then_it_is_asked_again(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    sim.rate_limit_429(endpoint="md/subscribequote", times=1)
    async with open_market_data(md_config(sim, lockout_seconds=60.0)) as md:
        quotes = md.quotes("ESZ6")
        with trio.move_on_after(50):
            await quotes.receive()
            pytest.fail("no value may come while locked out")
        assert md.counters["lockouts"] == 1
        update = await quotes.receive()  # asked again once the lockout is over
        assert isinstance(update.value, Quote)
        assert trio.current_time() >= 60.0
        assert state_of(md) is State.LIVE
    [socket] = md_sockets(sim)
    # the 429 answer is the simulator's request gate's (not in its md audit); one accepted
    assert [r.status for r in sim.md_requests if r.socket == socket][:1] == [200]
    assert sim.injected["rate_limit_429"] == 1


REPLAY_START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


async def test_replay_checks_starts_the_clock_streams_and_resumes_after_a_drop(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    options = ReplayOptions(REPLAY_START, speed=10)
    async with open_replay(md_config(sim), options) as md:
        clock = md.watch_clock()
        quotes = md.quotes("ESZ6")
        assert isinstance((await quotes.receive()).value, Quote)
        tick = await clock.receive()
        assert tick.speed == 10
        assert tick.time >= REPLAY_START
        md.change_speed(20)
        while (await clock.receive()).speed != 20:
            pass
        await trio.sleep(5)
        assert md.replay is not None
        seen = md.replay.time
        assert seen is not None
        await sim.drop_connections(where=lambda audit: audit.role == "replay")
        await trio.sleep(10)
        assert state_of(md) is State.LIVE
        await quotes.receive()
        assert (await clock.receive()).speed == 20  # the speed asked for survives the drop
    replays = [audit for audit in sim.sockets if audit.role == "replay"]
    assert len(replays) == 2
    for audit in replays:
        endpoints = [r.endpoint.lower() for r in audit.requests]
        assert endpoints[:4] == [
            "authorize",
            "replay/checkreplaysession",
            "replay/initializeclock",
            "md/subscribequote",
        ]
    second_init = next(
        r for r in replays[1].requests if r.endpoint.lower() == "replay/initializeclock"
    )
    resumed = parse_time(orjson.loads(second_init.body)["startTimestamp"])
    assert resumed >= seen  # resumed where the replay was, not from its start
    assert orjson.loads(second_init.body)["speed"] == 20


async def test_a_refused_replay_stops_with_a_typed_error(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    options = ReplayOptions(datetime(2020, 1, 6, 10, 0, tzinfo=UTC))
    async with open_replay(md_config(sim), options) as md:
        quotes = md.quotes("ESZ6")
        with pytest.raises(EngineStopped) as stopped:
            await quotes.receive()
    assert isinstance(stopped.value.error, ReplayRefused)
    assert state_of(md) is State.STOPPED
    with pytest.raises(ConfigError, match="0 to 400"):
        md.change_speed(401)


async def test_a_given_access_token_authorizes_the_md_socket_without_an_md_token(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = md_config(sim, credentials=None, access_token=sim.issue_token())
    async with open_market_data(config) as md, md.quotes("ESZ6") as quotes:
        assert isinstance((await quotes.receive()).value, Quote)
    [socket] = [audit for audit in sim.sockets if audit.role == "md"]
    assert [r.endpoint.lower() for r in socket.requests[:2]] == ["authorize", "md/subscribequote"]


async def test_md_transitions_are_recorded_with_the_engines(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_engine(md_config(sim, market_data=True)) as engine:
        await engine.wait_for(State.LIVE)
        assert engine.market_data is not None
        await engine.market_data.quotes("ESZ6").receive()
    md_records = [r for r in engine.transitions if r.shard == 1]
    assert [r.dest_node for r in md_records][:3] == ["connecting", "authenticating", "live"]
    assert md_records[-1].dest_node == "stopped"
    assert {r.shard for r in engine.transitions if r.region == "connection"} == {0}
    assert {r.region for r in md_records} == {"marketdata"}


async def test_server_side_discarding_is_counted(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    spec = ChartSpec("Tick", 1, "UnderlyingUnits", as_much_as_elements=5)
    async with open_market_data(md_config(sim)) as md, md.chart("ESZ6", spec) as chart:
        ids: list[int] = []
        async for update in chart:
            if isinstance(update.value, EndOfHistory):
                break
            ids.append(update.value.id)  # type: ignore[union-attr]
        assert md.counters.get("tick_id_gaps", 0) == 0
        sim.chart_gap(3)
        with trio.move_on_after(20):
            async for update in chart:
                ids.append(update.value.id)  # type: ignore[union-attr]
        assert md.counters["tick_id_gaps"] == 1
        jumps = [b - a for a, b in itertools.pairwise(ids) if b - a != 1]
        assert jumps == [4]  # three ticks discarded by the server, seen as one jump


async def test_the_replay_socket_also_carries_the_user_sync(
    sim: Simulator, autojump_clock: trio.testing.MockClock
) -> None:
    config = md_config(sim, replay=ReplayOptions(REPLAY_START), market_data=True, user_sync=False)
    async with open_engine(config) as engine:
        assert engine.market_data is not None
        quotes = engine.market_data.quotes("ESZ6")
        record = await engine.wait_for(State.LIVE)
        assert record.region == "replay"
        await settle(sim)
        assert engine.store.as_dict() == sim.truth()  # the account, synced on the replay socket
        sim.resume_activity()
        await quotes.receive()
        me = await engine.request("auth/me")  # application requests go out on it too
        assert me["userId"] == sim.user_id
        await sim.drop_connections(where=lambda audit: audit.role == "replay")
        await trio.sleep(15)
        assert engine.state is State.LIVE
        await settle(sim)
        assert engine.store.as_dict() == sim.truth()
    nodes = [r.dest_node for r in engine.transitions if r.generation == 1][:5]
    assert nodes == ["authenticating", "syncing.restoring", "syncing.paced", "syncing.sent", "live"]
    replays = [audit for audit in sim.sockets if audit.role == "replay"]
    assert [audit.role for audit in sim.sockets] == ["replay", "replay"]
    for audit in replays:
        endpoints = [r.endpoint.lower() for r in audit.requests]
        assert endpoints.index("replay/initializeclock") < endpoints.index("user/syncrequest")
        assert audit.syncrequest_count == 1
