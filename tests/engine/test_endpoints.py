"""``engine.api``: typed answers for the read-only endpoints (issue 12, point 3, last sentence).

Against the in-process simulator in virtual time: each method returns the entity classes the
store's views use, built from what the server holds (``sim.truth()``), through the engine's
request queue. A scripted server (a few lines of trio-websocket on memory streams) answers
with shapes the simulator never sends, to show they become ``RemoteProtocolError`` or
``RequestError``, never a ``KeyError``/``TypeError``. Bad arguments fail before anything is
sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from trio_tradovate import (
    ConfigError,
    Engine,
    EngineConfig,
    RemoteProtocolError,
    RequestError,
    State,
    UserInfo,
    open_engine,
)
from trio_tradovate.endpoints import parse_entities, parse_entity, parse_user_info
from trio_tradovate.entities import (
    Account,
    CashBalance,
    Contract,
    EntityView,
    Fill,
    Order,
    Position,
    Product,
)
from trio_tradovate.sim import Simulator

from ..conftest import config_for


@pytest.fixture
async def engine(sim: Simulator) -> AsyncIterator[Engine]:
    sim.pause_activity()  # the world holds still while we compare it with the answers
    async with open_engine(config_for(sim)) as running:
        await running.wait_for(State.LIVE)
        yield running


def truth_of(sim: Simulator, entity_type: str) -> dict[int, dict[str, Any]]:
    return {i: v for (t, i), v in sim.truth().items() if t == entity_type}


def sent(sim: Simulator, endpoint: str) -> list[str]:
    """The queries of every ``endpoint`` request the simulator received (all sockets)."""
    return [r.query for audit in sim.sockets for r in audit.requests if r.endpoint == endpoint]


# --------------------------------------------------------------------- against the simulator


async def test_lists_are_typed_views_of_what_the_server_holds(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    cases: list[tuple[Callable[[], Awaitable[tuple[EntityView, ...]]], type[EntityView]]] = [
        (engine.api.account_list, Account),
        (engine.api.cash_balance_list, CashBalance),
        (engine.api.position_list, Position),
        (engine.api.order_list, Order),
        (engine.api.fill_list, Fill),
    ]
    for method, cls in cases:
        got = await method()
        assert isinstance(got, tuple)
        assert all(type(v) is cls for v in got)
        truth = truth_of(sim, cls.ENTITY_TYPE)
        assert {v.id: dict(v.raw) for v in got} == truth, cls.__name__
        assert sent(sim, f"{cls.ENTITY_TYPE.lower()}/list")  # it went over the websocket
    accounts = await engine.api.account_list()
    assert accounts, "the simulator has accounts"
    assert accounts == tuple(Account.from_raw(truth_of(sim, "account")[a.id]) for a in accounts)
    assert {a.name for a in accounts} == {v["name"] for v in truth_of(sim, "account").values()}


async def test_item_and_find_return_one_entity(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    account_id = min(truth_of(sim, "account"))
    account = await engine.api.account_item(account_id)
    assert (type(account), account.id) == (Account, account_id)
    assert sent(sim, "account/item") == [f"id={account_id}"]

    contract = await engine.api.contract_find("ESZ6")
    assert type(contract) is Contract
    assert contract.name == "ESZ6"
    assert contract.id == sim.contract_id("ESZ6")
    assert contract.provider_tick_size == 0.25
    assert await engine.api.contract_item(contract.id) == contract
    assert sent(sim, "contract/find") == ["name=ESZ6"]

    product = await engine.api.product_find("ES")
    assert (type(product), product.name, product.value_per_point) == (Product, "ES", 50.0)
    assert await engine.api.product_item(product.id) == product

    order_ids = sorted(truth_of(sim, "order"))
    if order_ids:
        assert (await engine.api.order_item(order_ids[0])).id == order_ids[0]


async def test_auth_me_names_the_user(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    me = await engine.api.auth_me()
    assert type(me) is UserInfo
    assert me.user_id == sim.user_id
    assert me.name == "demo-user"
    assert me.email_verified is True


async def test_an_unknown_id_or_name_is_the_servers_404(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(RequestError) as caught:
        await engine.api.contract_find("XXZ9")
    assert (caught.value.endpoint, caught.value.status) == ("contract/find", 404)
    with pytest.raises(RequestError) as item:
        await engine.api.account_item(1)
    assert item.value.status == 404


async def test_the_requests_share_the_engines_queue_and_penalties(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    """A p-ticket on contract/find is waited out and resent by Engine.request, as for raw calls."""
    sim.penalize_requests(endpoint="contract/find", p_time=6)
    start = trio.current_time()
    contract = await engine.api.contract_find("MESZ6", timeout=60)
    assert contract.name == "MESZ6"
    assert trio.current_time() - start >= 6
    assert sent(sim, "contract/find") == ["name=MESZ6", "name=MESZ6"]


async def test_a_lookup_whose_socket_dies_is_resent_on_the_next_one(
    sim: Simulator, engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    """Read-only, so Engine.request resends it after the reconnect: one call, one answer."""
    generation = engine.generation
    sim.drop_on_request("contract/find", processed=False)
    contract = await engine.api.contract_find("NQZ6", timeout=60)
    assert (contract.name, contract.id) == ("NQZ6", sim.contract_id("NQZ6"))
    assert engine.generation > generation  # it really went through a new connection
    assert sent(sim, "contract/find") == ["name=NQZ6"]  # the first never reached the server


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda api: api.account_item("29996000"), "account_id must be a positive integer id"),
        (lambda api: api.account_item(True), "account_id must be a positive integer id"),
        (lambda api: api.contract_item(0), "contract_id must be a positive integer id"),
        (lambda api: api.order_item(-3), "order_id must be a positive integer id"),
        (lambda api: api.product_item(2.5), "product_id must be a positive integer id"),
        (lambda api: api.contract_find(""), "name must be a symbol such as 'ESZ6'"),
        (lambda api: api.contract_find(" ESZ6"), "no surrounding spaces"),
        (lambda api: api.contract_find("ES\nZ6"), "printable"),
        (lambda api: api.contract_find(42), "name must be a symbol"),
        (lambda api: api.product_find("E" * 65), "at most 64"),
        (lambda api: api.account_list(timeout=0), "timeout must be a positive number"),
    ],
)
async def test_a_bad_argument_fails_fast_and_sends_nothing(
    sim: Simulator,
    engine: Engine,
    autojump_clock: trio.testing.MockClock,
    call: Callable[[Any], Any],
    message: str,
) -> None:
    before = sum(len(audit.requests) for audit in sim.sockets)
    start = trio.current_time()
    with pytest.raises(ConfigError, match=message):
        await call(engine.api)
    assert trio.current_time() == start
    assert sum(len(audit.requests) for audit in sim.sockets) == before


# ------------------------------------------------------------------ malformed answers, scripted


class ScriptedServer:
    """A websocket server on memory streams that authorizes, syncs an empty account and then
    answers each endpoint (lower-case) with ``answers[endpoint]`` as ``d`` of an ``s:200``."""

    def __init__(self, answers: dict[str, Any], nursery: trio.Nursery) -> None:
        self.answers = answers
        self.nursery = nursery
        self.requests: list[str] = []

    async def connect(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        upgrade = await trio_websocket.wrap_server_stream(self.nursery, stream)
        ws = await upgrade.accept()
        await ws.send_message("o")
        while True:
            try:
                text = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            if not isinstance(text, str) or "\n" not in text:
                await ws.send_message("h")  # a client heartbeat: answer in kind
                continue
            endpoint, request_id, _, _ = text.split("\n", 3)
            lower = endpoint.lower()
            self.requests.append(lower)
            message: dict[str, Any] = {"i": int(request_id), "s": 200}
            if lower == "user/syncrequest":
                message["d"] = {"users": [{"id": 5, "name": "scripted"}], "accounts": []}
            elif lower != "authorize":
                message["d"] = self.answers[lower]
            await ws.send_message("a" + orjson.dumps([message]).decode())


@asynccontextmanager
async def scripted_engine(answers: dict[str, Any]) -> AsyncIterator[Engine]:
    async with trio.open_nursery() as nursery:
        server = ScriptedServer(answers, nursery)
        config = EngineConfig(
            rest_url="https://demo.tradovateapi.com/v1",
            access_token="scripted-token",
            user_id=5,
            connector=server.connect,
            http_transport=httpx.MockTransport(lambda _: httpx.Response(404)),
        )
        async with open_engine(config) as engine:
            await engine.wait_for(State.LIVE)
            yield engine
        nursery.cancel_scope.cancel()


ESZ6 = {"id": 7, "name": "ESZ6", "providerTickSize": 0.25}


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        ([ESZ6], "non-object"),
        ("ESZ6", "non-object"),
        (None, "non-object"),
        ({"name": "ESZ6"}, "without an integer id"),
        ({"id": "7", "name": "ESZ6"}, "without an integer id"),
        ({"id": True, "name": "ESZ6"}, "without an integer id"),
        ({"id": 7, "name": "NQZ6"}, "with another name"),
        ({"id": 7}, "with another name"),
    ],
)
async def test_a_malformed_find_answer_is_a_remote_protocol_error(
    autojump_clock: trio.testing.MockClock, answer: Any, what: str
) -> None:
    async with scripted_engine({"contract/find": answer}) as engine:
        with pytest.raises(RemoteProtocolError, match=what) as caught:
            await engine.api.contract_find("ESZ6")
        assert "contract/find" in str(caught.value)
        assert engine.state is State.LIVE  # a bad answer ends the call, not the connection


async def test_malformed_lists_items_and_me_are_remote_protocol_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers = {
        "account/list": [{"id": 1, "name": "a"}, "junk"],
        "position/list": {"id": 1},
        "contract/item": {"id": 8, "name": "ESZ6"},
        "auth/me": {"name": "no id"},
        "product/find": {"errorText": "Access is denied"},
        "fill/list": [],
    }
    async with scripted_engine(answers) as engine:
        with pytest.raises(RemoteProtocolError, match="non-object where a account"):
            await engine.api.account_list()
        with pytest.raises(RemoteProtocolError, match="non-list"):
            await engine.api.position_list()
        with pytest.raises(RemoteProtocolError, match="for id 7 with another id"):
            await engine.api.contract_item(7)
        with pytest.raises(RemoteProtocolError, match="userId"):
            await engine.api.auth_me()
        with pytest.raises(RequestError) as refused:
            await engine.api.product_find("ES")
        assert (refused.value.status, refused.value.text) == (200, "Access is denied")
        assert await engine.api.fill_list() == ()  # and the engine still serves good answers
        assert engine.state is State.LIVE


# ------------------------------------------------------------------------- the parsers alone


def test_parsers_keep_the_raw_answer_and_reject_shapes_they_cannot_read() -> None:
    contract = parse_entity(Contract, ESZ6, "contract/find")
    assert (contract.id, contract.name, contract.contract_maturity_id) == (7, "ESZ6", None)
    assert contract.raw == ESZ6
    assert parse_entities(Contract, [ESZ6, ESZ6], "contract/list") == (contract, contract)
    me = parse_user_info({"userId": 3, "name": "n", "isTrial": "no"})
    assert (me.user_id, me.name, me.is_trial) == (3, "n", None)  # a wrong type becomes None
    for bad in (1.5, [1], {"id": 1.0}, {"id": None}):
        with pytest.raises(RemoteProtocolError):
            parse_entity(Contract, bad, "contract/item")
    with pytest.raises(RemoteProtocolError, match=r"\.\.\. \("):  # the excerpt is truncated
        parse_entities(Contract, [{"name": "x" * 500}], "contract/list")
