"""The subscription registry and the market-data session, synchronously, over generated scripts.

A small scripted server (:class:`FakeMdServer`, test-only) answers the frames the session
makes; a driver runs the market-data table the way the supervisor does. Properties checked
over many seeds: every wanted subscription restored exactly once per connection, a
subscription cancelled while down never comes back, the server ends each quiet period holding
exactly the wanted set, and a chart never delivers a bar twice nor misses one without saying.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from trio_tradovate.errors import ConfigError
from trio_tradovate.marketdata import Bar, format_time, parse_time
from trio_tradovate.mdsession import (
    MD_EVENT_TYPES,
    MarketData,
    MdSession,
    SubscriptionAnswered,
)
from trio_tradovate.scheduler import RateGovernor, Window
from trio_tradovate.session import EVENT_TYPES, Limits
from trio_tradovate.statechart import (
    MARKET_DATA_TABLE,
    Action,
    Guard,
    MdNode,
    Outcome,
    Statechart,
    Trigger,
)
from trio_tradovate.subscriptions import (
    ChartSpec,
    EndOfHistory,
    Kind,
    ServerState,
    StaleConfig,
    SubKey,
    SubscriptionRegistry,
    Update,
    check_symbol,
)

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
LIMITS = Limits(connect=5, authorize=10, sync=60, silence=10)
MINUTE = ChartSpec("MinuteBar", 1, "UnderlyingUnits", as_much_as_elements=5)
CONTRACTS = {"ESZ6": 101, "NQZ6": 102, "CLF7": 103}


def key_universe() -> list[SubKey]:
    keys = [SubKey(kind, symbol) for kind in (Kind.QUOTE, Kind.DOM) for symbol in CONTRACTS]
    keys += [SubKey(Kind.QUOTE, 102), SubKey(Kind.HISTOGRAM, "ESZ6")]
    keys.append(SubKey(Kind.CHART, "ESZ6", MINUTE))
    return keys


class FakeMdServer:
    """Answers subscription frames like Tradovate documents (test-only, synchronous).

    Per connection it holds the set of live subscriptions and an audit of requests; it keeps
    one minute-bar series for ESZ6 that grows with time. ``lose_history`` makes the next
    chart history start later than asked (the server cannot fill the gap)."""

    def __init__(self) -> None:
        self.generation = 0
        self.held: set[tuple[str, Any]] = set()
        self.audit: list[tuple[int, str, dict[str, Any]]] = []
        self.charts: dict[int, int] = {}  # realtime id -> pushed up to index
        self.ids = iter(range(1000, 10**9))
        self.lose_history = False
        self.duplicates: list[tuple[str, Any]] = []
        self.unknown_unsubscribes: list[tuple[str, Any]] = []

    def new_connection(self) -> None:
        self.generation += 1
        self.held.clear()
        self.charts.clear()

    @staticmethod
    def bar(index: int) -> dict[str, Any]:
        moment = T0 + timedelta(minutes=index)
        price = 4500 + (index % 7)
        return {
            "timestamp": format_time(moment),
            "open": price,
            "high": price + 1,
            "low": price - 1,
            "close": price,
        }

    @staticmethod
    def bars_until(now: float) -> int:
        return int(now // 60) + 10  # ten bars of history before time 0

    def handle(self, frame: str, now: float) -> list[str]:
        endpoint, request_id, _, body = frame.split("\n", 3)
        rid = int(request_id)
        if endpoint == "authorize":
            return [_a({"s": 200, "i": rid})]
        data: dict[str, Any] = orjson.loads(body) if body else {}
        self.audit.append((self.generation, endpoint, data))
        kind = endpoint.removeprefix("md/").lower()
        if kind.startswith("subscribe"):
            token = (kind.removeprefix("subscribe"), data["symbol"])
            if token in self.held:
                self.duplicates.append(token)
            self.held.add(token)
            return [_a({"s": 200, "i": rid})]
        if kind.startswith("unsubscribe"):
            token = (kind.removeprefix("unsubscribe"), data["symbol"])
            if token not in self.held:
                self.unknown_unsubscribes.append(token)
            self.held.discard(token)
            return [_a({"s": 200, "i": rid})]
        if kind == "getchart":
            realtime, historical = next(self.ids), next(self.ids)
            token = ("chart", realtime)
            self.held.add(token)
            end = self.bars_until(now)
            time_range = data["timeRange"]
            if "asFarAsTimestamp" in time_range:
                since = parse_time(time_range["asFarAsTimestamp"])
                start = int((since - T0).total_seconds() // 60)
            else:
                start = end - time_range["asMuchAsElements"]
            if self.lose_history:
                start += 3
                self.lose_history = False
            history = [self.bar(i) for i in range(max(start, 0), end)]
            self.charts[realtime] = end
            return [
                _a({"s": 200, "i": rid, "d": {"historicalId": historical, "realtimeId": realtime}}),
                _a({"e": "chart", "d": {"charts": [{"id": historical, "td": 1, "bars": history}]}}),
                _a({"e": "chart", "d": {"charts": [{"id": historical, "eoh": True}]}}),
            ]
        if kind == "cancelchart":
            token = ("chart", data["subscriptionId"])
            if token not in self.held:
                self.unknown_unsubscribes.append(token)
            self.held.discard(token)
            self.charts.pop(data["subscriptionId"], None)
            return [_a({"s": 200, "i": rid})]
        return [_a({"s": 404, "i": rid, "d": "unknown"})]

    def realtime(self, now: float) -> list[str]:
        """Bars that came into being since each chart last pushed, and a quote per contract."""
        out = []
        end = self.bars_until(now)
        for realtime, sent in list(self.charts.items()):
            if end > sent:
                bars = [self.bar(i) for i in range(sent, end)]
                out.append(_a({"e": "chart", "d": {"charts": [{"id": realtime, "bars": bars}]}}))
                self.charts[realtime] = end
        stamp = format_time(T0 + timedelta(seconds=now))
        quotes = [
            {"contractId": cid, "timestamp": stamp, "entries": {"Bid": {"price": 1.0, "size": 1}}}
            for cid in CONTRACTS.values()
        ]
        out.append(_a({"e": "md", "d": {"quotes": quotes}}))
        return out

    def wanted_view(self, keys: list[SubKey]) -> set[tuple[str, Any]]:
        """The server tokens of non-chart ``keys`` (charts are checked by count)."""
        return {(k.kind.value, k.symbol) for k in keys if k.kind is not Kind.CHART}


def _a(message: dict[str, Any]) -> str:
    return "a" + orjson.dumps([message]).decode()


class Policy:
    def check(self, guard: Guard, event: object) -> bool:
        if guard is Guard.NOTHING_TO_RESTORE:
            return getattr(event, "restore", None) == 0
        return False


class Driver:
    """Runs the market-data table over one session at a time, like the supervisor."""

    def __init__(
        self, registry: SubscriptionRegistry, server: FakeMdServer, pace_limit: int = 3
    ) -> None:
        self.registry = registry
        self.server = server
        self.now = 0.0
        self.governor = RateGovernor({"*": (Window(pace_limit, 1.0),)})
        self.chart: Statechart[MdNode, Trigger] = Statechart(
            MARKET_DATA_TABLE, clock=lambda: self.now, policy=Policy()
        )
        self.session: MdSession | None = None
        self.generation = 0
        self.delivered: list[Update] = []
        self.failures: list[Any] = []
        self.chart.fire(Trigger.START)

    def connect(self) -> None:
        self.generation += 1
        self.server.new_connection()
        self.session = MdSession(
            registry=self.registry,
            pace=self.governor.delay,
            generation=self.generation,
            now=self.now,
            limits=LIMITS,
            token="t",
            token_minted_at=None,
            renewable=True,
        )
        self.feed("o")

    def wake(self) -> None:
        if self.session is not None:
            self.session.wake()

    def drop(self) -> None:
        self.chart.fire(Trigger.LOST)
        self.session = None
        self.chart.fire(Trigger.RETRY)

    def feed(self, message: str) -> None:
        assert self.session is not None
        for event in self.session.receive(message, self.now):
            self.fire(event)

    def fire(self, event: Any) -> None:
        session = self.session
        assert session is not None
        fired = self.chart.fire(event.trigger, event=event)
        if fired.record is not None:
            session.entered(self.chart.node, self.now)
        action = fired.action
        frames: list[str] = []
        if action is Action.SEND_AUTHORIZE:
            frames = [session.authorize()]
        elif action in (Action.SEND_REQUESTS, Action.RESUBSCRIBE, Action.GO_LIVE):
            frames = session.requests(self.now, self.governor.record)
        elif action is Action.DELIVER and isinstance(event, MarketData):
            self.delivered.extend(event.updates)
        elif action is Action.NOTE_ANSWER:
            assert isinstance(event, SubscriptionAnswered)
            if event.failure is not None:
                self.failures.append(event.failure)
        for frame in frames:
            for answer in self.server.handle(frame, self.now):
                self.feed(answer)

    def pump(self, seconds: float, step: float = 0.5) -> None:
        """Let time pass: deadlines expire, requests go out, realtime data comes."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            if self.session is None:
                continue
            for message in self.server.realtime(self.now):
                self.feed(message)
            while self.session is not None and self.session.next_deadline() <= self.now:
                events = self.session.expire(self.now)
                if not events:
                    break
                for event in events:
                    self.fire(event)


