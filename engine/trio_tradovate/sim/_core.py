"""Sans-I/O core of the simulator: one :class:`SimCore` per simulated environment and one
:class:`SimSession` per websocket.

Nothing here awaits or reads a clock: callers pass ``now`` (trio time) and drain each session's
``outbox`` of :class:`SendFrame`/:class:`CloseSocket` actions. Mutations made through one socket
(or REST, or the activity generator) are fanned out synchronously to every synced session's
outbox, which is what keeps "snapshot + every props event" equal to :meth:`SimCore.truth`.

Sync options where docs/protocol.md is silent (§6, §13.7) — the simulator's choices:

``splitResponses: true``
    The snapshot is sent as ``SimConfig.split_parts`` (default 3) separate response messages,
    each ``{"i": <the syncrequest id>, "s": 200, "d": <SyncMessage>}`` in its own ``a[...]``
    frame, back to back, before any later ``props`` event. Every part carries *every*
    collection key (empty arrays where it holds nothing; the OAS SyncMessage marks ``users``
    and ``contractGroups`` required), and the entities, in collection order then id order, are
    dealt out in contiguous near-equal runs, so a collection may straddle two parts. There is
    no completion marker and no part count, as documented (§6: "no completion marker").
    Uncertainty: the real server's cut (per collection, per size, per entity count) and
    whether it repeats the ``i`` are undocumented (single 3P source); this reading is the one
    that is faithful to "arrays keyed by plural collection name" and that punishes the two
    likely client bugs: taking the first part as the whole snapshot, and *replacing* a
    collection per part instead of upserting into it. Correct clients upsert every part.
``shardingExpression``
    ``{"expressionType": "modAccountId"|"modUserId", "divisor", "remainder"}`` (all three
    required, ``0 <= remainder < divisor``). A socket receives, in its snapshot and in later
    ``props``, only entities whose owning account id (or user id) satisfies
    ``id % divisor == remainder``. Entities owned by no account or user (contracts, products,
    exchanges, currencies, contract groups ...) are sent to *every* shard, so each shard can
    resolve the references its own entities make; the union of all shards is the full world.
    A sharded sync may name neither ``users`` nor ``accounts`` (an organisation-wide B2B
    sync); the simulated organisation is its one user.
Combination rules (§6, P-SYNC), each a ``s:400`` with a string ``d``: ``users`` with
``shardingExpression`` or with ``entityTypes``; ``accounts`` with ``shardingExpression``; a
``shardingExpression`` with a missing or ill-typed field.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import parse_qs, parse_qsl, urlencode

import orjson

from ._audit import MdRecord, PenaltyRecord, RequestRecord, RestRecord, RetryRecord, SocketAudit
from ._auth import AuthRegistry, Token
from ._config import SimConfig
from ._feed import FeedFaults, MdFeed
from ._inject import malformed_frame
from ._limits import Decision, RequestGate
from ._market import Instrument, Market
from ._replay import REPLAY_ENDPOINTS, ReplayClock, ReplayError, handle_replay
from ._world import COLLECTIONS, OrderRejected, OrderTerms, Props, WallClock, World

__all__ = ["CloseSocket", "SendFrame", "SimCore", "SimSession"]

logger = logging.getLogger("trio_tradovate.sim")

_INVALID_TOKEN: Final = "Invalid access token"  # docs/protocol.md §4 (P-S2 wording)
_BAD_LOGIN: Final = (
    "Incorrect username or password. Please try again, noting that passwords are case-sensitive."
)
_ORDER_TYPES: Final = frozenset(
    {"Market", "Limit", "Stop", "StopLimit", "TrailingStop", "TrailingStopLimit", "MIT", "QTS"}
)
#: Which order types need ``price`` and which ``stopPrice`` (Tradovate's placeOrder reference:
#: https://partner.tradovate.com/api/rest-api-endpoints/orders/place-order).
_NEEDS_PRICE: Final = frozenset({"Limit", "StopLimit", "TrailingStopLimit", "MIT"})
_NEEDS_STOP: Final = frozenset({"Stop", "StopLimit", "TrailingStop", "TrailingStopLimit"})
_TIME_IN_FORCE: Final = frozenset({"Day", "FOK", "GTC", "GTD", "IOC"})
_TYPES_BY_LOWER: Final = {singular.lower(): singular for singular in COLLECTIONS.values()}
_MISSING: Final = object()
_TICKET: Final = "p-ticket"  # §8
#: How many props messages each socket remembers for ``replay_props``.
_REPLAY_MEMORY: Final = 10_000
#: The non-object element of ``bad_batch`` (§2 says every element is an object).
_BAD_ELEMENT: Final = "junk"


@dataclass(frozen=True)
class SendFrame:
    """Write one SockJS-style text frame (§2); ``kind`` is its first character."""

    text: str

    @property
    def kind(self) -> str:
        return self.text[:1]


@dataclass(frozen=True)
class CloseSocket:
    """Send ``c[code,"reason"]`` then close the websocket with 1000 (§12)."""

    code: int
    reason: str


Action = SendFrame | CloseSocket


class _BadRequest(Exception):
    """Reply ``s:400`` with this text as ``d`` (§3: non-2xx ``d`` is a string)."""


def _take_ticket(body: str) -> tuple[str, str | None]:
    """Split ``"p-ticket"`` off a JSON-object body (§8: "the original body plus p-ticket").

    Returns the body the endpoint should see and the ticket, if one was presented.
    """
    if not body.lstrip().startswith("{"):
        return body, None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, None
    if not isinstance(value, dict) or _TICKET not in value:
        return body, None
    ticket = value.pop(_TICKET)
    return orjson.dumps(value).decode(), str(ticket)


def _take_query_ticket(query: str) -> tuple[str, str | None]:
    """§13.12: where a GET carries its ticket is undocumented; the simulator accepts a
    ``p-ticket`` query parameter (and, like POST, a JSON body)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    tickets = [v for k, v in pairs if k == _TICKET]
    if not tickets:
        return query, None
    return urlencode([(k, v) for k, v in pairs if k != _TICKET]), tickets[-1]