def test_the_market_data_table_is_total_and_every_md_event_has_a_row() -> None:
    for node in MdNode:
        for trigger in Trigger:
            assert MARKET_DATA_TABLE.rules_for(node, trigger)
    for event_type in (*EVENT_TYPES, *MD_EVENT_TYPES):
        trigger = event_type.trigger  # type: ignore[attr-defined]
        assert trigger in MARKET_DATA_TABLE.triggers
    assert MARKET_DATA_TABLE.rules_for(MdNode.LIVE, Trigger.PROPS)[0].outcome is Outcome.IGNORE
    assert MdNode.RESTORING.state.value == "syncing"


def test_nothing_to_restore_goes_live_at_once() -> None:
    driver = Driver(SubscriptionRegistry(), FakeMdServer())
    driver.connect()
    assert driver.chart.node is MdNode.LIVE
    driver.registry.acquire(SubKey(Kind.QUOTE, "ESZ6"))
    driver.wake()
    driver.pump(1)
    assert driver.server.held == {("quote", "ESZ6")}


def test_two_consumers_share_one_server_subscription() -> None:
    registry = SubscriptionRegistry()
    driver = Driver(registry, FakeMdServer())
    driver.connect()
    key = SubKey(Kind.QUOTE, "ESZ6")
    assert registry.acquire(key) is True
    assert registry.acquire(key) is False
    driver.pump(1)
    assert [a for a in driver.server.audit if a[1] == "md/subscribeQuote"] == [
        (1, "md/subscribeQuote", {"symbol": "ESZ6"})
    ]
    assert registry.release(key) is False
    driver.wake()
    driver.pump(1)
    assert driver.server.held == {("quote", "ESZ6")}
    assert registry.release(key) is True
    driver.wake()
    driver.pump(1)
    assert driver.server.held == set()
    assert registry.release(key) is False  # a release too many changes nothing


def test_restore_is_paced_under_the_rate_budget() -> None:
    registry = SubscriptionRegistry()
    for symbol in range(1, 11):
        registry.acquire(SubKey(Kind.QUOTE, symbol))
    driver = Driver(registry, FakeMdServer(), pace_limit=3)
    driver.connect()
    sent_at = [0.0] * len(driver.server.audit)
    assert len(sent_at) == 3  # the budget's worth, at once

    def restoring() -> bool:
        return driver.chart.node is MdNode.RESTORING

    while restoring():
        before = len(driver.server.audit)
        driver.pump(0.25, step=0.25)
        sent_at += [driver.now] * (len(driver.server.audit) - before)
    assert len(driver.server.held) == 10
    for moment in sent_at:  # never more than 3 in any one-second window
        assert sum(1 for t in sent_at if moment - 1.0 < t <= moment) <= 3


def test_refused_subscription_is_reported_once_and_not_retried_on_this_connection() -> None:
    registry = SubscriptionRegistry()
    key = SubKey(Kind.QUOTE, "BAD")
    registry.acquire(key)
    driver = Driver(registry, FakeMdServer())
    original = driver.server.handle

    def refuse(frame: str, now: float) -> list[str]:
        if "BAD" in frame:
            driver.server.audit.append((1, frame.split("\n")[0], {"symbol": "BAD"}))
            return [
                _a({"s": 200, "i": int(frame.split("\n")[1]), "d": {"errorText": "Unknown symbol"}})
            ]
        return original(frame, now)

    driver.server.handle = refuse  # type: ignore[method-assign]
    driver.connect()
    driver.pump(30)
    assert [f.error for f in driver.failures] == ["Unknown symbol"]
    assert driver.chart.node is MdNode.LIVE  # a refusal still answers the restore
    assert sum(1 for a in driver.server.audit if a[1] == "md/subscribeQuote") == 1