@dataclass
class _RestNote:
    """What the gate did to one REST request, for :class:`RestRecord`."""

    penalty: str | None = None
    ticket: str | None = None
    accepted: bool | None = None


@dataclass(frozen=True)
class _Shard:
    """A ``shardingExpression`` (§6): keep ids with ``id % divisor == remainder``."""

    by_user: bool
    divisor: int
    remainder: int


@dataclass(frozen=True)
class _Subscription:
    accounts: set[int] | None
    types: set[str] | None
    shard: _Shard | None
    split: bool


def _json_object(body: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"Invalid JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise _BadRequest("Request body must be a JSON object")
    return value


class SimCore:
    """World, tokens, live sessions and fault flags of one simulated environment."""

    def __init__(self, config: SimConfig, now: float) -> None:
        self.config = config
        self.clock = WallClock(config.epoch, now)
        self.world = World(
            rng=random.Random(f"{config.seed}:world"),
            clock=self.clock,
            username=config.username,
            accounts=config.accounts,
            batch_probability=config.batch_probability,
            now=now,
        )
        self.auth = AuthRegistry(
            rng=random.Random(f"{config.seed}:tokens"),
            lifetime=config.token_lifetime,
            max_sessions=config.max_sessions,
        )
        self.sessions: list[SimSession] = []
        self.audits: list[SocketAudit] = []
        self.stalled = False
        self.ignore_authorize = False
        self.activity_paused = False
        #: §8 throttling shared by REST and every websocket (Tradovate counts per user/IP).
        self.gate = RequestGate(
            rng=random.Random(f"{config.seed}:tickets"),
            limits=config.request_limits,
            limit_p_time=config.limit_p_time,
        )
        #: Every fault injected so far, by kind.
        self.injected: Counter[str] = Counter()
        self.rest_log: list[RestRecord] = []
        self.duplicate_props = False
        self.fail_renewals = False
        #: While set, the trio layer writes every chunk in pieces of at most this many bytes.
        self.split_max_bytes: int | None = None
        self.market = Market(
            seed=config.seed,
            instruments=[Instrument(*spec) for spec in self.world.contract_specs()],
            epoch=self.clock.at(now),
            history_days=config.md_history_days,
            interval=config.md_step_interval,
        )
        self.feed_faults = FeedFaults()
        #: Every market-data request on any socket, in arrival order.
        self.md_log: list[MdRecord] = []

    # -- sockets ------------------------------------------------------------------------------

    def open_session(self, now: float, role: str = "user") -> SimSession:
        """Register a newly accepted websocket (``role``: ``"user"``, ``"md"`` or
        ``"replay"``); queues the ``o`` frame."""
        audit = SocketAudit(index=len(self.audits), opened_at=now, role=role)
        self.audits.append(audit)
        session = SimSession(self, audit, now)
        self.sessions.append(session)
        return session

    def wall(self, now: float) -> float:
        """The simulated wall time at trio time ``now``, in seconds since the Unix epoch."""
        return self.clock.at(now).timestamp()

    def market_active(self) -> bool:
        """Whether any live socket has a market-data subscription (the market task idles
        otherwise)."""
        return any(
            s.feed is not None and (s.feed.active() or s.replay_clock is not None)
            for s in self.sessions
        )

    def live_subscriptions(self) -> dict[int, frozenset[tuple[str, str]]]:
        return {
            s.audit.index: s.feed.live()
            for s in self.sessions
            if s.feed is not None and not s.closing
        }

    def market_tick(self, now: float) -> None:
        """Queue on every market-data socket what its subscriptions produced since the last
        tick."""
        for session in self.sessions:
            session.market_tick(now)

    def broadcast(self, batches: list[list[Props]], now: float) -> None:
        """Queue each batch, in order, on every live synced session (one frame per batch)."""
        for batch in batches:
            for session in self.sessions:
                session.push(batch, now)

    def close_all(self, why: str, now: float, code: int = 3000, reason: str = "Go away!") -> None:
        for session in self.sessions:
            session.close(why, now, code=code, reason=reason)

    def shutdown_all(self, now: float, reason_code: str, reason: str | None) -> None:
        """§7: a ``shutdown`` event, then ``c[3000,"Go away!"]`` and close."""
        payload: dict[str, Any] = {"reasonCode": reason_code}
        if reason is not None:
            payload["reason"] = reason
        for session in self.sessions:
            session.send_messages([{"e": "shutdown", "d": payload}], now)
            session.close("shutdown", now)

    def inject_frame(self, text: str, now: float) -> None:
        """Queue ``text`` verbatim, as one websocket text message, on every live socket."""
        for session in self.sessions:
            session.send_raw(text, now)

    def inject_malformed(self, kind: str, now: float) -> None:
        """Queue one malformed frame of ``kind`` (see ``_inject``) on every live socket."""
        if kind == "bad_batch":
            self._bad_batch(now)
            return
        text = malformed_frame(
            kind,
            account_id=self.world.account_ids()[0],
            oversized_bytes=self.config.oversized_bytes,
        )
        self.inject_frame(text, now)

    def _bad_batch(self, now: float) -> None:
        """Two real mutations (two new working Limit orders, one ``props`` each) sent as
        ``a[props, "junk", props]``: a client must skip only the bad element to match truth."""
        account = self.world.account_ids()[0]
        contract = int(self.world.entities("contract")[0]["id"])
        events: list[Props] = []
        for action in ("Buy", "Sell"):
            _, batches = self.world.place_order(
                now,
                account_id=account,
                action=action,
                contract_id=contract,
                qty=1,
                order_type="Limit",
            )
            events.extend(p for batch in batches for p in batch)
        for session in self.sessions:
            session.push_bad_batch(events, now)

    def replay_props(self, count: int, now: float) -> None:
        """Every socket re-sends its own last ``count`` props messages (one frame)."""
        for session in self.sessions:
            session.replay_props(count, now)

    def activity(self, now: float) -> None:
        """One generator tick (skipped while paused)."""
        if not self.activity_paused:
            self.broadcast(self.world.activity_step(now), now)

    # -- tokens ---------------------------------------------------------------------------

    def issue_token(self, now: float) -> str:
        """A valid token in an uncounted session (never evicted, never evicts)."""
        session_id, _ = self.auth.open_session(now, counted=False)
        return self.auth.mint(session_id, now).value

    def _token_response(self, token: Token, md_token: Token) -> dict[str, Any]:
        return {
            "accessToken": token.value,
            "mdAccessToken": md_token.value,
            "expirationTime": self.clock.iso(token.expires_at),
            "passwordExpirationTime": (
                self.clock.at(token.issued_at) + timedelta(days=365)
            ).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "userStatus": "Active",
            "userId": self.world.user_id,
            "name": self.config.username,
            "hasLive": False,
        }

    def _me(self) -> dict[str, Any]:
        return {
            "userId": self.world.user_id,
            "name": self.config.username,
            "fullName": "Demo User",
            "email": f"{self.config.username}@example.invalid",
            "emailVerified": True,
            "isTrial": False,
        }

    # -- REST (§9) -----------------------------------------------------------------------

    def handle_rest(
        self, method: str, path: str, query: str, authorization: str | None, body: bytes, now: float
    ) -> tuple[int, Any]:
        """Answer one HTTP request; returns (status, JSON value or error text) and appends a
        :class:`RestRecord` (never the body or headers) to :attr:`rest_log`."""
        note = _RestNote()
        status, data = self._rest(method, path, query, authorization, body, now, note)
        self.rest_log.append(
            RestRecord(now, method, path, status, note.penalty, note.ticket, note.accepted)
        )
        return status, data

    def _rest(
        self,
        method: str,
        path: str,
        query: str,
        authorization: str | None,
        body: bytes,
        now: float,
        note: _RestNote,
    ) -> tuple[int, Any]:
        if not path.startswith("/v1/"):
            return 404, f"Not found: {path}"
        endpoint = path.removeprefix("/v1/")
        lower = endpoint.lower()
        ticket: str | None = None
        try:
            text, ticket = _take_ticket(body.decode())
            body = text.encode()
        except UnicodeDecodeError:
            pass
        if ticket is None:
            query, ticket = _take_query_ticket(query)
        decision = self.gate.check(lower, "rest", ticket, now)
        if decision.retry is not None:
            note.ticket, note.accepted = decision.retry.ticket, decision.retry.accepted
        if decision.kind == "429":
            return 429, ""  # §8 P-RL-old: HTTP 429 with an empty body
        if decision.kind == "penalty":
            assert decision.ticket is not None
            note.penalty = decision.ticket.value
            return 200, decision.ticket.payload()  # §8: HTTP 200, the request was not handled
        if lower == "auth/accesstokenrequest":
            if method != "POST":
                return 405, "Method not allowed"
            return self._access_token_request(body, now)
        bearer = (authorization or "").removeprefix("Bearer ").strip()
        token = self.auth.validate(bearer, now) if bearer else None
        if token is None:
            # docs/protocol.md §9: expired token on REST -> 401.
            return 401, "Access is denied"
        if lower == "auth/renewaccesstoken":
            if self.fail_renewals:
                return 401, "Access is denied"  # fault control: renewal refused
            # §9: a renewed token extends the same session instead of opening a new one.
            new = self.auth.mint(token.session_id, now)
            md = self.auth.mint(token.session_id, now)
            return 200, self._token_response(new, md)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return 400, "Request body is not UTF-8"
        status, data, batches = self.handle_endpoint(endpoint, query, text, now, None)
        self.broadcast(batches, now)
        return status, data

    def _access_token_request(self, body: bytes, now: float) -> tuple[int, Any]:
        try:
            request = _json_object(body.decode())
        except (_BadRequest, UnicodeDecodeError) as exc:
            return 400, str(exc)
        cfg = self.config
        ok = (
            request.get("name") == cfg.username
            and request.get("password") == cfg.password
            and (cfg.app_id is None or request.get("appId") == cfg.app_id)
            and (cfg.sec is None or request.get("sec") == cfg.sec)
        )
        if not ok:
            logger.info("accesstokenrequest rejected for name=%r", request.get("name"))
            # §9: failure is HTTP 200 with errorText.
            return 200, {"errorText": _BAD_LOGIN}
        session_id, evicted = self.auth.open_session(now)
        token = self.auth.mint(session_id, now)
        md = self.auth.mint(session_id, now)
        if evicted:
            logger.info("session cap reached: evicting sessions %s", evicted)
            for session in self.sessions:
                if session.token is not None and session.token.session_id in evicted:
                    session.close("evicted", now)
        return 200, self._token_response(token, md)

    # -- REST-like endpoints, shared by REST and websocket (§1: WS mimics REST) -----------

    def handle_endpoint(
        self, endpoint: str, query: str, body: str, now: float, violations: list[str] | None
    ) -> tuple[int, Any, list[list[Props]]]:
        """Dispatch one endpoint; returns (status, d, batches to broadcast)."""
        lower = endpoint.lower()
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            if lower == "auth/me":
                return 200, self._me(), []
            if lower == "order/placeorder":
                return self._place_order(_json_object(body), now, violations)
            if lower == "order/cancelorder":
                return self._cancel_order(_json_object(body), now)
            if lower == "order/placeoso":
                return self._place_oso(_json_object(body), now, violations)
            if lower == "order/modifyorder":
                return self._modify_order(_json_object(body), now)
            if lower == "order/liquidateposition":
                return self._liquidate(_json_object(body), now, violations)
            entity_name, _, operation = lower.partition("/")
            entity_type = _TYPES_BY_LOWER.get(entity_name)
            if entity_type is not None:
                found = self._entity_op(entity_type, operation, params)
                if found is not None:
                    return found[0], found[1], []
        except _BadRequest as exc:
            return 400, str(exc), []
        return 404, f"Not found: {endpoint}", []

    def _entity_op(
        self, entity_type: str, operation: str, params: dict[str, str]
    ) -> tuple[int, Any] | None:
        entities = self.world.entities(entity_type)
        if operation == "list":
            return 200, entities
        if operation == "item":
            wanted = self._int_param(params, "id")
            match = next((e for e in entities if e["id"] == wanted), None)
            return (
                (200, match) if match is not None else (404, f"Not found: {entity_type} {wanted}")
            )
        if operation == "items":
            raw = params.get("ids", "")
            try:
                ids = {int(part) for part in raw.split(",") if part}
            except ValueError as exc:
                raise _BadRequest("ids must be comma-separated integers") from exc
            return 200, [e for e in entities if e["id"] in ids]
        if operation == "find":
            name = params.get("name", "")
            match = next((e for e in entities if e.get("name") == name), None)
            return (200, match) if match is not None else (404, f"Not found: {name}")
        return None

    @staticmethod
    def _int_param(params: dict[str, str], key: str) -> int:
        try:
            return int(params[key])
        except (KeyError, ValueError) as exc:
            raise _BadRequest(f"{key} must be an integer") from exc

    def _cancel_order(
        self, request: dict[str, Any], now: float
    ) -> tuple[int, Any, list[list[Props]]]:
        order_id = request.get("orderId")
        if not isinstance(order_id, int):
            raise _BadRequest("orderId is required")
        # Only requests that create orders are checked for isAutomated (placeOrder, placeOSO,
        # liquidatePosition): the best-practices page speaks of placing orders.
        automated = _automated(request, None)
        try:
            batches = self.world.cancel_order(now, order_id, is_automated=automated, command=True)
        except OrderRejected as exc:
            return 200, _refusal(exc), []
        return 200, {"commandId": batches[0][0].entity["id"]}, batches

    def _modify_order(
        self, request: dict[str, Any], now: float
    ) -> tuple[int, Any, list[list[Props]]]:
        order_id = request.get("orderId")
        if not isinstance(order_id, int) or isinstance(order_id, bool):
            raise _BadRequest("orderId is required")
        qty = _quantity(request)
        terms = _terms(request, _automated(request, None))  # see _cancel_order
        try:
            command_id, batches = self.world.modify_order(now, order_id, qty, terms)
        except OrderRejected as exc:
            return 200, _refusal(exc), []
        return 200, {"commandId": command_id}, batches

    def _liquidate(
        self, request: dict[str, Any], now: float, violations: list[str] | None
    ) -> tuple[int, Any, list[list[Props]]]:
        """Cancel the account's live orders in the contract and close the position. A flat
        position is no error here (Tradovate does not document that case): the answer then
        has no ``orderId``."""
        account_id, contract_id = request.get("accountId"), request.get("contractId")
        for name, value in (("accountId", account_id), ("contractId", contract_id)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise _BadRequest(f"{name} is required")
        if not isinstance(request.get("admin"), bool):
            raise _BadRequest("admin is required")
        assert isinstance(account_id, int)
        assert isinstance(contract_id, int)
        automated = _automated(request, violations)
        if self.world.find_account(account_id) is None:
            return 200, {"failureReason": "UnknownReason", "failureText": "Access is denied"}, []
        if self.world.find_contract(contract_id) is None:
            text = f"Unknown contract {contract_id}"
            return 200, {"failureReason": "InvalidContract", "failureText": text}, []
        order_id, batches = self.world.liquidate(now, account_id, contract_id, automated)
        return 200, ({"orderId": order_id} if order_id is not None else {}), batches

    def _order_target(
        self, request: dict[str, Any]
    ) -> tuple[str, int, tuple[int, int] | dict[str, Any]]:
        """The checks every new order shares: ``(action, qty, (account, contract))``, or a
        refusal body in place of the pair (Tradovate refuses these inside an ``s:200``)."""
        action = request.get("action")
        if action not in ("Buy", "Sell"):
            raise _BadRequest("action must be Buy or Sell")
        qty = _quantity(request)
        if "symbol" not in request:
            raise _BadRequest("symbol is required")
        account = self.world.find_account(request.get("accountId", request.get("accountSpec")))
        if account is None:
            return (
                str(action),
                qty,
                {"failureReason": "UnknownReason", "failureText": "Access is denied"},
            )
        contract = self.world.find_contract(request["symbol"])
        if contract is None:
            text = f"Unknown symbol {request['symbol']}"
            return str(action), qty, {"failureReason": "UnknownReason", "failureText": text}
        return str(action), qty, (int(account["id"]), int(contract["id"]))

    def _place_order(
        self, request: dict[str, Any], now: float, violations: list[str] | None
    ) -> tuple[int, Any, list[list[Props]]]:
        action, qty, target = self._order_target(request)
        terms = _terms(request, _automated(request, violations))
        if isinstance(target, dict):
            return 200, target, []
        refused = _price_refusal(terms)
        if refused is not None:
            return 200, refused, []
        order_id, batches = self.world.place_order(
            now,
            account_id=target[0],
            action=action,
            contract_id=target[1],
            qty=qty,
            order_type=terms.order_type,
            terms=terms,
        )
        return 200, {"orderId": order_id}, batches

    def _place_oso(
        self, request: dict[str, Any], now: float, violations: list[str] | None
    ) -> tuple[int, Any, list[list[Props]]]:
        """``order/placeOSO`` (https://partner.tradovate.com/api/rest-api-endpoints/orders/place-oso):
        the entry order's fields plus ``bracket1`` (required) and ``bracket2`` (optional), each
        an action, an order type and its prices, sent once the entry fills."""
        action, qty, target = self._order_target(request)
        automated = _automated(request, violations)
        terms = _terms(request, automated)
        brackets: list[tuple[str, OrderTerms]] = []
        for name in ("bracket1", "bracket2"):
            bracket = request.get(name)
            if bracket is None and name == "bracket2":
                continue
            if not isinstance(bracket, dict):
                raise _BadRequest(f"{name} must be an object")
            if bracket.get("action") not in ("Buy", "Sell"):
                raise _BadRequest(f"{name}.action must be Buy or Sell")
            brackets.append((str(bracket["action"]), _terms(bracket, automated)))
        if isinstance(target, dict):
            return 200, target, []
        for bracket_terms in (terms, *(b for _, b in brackets)):
            refused = _price_refusal(bracket_terms)
            if refused is not None:
                return 200, refused, []
        ids, batches = self.world.place_oso(
            now,
            account_id=target[0],
            action=action,
            contract_id=target[1],
            qty=qty,
            terms=terms,
            brackets=brackets,
        )
        answer: dict[str, Any] = {"orderId": ids[0], "oso1Id": ids[1]}
        if len(ids) > 2:
            answer["oso2Id"] = ids[2]
        return 200, answer, batches


def _refusal(exc: OrderRejected) -> dict[str, Any]:
    """A business failure as Tradovate reports it: ``s:200`` with ``failureReason``
    (https://partner.tradovate.com/overview/core-concepts/error-handling)."""
    return {"failureReason": exc.reason, "failureText": exc.text}


def _automated(request: dict[str, Any], violations: list[str] | None) -> bool | None:
    """``isAutomated`` as sent; placing an order without ``true`` is a conformance violation
    (software-placed orders must send it:
    https://partner.tradovate.com/resources/reference/best-practices)."""
    value = request.get("isAutomated")
    if value is not True and violations is not None:
        violations.append("order without isAutomated")
    return value if isinstance(value, bool) else None


def _quantity(request: dict[str, Any]) -> int:
    qty = request.get("orderQty")
    if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
        raise _BadRequest("orderQty must be a positive integer")
    return qty


def _price(request: dict[str, Any], key: str) -> float | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _BadRequest(f"{key} must be a number")
    return float(value)


def _terms(request: dict[str, Any], automated: bool | None) -> OrderTerms:
    """The order-version fields of a placeOrder, placeOSO bracket or modifyOrder body."""
    order_type = request.get("orderType")
    if order_type not in _ORDER_TYPES:
        raise _BadRequest(f"orderType must be one of {sorted(_ORDER_TYPES)}")
    tif = request.get("timeInForce")
    if tif is not None and tif not in _TIME_IN_FORCE:
        raise _BadRequest(f"timeInForce must be one of {sorted(_TIME_IN_FORCE)}")
    cl_ord_id = request.get("clOrdId")
    if cl_ord_id is not None and not isinstance(cl_ord_id, str):
        raise _BadRequest("clOrdId must be a string")
    text = request.get("text")
    return OrderTerms(
        order_type=str(order_type),
        price=_price(request, "price"),
        stop_price=_price(request, "stopPrice"),
        time_in_force=tif,
        cl_ord_id=cl_ord_id,
        is_automated=automated,
        text=text if isinstance(text, str) else None,
    )


def _price_refusal(terms: OrderTerms) -> dict[str, Any] | None:
    """``InvalidPrice`` when a price the order type needs is missing (placeOrder reference:
    ``price`` for non-market types, ``stopPrice`` for the stop types)."""
    if terms.order_type in _NEEDS_PRICE and terms.price is None:
        text = f"{terms.order_type} order needs a price"
    elif terms.order_type in _NEEDS_STOP and terms.stop_price is None:
        text = f"{terms.order_type} order needs a stopPrice"
    else:
        return None
    return {"failureReason": "InvalidPrice", "failureText": text}


class SimSession:
    """The server side of one websocket: parses requests, runs timers, queues frames."""

    def __init__(self, core: SimCore, audit: SocketAudit, now: float) -> None:
        self.core = core
        self.audit = audit
        self.outbox: deque[Action] = deque()
        self.token: Token | None = None
        self.closing = False
        self._last_sent = now
        self._last_received = now
        self._seen_ids: set[int] = set()
        self._synced = False
        self._sub_accounts: set[int] | None = None
        self._sub_types: set[str] | None = None
        self._shard: _Shard | None = None
        self._sent_props: deque[dict[str, Any]] = deque(maxlen=_REPLAY_MEMORY)
        #: Market-data subscriptions (md and replay sockets only).
        self.feed: MdFeed | None = None
        #: The replay clock, once ``replay/initializeClock`` started it (replay sockets).
        self.replay_clock: ReplayClock | None = None
        if audit.role != "user":
            self.feed = MdFeed(
                core.market,
                core.feed_faults,
                audit.md_requests,
                core.md_log,
                socket=audit.index,
                max_elements=core.config.md_max_elements,
            )
        self._queue(SendFrame("o"), now)  # §2: first frame after the WS handshake

    def __repr__(self) -> str:
        return f"<SimSession #{self.audit.index} closing={self.closing}>"

    @property
    def authorized(self) -> bool:
        return self.audit.authorized_at is not None

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`tick` next has something to do (``inf`` while stalled or closing)."""
        if self.closing or self.core.stalled:
            return math.inf
        cfg = self.core.config
        deadlines = [self._last_received + cfg.client_heartbeat_timeout]
        if not self._silenced():
            deadlines.append(self._last_sent + cfg.heartbeat_interval)
        if not self.authorized:
            deadlines.append(self.audit.opened_at + cfg.auth_timeout)
        return min(deadlines)

    def tick(self, now: float) -> None:
        """Fire due timers: auth timeout, client-heartbeat timeout, idle ``h`` (§5, §12)."""
        if self.closing or self.core.stalled:
            return
        cfg = self.core.config
        if not self.authorized and now >= self.audit.opened_at + cfg.auth_timeout:
            self.close("auth timeout", now)
        elif now >= self._last_received + cfg.client_heartbeat_timeout:
            self.close("heartbeat timeout", now)
        elif now >= self._last_sent + cfg.heartbeat_interval and not self._silenced():
            # §5: 'h' only while idle; any frame sent resets _last_sent.
            self._queue(SendFrame("h"), now)

    def _silenced(self) -> bool:
        """``silence_market``: a market-data socket sends nothing, not even ``h``."""
        return self.feed is not None and self.core.feed_faults.silent

    # -- market data ----------------------------------------------------------------------

    def market_wall(self, now: float) -> float:
        """This socket's market time: the replay clock's on a replay socket, else the
        simulated wall clock."""
        if self.replay_clock is not None:
            return self.replay_clock.wall(now)
        return self.core.wall(now)

    def market_tick(self, now: float) -> None:
        """Queue the updates of this socket's subscriptions since its last tick."""
        feed = self.feed
        if feed is None or self.closing or not self.authorized:
            return
        events = feed.advance(self.market_wall(now))
        if self.replay_clock is not None:
            events.append(self.replay_clock.event(now))
        if events and not self._silenced():
            self.send_messages(events, now)

    def _md(self, lower: str, request_id: int, body: str, now: float) -> None:
        """One ``md/*`` request: bring the feed up to date, answer, then send what the
        request starts (the current value, or chart history up to ``eoh``)."""
        feed = self.feed
        assert feed is not None
        if self.audit.role == "replay" and self.replay_clock is None:
            feed.refuse(lower, request_id, body, now, 400)
            self._reply(request_id, 400, now, "Initialize the replay clock first")
            return
        self.market_tick(now)
        status, data, events = feed.handle(lower, request_id, body, self.market_wall(now), now)
        self._reply(request_id, status, now, _MISSING if data is None else data)
        for event in events:
            self.send_messages([event], now)

    # -- outgoing -------------------------------------------------------------------------

    def _queue(self, action: Action, now: float) -> None:
        if self.closing:
            return
        self.outbox.append(action)
        self._last_sent = now
        if isinstance(action, CloseSocket):
            self.closing = True

    def send_messages(self, messages: list[Any], now: float) -> None:
        """Queue one ``a[...]`` frame carrying ``messages``."""
        self._queue(SendFrame("a" + orjson.dumps(messages).decode()), now)

    def send_raw(self, text: str, now: float) -> None:
        """Queue ``text`` as one websocket message, unchecked (fault injection)."""
        self._queue(SendFrame(text), now)

    def _reply(self, request_id: int, status: int, now: float, data: object = _MISSING) -> None:
        message: dict[str, Any] = {"i": request_id, "s": status}
        if data is not _MISSING:
            message["d"] = data
        self.send_messages([message], now)

    def close(self, why: str, now: float, *, code: int = 3000, reason: str = "Go away!") -> None:
        """Queue ``c[code,"reason"]`` + WS close; ``why`` goes to the audit."""
        if self.closing:
            return
        logger.info("socket #%d closing: %s", self.audit.index, why)
        self.audit.close_reason = why
        self._queue(CloseSocket(code, reason), now)

    def push(self, batch: list[Props], now: float) -> None:
        """Queue the part of a props batch this socket subscribed to, as one frame."""
        if not self._synced or self.closing:
            return
        wanted = [p.message() for p in batch if self._wants(p.entity_type, p.entity)]
        if wanted:
            self._send_props(wanted, wanted, now)

    def push_bad_batch(self, events: list[Props], now: float) -> None:
        """``bad_batch``: the wanted events with one non-object element in the middle.

        Unsynced sockets get the bad element alone: they hold no state to keep in step.
        """
        wanted: list[dict[str, Any]] = []
        if self._synced:
            wanted = [p.message() for p in events if self._wants(p.entity_type, p.entity)]
        middle = len(wanted) // 2 if len(wanted) > 1 else len(wanted)
        frame: list[Any] = [*wanted[:middle], _BAD_ELEMENT, *wanted[middle:]]
        self._send_props(wanted, frame, now)

    def _send_props(self, events: list[dict[str, Any]], frame: list[Any], now: float) -> None:
        """Queue ``frame`` (twice under ``duplicate_props``) and remember its props events."""
        if self.closing:
            return
        self._sent_props.extend(events)
        self.send_messages(frame, now)
        if self.core.duplicate_props and events:
            self.send_messages(frame, now)

    def replay_props(self, count: int, now: float) -> None:
        """Re-send this socket's last ``count`` props messages, in their original order, as
        one frame. Replaying a suffix in order leaves an upserting client's state unchanged:
        every replayed key's last event is also its last event overall."""
        if count <= 0 or not self._sent_props or self.closing:
            return
        events = list(self._sent_props)[-count:]
        self.send_messages(events, now)

    def _wants(self, entity_type: str, entity: dict[str, Any]) -> bool:
        if self._sub_types is not None and entity_type not in self._sub_types:
            return False
        world = self.core.world
        if self._sub_accounts is not None:
            account = world.account_of(entity_type, entity)
            if account is not None and account not in self._sub_accounts:
                return False
        shard = self._shard
        if shard is None:
            return True
        # §6 is silent on entities tied to no account/user (contracts, products, ...): the
        # simulator sends them to every shard, so each shard can resolve its own references.
        owner = (
            world.user_of(entity_type, entity)
            if shard.by_user
            else world.account_of(entity_type, entity)
        )
        return owner is None or owner % shard.divisor == shard.remainder

    # -- incoming -------------------------------------------------------------------------

    def finished(self, why: str, now: float) -> None:
        """The trio layer saw the socket end; record how unless a reason is already known."""
        if self.audit.close_reason is None:
            self.audit.close_reason = why
        if self.audit.closed_at is None:
            self.audit.closed_at = now
        self.closing = True
        if self in self.core.sessions:
            self.core.sessions.remove(self)

    def receive(self, text: str, now: float) -> None:
        """Process one client text message (§3 request or the ``[]`` heartbeat, §5)."""
        if self.closing:
            return
        self._last_received = now
        if text == "[]":
            self.audit.client_heartbeats.append(now)
            return
        parts = text.split("\n", 3)
        if len(parts) < 2:
            self.audit.violations.append("malformed frame")
            return
        parts += [""] * (4 - len(parts))
        endpoint, id_text, query, body = (p.strip() if i < 2 else p for i, p in enumerate(parts))
        # §3 leniency: official samples send the text 'undefined' for empty fields.
        query = "" if query == "undefined" else query
        body = "" if body == "undefined" else body
        lower = endpoint.lower()
        try:
            request_id: int | None = int(id_text)
        except ValueError:
            request_id = None
        shown = "<redacted>" if lower == "authorize" else body
        self.audit.requests.append(RequestRecord(now, lower, request_id, query, shown))
        if request_id is None:
            self.audit.violations.append("malformed request id")
            return
        if request_id in self._seen_ids:
            self.audit.violations.append("duplicate request id")  # §3: unique per connection
        self._seen_ids.add(request_id)
        if lower == "authorize":
            self._authorize(request_id, body, now)
        elif not self.authorized:
            self.audit.violations.append("request before authorize")
            self._reply(request_id, 401, now, _INVALID_TOKEN)  # §12: same 401 as a bad token
        else:
            self._gated(endpoint, request_id, query, body, now)

    def _gated(self, endpoint: str, request_id: int, query: str, body: str, now: float) -> None:
        """Run one authorized request through the §8 gate, then execute it if allowed."""
        lower = endpoint.lower()
        body, ticket = _take_ticket(body)
        decision: Decision = self.core.gate.check(lower, "ws", ticket, now)
        if decision.retry is not None:
            retry = decision.retry
            self.audit.retries.append(
                RetryRecord(now, lower, request_id, retry.ticket, retry.elapsed, retry.accepted)
            )
        if decision.kind == "429":
            self.audit.refused_429.append((now, lower, request_id))
            self._reply(request_id, 429, now)  # §8 P-RL-old: {"s":429,"i":id}, no d
            return
        if decision.kind == "penalty":
            issued = decision.ticket
            assert issued is not None
            self.audit.penalties.append(
                PenaltyRecord(
                    now,
                    lower,
                    request_id,
                    issued.value,
                    issued.p_time,
                    issued.captcha,
                    decision.reason or "",
                )
            )
            self._reply(request_id, 200, now, issued.payload())  # §8: inside d of an s:200
            return
        if self.feed is not None and lower.startswith("md/"):
            self._md(lower, request_id, body, now)
            return
        if self.audit.role == "replay" and lower.startswith("replay/"):
            self._replay(lower, request_id, body, now)
            return
        if self.audit.role == "md":
            # The market-data socket serves md/* only (§1: its own host).
            self._reply(request_id, 404, now, f"Not found: {endpoint}")
            return
        if lower == "user/syncrequest":
            self._sync(request_id, body, now)
            return
        status, data, batches = self.core.handle_endpoint(
            endpoint, query, body, now, self.audit.violations
        )
        self._reply(request_id, status, now, data)
        self.core.broadcast(batches, now)

    def _replay(self, lower: str, request_id: int, body: str, now: float) -> None:
        """``replay/*`` on a replay socket (see ``_replay``)."""
        if lower not in REPLAY_ENDPOINTS:
            self._reply(request_id, 404, now, f"Not found: {lower}")
            return
        before = self.replay_clock
        try:
            data, clock = handle_replay(
                lower,
                _json_object(body),
                before,
                history=(self.core.market.origin, self.core.wall(now)),
                now=now,
            )
        except (_BadRequest, ReplayError) as exc:
            self._reply(request_id, 400, now, str(exc))
            return
        if clock is not before and self.feed is not None:
            self.feed.reset()  # a new replay starts a new market time line
        self.replay_clock = clock
        self._reply(request_id, 200, now, data)
        if clock is not None and lower != "replay/checkreplaysession":
            self.send_messages([clock.event(now)], now)

    def throttle_replay(self, now: float) -> None:
        """Stop this socket's replay clock (speed 0, "throttled") and say so in a ``clock``."""
        if self.replay_clock is None or self.closing:
            return
        self.replay_clock.change_speed(0.0, now)
        self.send_messages([self.replay_clock.event(now)], now)

    def _authorize(self, request_id: int, body: str, now: float) -> None:
        if self.core.ignore_authorize:
            self.audit.auth_attempts.append((now, None))
            return
        value = body.strip()
        if value.startswith('"'):  # §3 leniency: JSON-quoted token
            try:
                loaded = orjson.loads(value)
            except orjson.JSONDecodeError:
                loaded = value
            value = loaded if isinstance(loaded, str) else value
        token = self.core.auth.validate(value, now)
        if token is None:
            self.audit.auth_attempts.append((now, 401))
            self._reply(request_id, 401, now, _INVALID_TOKEN)  # §4 (P-S2)
            return
        self.audit.auth_attempts.append((now, 200))
        self.token = token
        if self.audit.authorized_at is None:
            self.audit.authorized_at = now
        self.audit.user_id = self.core.world.user_id
        self.send_messages([{"s": 200, "i": request_id}], now)  # §4: success has no 'd'

    def _sync(self, request_id: int, body: str, now: float) -> None:
        self.audit.syncrequest_count += 1
        if self.audit.syncrequest_count > 1:
            # §6/§12: only one syncrequest per socket lifecycle.
            self.audit.violations.append("second syncrequest")
            if self.core.config.strict_second_sync:
                self.close("second syncrequest", now)
                return
        try:
            request = _json_object(body)
            sub = self._subscription(request)
        except _BadRequest as exc:
            self._reply(request_id, 400, now, str(exc))
            return
        self._sub_accounts, self._sub_types, self._shard = sub.accounts, sub.types, sub.shard
        self._synced = True
        snapshot = self.core.world.snapshot(sub.accounts, sub.types)
        if sub.shard is not None:
            snapshot = {
                plural: [e for e in items if self._wants(COLLECTIONS[plural], e)]
                for plural, items in snapshot.items()
            }
        if not sub.split:
            self._reply(request_id, 200, now, snapshot)
            return
        for part in _split_snapshot(snapshot, self.core.config.split_parts):
            self._reply(request_id, 200, now, part)

    def _subscription(self, request: dict[str, Any]) -> _Subscription:
        users, accounts, types = (request.get(k) for k in ("users", "accounts", "entityTypes"))
        split = request.get("splitResponses", False)
        if not isinstance(split, bool):
            raise _BadRequest("splitResponses must be a boolean")
        shard = _parse_shard(request.get("shardingExpression"))
        # §6 (P-SYNC) combination rules.
        if users is not None and shard is not None:
            raise _BadRequest("users cannot be combined with shardingExpression")
        if users is not None and types is not None:
            raise _BadRequest("users cannot be combined with entityTypes")
        if accounts is not None and shard is not None:
            raise _BadRequest("accounts cannot be combined with shardingExpression")
        for name, value in (("users", users), ("accounts", accounts)):
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, int) for v in value)
            ):
                raise _BadRequest(f"{name} must be a list of integers")
        if types is not None and (
            not isinstance(types, list) or not all(isinstance(t, str) for t in types)
        ):
            raise _BadRequest("entityTypes must be a list of strings")
        type_set = set(types) if types is not None else None
        if shard is not None:
            # A sharded (organisation-wide) sync names neither users nor accounts: the
            # simulator's organisation is its one user.
            return _Subscription(None, type_set, shard, split)
        if users is None and accounts is None:
            raise _BadRequest("users or accounts is required")
        own = set(self.core.world.account_ids())
        if accounts is not None:
            return _Subscription(own & set(accounts), type_set, None, split)
        if users is not None and self.core.world.user_id in users:
            return _Subscription(None, type_set, None, split)
        return _Subscription(set(), type_set, None, split)