def test_penalised_subscription_waits_and_resends_with_its_ticket() -> None:
    registry = SubscriptionRegistry()
    registry.acquire(SubKey(Kind.QUOTE, "ESZ6"))
    driver = Driver(registry, FakeMdServer())
    original = driver.server.handle
    penalised: list[float] = []

    def penalise(frame: str, now: float) -> list[str]:
        if "subscribeQuote" in frame and not penalised:
            penalised.append(now)
            driver.server.audit.append((1, "md/subscribeQuote", {"symbol": "ESZ6"}))
            rid = int(frame.split("\n")[1])
            return [_a({"s": 200, "i": rid, "d": {"p-ticket": "tk", "p-time": 4}})]
        return original(frame, now)

    driver.server.handle = penalise  # type: ignore[method-assign]
    driver.connect()
    driver.pump(10)
    bodies = [a[2] for a in driver.server.audit if a[1] == "md/subscribeQuote"]
    assert bodies == [{"symbol": "ESZ6"}, {"symbol": "ESZ6", "p-ticket": "tk"}]
    assert driver.server.held == {("quote", "ESZ6")}
    assert driver.registry.counters["penalties"] == 1


@pytest.mark.parametrize("seed", range(30))
def test_generated_scripts_restore_exactly_the_live_set_once(seed: int) -> None:
    rng = random.Random(seed)
    registry = SubscriptionRegistry(stale=StaleConfig(quote=None, dom=None))
    server = FakeMdServer()
    driver = Driver(registry, server, pace_limit=rng.choice([2, 5, 50]))
    universe = key_universe()
    held: Counter[SubKey] = Counter()
    connected = False
    released_while_down: set[SubKey] = set()
    touched: set[SubKey] = set()  # keys whose refs went to 0 or from 0 on this connection
    wanted_at_connect: set[SubKey] = set()
    for _ in range(80):
        op = rng.random()
        if op < 0.35:
            key = rng.choice(universe)
            if held[key] == 0:
                touched.add(key)
                released_while_down.discard(key)
            held[key] += 1
            registry.acquire(key)
        elif op < 0.6 and +held:
            key = rng.choice(sorted(+held, key=str))
            held[key] -= 1
            registry.release(key)
            if held[key] == 0:
                touched.add(key)
                if not connected:
                    released_while_down.add(key)
        elif op < 0.75:
            if connected:
                driver.drop()
                connected = False
            else:
                driver.connect()
                connected = True
                wanted_at_connect = set(+held)
                touched = set()
                # a key released while down is not in the restore set
                assert not (released_while_down & set(registry.wanted()))
                released_while_down = set()
        driver.wake()
        driver.pump(rng.choice([0.5, 2.0, 5.0]))
        if connected:
            driver.pump(30)  # quiet period: everything answered
            assert driver.chart.node is MdNode.LIVE
            wanted = {k for k in universe if held[k] > 0}
            assert set(registry.wanted()) == wanted
            this = [a for a in server.audit if a[0] == server.generation]
            non_chart = {(k.kind.value, k.symbol) for k in wanted if k.kind is not Kind.CHART}
            assert {t for t in server.held if t[0] != "chart"} == non_chart
            charts = sum(1 for t in server.held if t[0] == "chart")
            assert charts == sum(1 for k in wanted if k.kind is Kind.CHART)
            assert server.duplicates == []
            assert server.unknown_unsubscribes == []
            # exactly once: every key wanted at connect and not touched since was asked once
            for key in wanted_at_connect & wanted - touched:
                endpoint = {
                    "quote": "md/subscribeQuote",
                    "dom": "md/subscribeDOM",
                    "histogram": "md/subscribeHistogram",
                    "chart": "md/getChart",
                }[key.kind.value]
                asked = [a for a in this if a[1] == endpoint and a[2]["symbol"] == key.symbol]
                if key.kind is not Kind.CHART:
                    assert len(asked) == 1, (key, asked)


@pytest.mark.parametrize("seed", range(20))
def test_generated_drops_never_duplicate_a_bar_and_mark_every_hole(seed: int) -> None:
    rng = random.Random(seed)
    registry = SubscriptionRegistry()
    server = FakeMdServer()
    driver = Driver(registry, server)
    key = SubKey(Kind.CHART, "ESZ6", MINUTE)
    registry.acquire(key)
    driver.connect()
    expect_gap = 0
    for _ in range(12):
        driver.pump(rng.uniform(10, 200), step=5)
        driver.drop()
        driver.pump(rng.uniform(1, 300), step=5)  # bars form while we are away
        if rng.random() < 0.3:
            server.lose_history = True
            expect_gap += 1
        driver.connect()
    driver.pump(120, step=5)
    bars = [u for u in driver.delivered if isinstance(u.value, Bar)]
    stamps = [u.value.timestamp for u in bars]  # type: ignore[union-attr]
    assert stamps == sorted(set(stamps)), "a bar delivered twice or out of order"
    eohs = [u for u in driver.delivered if isinstance(u.value, EndOfHistory)]
    assert len(eohs) == 1  # the end of history is told once, not after every resume
    holes = 0
    for before, after in itertools.pairwise(bars):
        step = (after.value.timestamp - before.value.timestamp).total_seconds()  # type: ignore[union-attr]
        if step != 60:
            holes += 1
            assert after.gap, f"a hole of {step} s not marked"
    marked = sum(1 for u in bars if u.gap)
    # Every hole is marked; a mark without a hole happens only where the server's history
    # could not prove continuity (it started later than asked, and nothing was missing yet).
    assert holes <= marked <= expect_gap
    assert registry.counters["resume_gaps"] == marked
    if expect_gap == 0:
        assert marked == 0


def test_a_frozen_subscription_is_marked_stale_and_resubscribed_once() -> None:
    registry = SubscriptionRegistry(stale=StaleConfig(quote=20.0))
    frozen = SubKey(Kind.QUOTE, "ESZ6")
    streaming = SubKey(Kind.QUOTE, "NQZ6")
    registry.acquire(frozen)
    registry.acquire(streaming)
    server = FakeMdServer()
    original = server.realtime
    server.realtime = lambda now: [  # type: ignore[method-assign]
        m.replace('{"contractId":101,', '{"contractId":999,') for m in original(now)
    ]
    driver = Driver(registry, server)
    registry.bind(streaming, 102)
    registry.bind(frozen, 101)
    driver.connect()
    driver.pump(200)
    assert registry.is_stale(frozen)
    assert not registry.is_stale(streaming)
    asked = [a for a in server.audit if a[2] == {"symbol": "ESZ6"}]
    assert [a[1] for a in asked] == [
        "md/subscribeQuote",
        "md/unsubscribeQuote",
        "md/subscribeQuote",
    ]
    assert registry.counters["stale_resubscribes"] == 1
    assert driver.chart.node is MdNode.LIVE
    assert server.generation == 1
    server.realtime = original  # type: ignore[method-assign]
    driver.pump(5)
    assert not registry.is_stale(frozen)


def test_unrequested_values_reach_nobody() -> None:
    registry = SubscriptionRegistry()
    driver = Driver(registry, FakeMdServer())
    driver.connect()
    driver.pump(5)
    assert driver.delivered == []
    assert registry.counters["unrouted"] > 0


def test_bad_arguments_fail_fast_with_what_to_fix() -> None:
    for bad in [None, "", True, -3, 1.5]:
        with pytest.raises(ConfigError):
            check_symbol(bad)
    with pytest.raises(ConfigError, match="element_size=1"):
        ChartSpec("Tick", 5, as_much_as_elements=3)
    with pytest.raises(ConfigError, match="time range"):
        ChartSpec("MinuteBar")
    with pytest.raises(ConfigError, match="underlying_type"):
        ChartSpec("Hourly", as_much_as_elements=3)
    spec = ChartSpec(
        "Tick",
        1,
        "UnderlyingUnits",
        closest_timestamp=T0,
        closest_tick_id=5,
        as_far_as_timestamp=T0 - timedelta(hours=1),
        as_much_as_elements=100,
    )
    assert spec.time_range() == {
        "closestTimestamp": "2026-12-07T14:00:00.000Z",
        "closestTickId": 5,
        "asFarAsTimestamp": "2026-12-07T13:00:00.000Z",
        "asMuchAsElements": 100,
    }