def _parse_shard(value: object) -> _Shard | None:
    """Validate a ``shardingExpression`` (§6: all three fields required)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _BadRequest("shardingExpression must be an object")
    missing = [k for k in ("expressionType", "divisor", "remainder") if k not in value]
    if missing:
        raise _BadRequest(f"shardingExpression is missing {', '.join(missing)}")
    kind, divisor, remainder = value["expressionType"], value["divisor"], value["remainder"]
    if kind not in ("modAccountId", "modUserId"):
        raise _BadRequest("shardingExpression.expressionType must be modAccountId or modUserId")
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        raise _BadRequest("shardingExpression.divisor must be a positive integer")
    if not isinstance(remainder, int) or isinstance(remainder, bool):
        raise _BadRequest("shardingExpression.remainder must be an integer")
    if not 0 <= remainder < divisor:
        raise _BadRequest("shardingExpression.remainder must be in [0, divisor)")
    return _Shard(kind == "modUserId", divisor, remainder)


def _split_snapshot(
    snapshot: dict[str, list[dict[str, Any]]], parts: int
) -> list[dict[str, list[dict[str, Any]]]]:
    """Cut a snapshot into ``parts`` SyncMessages (see the module docstring, "splitResponses").

    Entities are taken in collection order then id order and dealt out in contiguous,
    near-equal runs, so one collection may straddle two parts; every part still carries every
    collection key (empty where it holds none), as the OAS SyncMessage requires.
    """
    flat = [(plural, entity) for plural, items in snapshot.items() for entity in items]
    count = max(1, parts)
    out: list[dict[str, list[dict[str, Any]]]] = []
    for index in range(count):
        chunk = flat[len(flat) * index // count : len(flat) * (index + 1) // count]
        part: dict[str, list[dict[str, Any]]] = {plural: [] for plural in snapshot}
        for plural, entity in chunk:
            part[plural].append(entity)
        out.append(part)
    return out