def test_answers_of_other_requests_are_not_the_registrys() -> None:
    registry = SubscriptionRegistry()
    assert not registry.owns(5)
    assert registry.server_state(SubKey(Kind.QUOTE, 1)) is ServerState.ABSENT
    assert math.isinf(registry.next_stale_check())


def _hostile(rng: random.Random, ids: list[int]) -> str:
    """One frame a hostile server might send a market-data socket."""
    good_quote = {
        "contractId": rng.choice([101, 102, 999]),
        "timestamp": "2026-12-07T14:00:00Z",
        "entries": {"Bid": {"price": 1}},
    }
    choices: list[Any] = [
        "o",
        "h",
        'c[3000,"x"]',
        "a[",
        "x",
        "",
        _a({"e": "md", "d": {"quotes": [good_quote, {"contractId": None}]}}),
        _a({"e": "md", "d": rng.choice([None, [], "q", {"doms": [{"bids": 3}]}])}),
        _a(
            {
                "e": "chart",
                "d": {"charts": [{"id": rng.choice(ids or [5]), "bars": [{"timestamp": "nope"}]}]},
            }
        ),
        _a({"e": "chart", "d": {"charts": [{"id": rng.choice(ids or [5]), "eoh": True}, 7]}}),
        _a({"e": "clock", "d": rng.choice(["{", '{"t":"2019-08-26T16:43:08Z","s":1}', 5])}),
        _a(
            {
                "s": rng.choice([200, 404, 429]),
                "i": rng.randrange(0, 40),
                "d": rng.choice([None, {}, "x", {"p-ticket": 5, "p-time": "x"}]),
            }
        ),
        _a({"e": "props", "d": {}}),
        _a({"e": "shutdown", "d": {"reasonCode": 7}}),
        b"\x00binary",
    ]
    message: str = rng.choice(choices)
    return message


@pytest.mark.parametrize("seed", range(20))
def test_hostile_frames_never_crash_and_never_reach_a_consumer_unasked(seed: int) -> None:
    rng = random.Random(seed)
    registry = SubscriptionRegistry()
    driver = Driver(registry, FakeMdServer())
    key = SubKey(Kind.QUOTE, "ESZ6")
    registry.acquire(key)
    registry.bind(key, 101)
    driver.connect()
    driver.pump(2)
    reconnects = 0

    def live() -> bool:
        return driver.chart.node is MdNode.LIVE

    for _ in range(300):
        if not live():  # a close, shutdown or bad answer ended it: the next connection
            reconnects += 1
            driver.drop()
            driver.connect()
            driver.pump(1)
        message = _hostile(rng, [])
        assert driver.session is not None
        for event in driver.session.receive(message, driver.now):
            if not live():
                break
            driver.fire(event)
        driver.pump(0.1, step=0.1)
    assert driver.generation == reconnects + 1
    assert registry.server_state(key) in (ServerState.ACTIVE, ServerState.SUBSCRIBING)
    for update in driver.delivered:
        assert update.key == key
        assert getattr(update.value, "contract_id", 101) == 101


def test_the_replay_table_is_total_and_syncs_after_the_clock() -> None:
    from trio_tradovate.statechart import REPLAY_TABLE, Node

    for node in REPLAY_TABLE.nodes:
        for trigger in Trigger:
            assert REPLAY_TABLE.rules_for(node, trigger)
    [restored] = REPLAY_TABLE.rules_for(MdNode.RESTORING, Trigger.RESTORED)
    assert restored.dest is Node.SYNC_PACED
    [props] = REPLAY_TABLE.rules_for(MdNode.RESTORING, Trigger.PROPS)
    assert props.outcome is Outcome.IGNORE  # no sync asked yet: nobody's props
    for node in (MdNode.RESTORING, Node.SYNC_SENT, Node.LIVE):
        [data] = REPLAY_TABLE.rules_for(node, Trigger.MARKET_DATA)
        assert data.action is Action.DELIVER
