"""Typed answers for the read-only endpoints the library knows (``engine.api``).

``Engine.request(endpoint, ...)`` returns the answer's ``d`` as the server sent it (``Any``):
the right tool for an endpoint this library does not model, and the wrong one for asking
"which contract is ESZ6?", where the caller wants a :class:`~trio_tradovate.entities.Contract`
and wants to learn at once when the server sent something else.

:class:`Endpoints` (``engine.api``) is that layer, for the entity endpoints Tradovate documents
and the simulator answers (``<entity>/list``, ``<entity>/item?id=``, ``<entity>/find?name=``;
docs/protocol.md §1, §3, §6) plus ``auth/me`` (§9):

* every call goes through :meth:`Engine.request`, so it shares the engine's queue, pacing,
  penalty handling, resend-on-reconnect (they are read-only) and errors;
* the answer is built with the same frozen classes and parser as the store's typed views
  (:meth:`EntityView.from_raw <trio_tradovate.entities.EntityView.from_raw>`): one model per
  entity;
* an answer of the wrong shape (not an object, a list holding a non-object, an entity
  without an integer ``id``, an ``item`` answered with another id, a ``find`` answered with
  another name) raises :class:`~trio_tradovate.errors.RemoteProtocolError` with an excerpt,
  never a ``KeyError`` or ``TypeError``; a refusal inside a ``200`` (``errorText``, §3)
  raises :class:`~trio_tradovate.errors.RequestError` with status 200;
* a bad argument raises :class:`~trio_tradovate.errors.ConfigError` before anything is
  queued, saying what to pass instead.

Why a namespace of methods and not ``typing.overload``-ed ``request`` on ``Literal`` endpoint
names: overloads would type the *return* only. The query (``id=`` or ``name=``) would stay a
free-form mapping nobody checks, the server ignores the endpoint's case so ``"Contract/Find"``
would silently fall back to ``Any``, and ``request`` would have to start parsing answers,
changing what it returns for code that relies on the raw ``d``. Methods give each endpoint its
own checked arguments, leave ``request`` exactly as it was, and cost one attribute on the
engine.
"""

# A per-request ``timeout`` is the contract, as on Engine.request:
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from .entities import (
    Account,
    CashBalance,
    Contract,
    EntityView,
    Fill,
    Order,
    OrderVersion,
    Position,
    Product,
)
from .errors import ConfigError, RemoteProtocolError, RequestError, excerpt

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Endpoints", "UserInfo", "parse_entities", "parse_entity", "parse_user_info"]

V = TypeVar("V", bound=EntityView)

#: Longest symbol or product name accepted (Tradovate's are a few characters, e.g. ``ESZ6``).
_MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class UserInfo:
    """``auth/me``'s answer: who the access token belongs to (docs/protocol.md §9).

    Not an entity (it has ``userId``, no ``id``), so it is not an
    :class:`~trio_tradovate.entities.EntityView`; ``raw`` keeps every field as sent.
    """

    user_id: int
    name: str | None
    full_name: str | None
    email: str | None
    email_verified: bool | None
    is_trial: bool | None
    raw: Mapping[str, Any] = field(repr=False, hash=False)


# -- answers: d -> typed value, or a typed error ----------------------------------------------


def _refused(endpoint: str, data: object) -> None:
    """A refusal inside a ``200`` (``errorText``, docs/protocol.md §3) becomes RequestError."""
    if isinstance(data, Mapping):
        text = data.get("errorText")
        if isinstance(text, str) and text:
            raise RequestError(endpoint, 200, text)


def _malformed(endpoint: str, what: str, data: object) -> RemoteProtocolError:
    return RemoteProtocolError(f"{endpoint} answered {what}", repr(data))


def _entity(cls: type[V], endpoint: str, data: object) -> V:
    if not isinstance(data, Mapping):
        raise _malformed(endpoint, f"with a non-object where a {cls.ENTITY_TYPE} belongs", data)
    entity_id = data.get("id")
    if not isinstance(entity_id, int) or isinstance(entity_id, bool):
        raise _malformed(endpoint, f"with a {cls.ENTITY_TYPE} without an integer id", data)
    return cls.from_raw(data)


def parse_entity(cls: type[V], data: object, endpoint: str) -> V:
    """``d`` of an ``item`` or ``find`` answer as one ``cls`` view.

    Raises:
        RequestError: the answer is a refusal (``errorText`` inside a 200).
        RemoteProtocolError: it is not an object with an integer ``id``.
    """
    _refused(endpoint, data)
    return _entity(cls, endpoint, data)


def parse_entities(cls: type[V], data: object, endpoint: str) -> tuple[V, ...]:
    """``d`` of a ``list`` answer as a tuple of ``cls`` views, in the server's order.

    One bad element rejects the whole answer: a partial list would look complete.

    Raises:
        RequestError: the answer is a refusal (``errorText`` inside a 200).
        RemoteProtocolError: it is not a list of objects with integer ``id``s.
    """
    _refused(endpoint, data)
    if not isinstance(data, list):
        raise _malformed(endpoint, f"with a non-list where {cls.ENTITY_TYPE}s belong", data)
    return tuple(_entity(cls, endpoint, element) for element in data)


def parse_user_info(data: object, endpoint: str = "auth/me") -> UserInfo:
    """``d`` of an ``auth/me`` answer.

    Raises:
        RequestError: the answer is a refusal (``errorText`` inside a 200).
        RemoteProtocolError: it is not an object with an integer ``userId``.
    """
    _refused(endpoint, data)
    if not isinstance(data, Mapping):
        raise _malformed(endpoint, "with a non-object", data)
    user_id = data.get("userId")
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise _malformed(endpoint, "without an integer userId", data)

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    def flag(key: str) -> bool | None:
        value = data.get(key)
        return value if isinstance(value, bool) else None

    return UserInfo(
        user_id,
        text("name"),
        text("fullName"),
        text("email"),
        flag("emailVerified"),
        flag("isTrial"),
        MappingProxyType(dict(data)),
    )


# -- arguments, checked before anything is queued ---------------------------------------------


def _check_id(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer id, got {excerpt(repr(value), 40)}")
    return value


def _check_name(value: object, example: str) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > _MAX_NAME
        or not value.isprintable()
        or value.strip() != value
    ):
        raise ConfigError(
            f"name must be a symbol such as {example!r} (non-empty, no surrounding spaces, "
            f"at most {_MAX_NAME} printable characters), got {excerpt(repr(value), 40)}"
        )
    return value


class Endpoints:
    """Typed read-only requests, as ``engine.api``; each method names its endpoint.

    Every method takes ``timeout`` (seconds; default the engine's ``request_timeout``) and
    raises what :meth:`Engine.request` raises, plus :class:`ConfigError` for a bad argument
    and :class:`RemoteProtocolError` for an answer of the wrong shape (see the module's
    docstring). Lists come back as tuples of frozen views, in the server's order.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _get(
        self, endpoint: str, query: Mapping[str, str | int] | None, timeout: float | None
    ) -> Any:
        return await self._engine.request(endpoint, query=query, timeout=timeout)

    async def _list(self, cls: type[V], timeout: float | None) -> tuple[V, ...]:
        endpoint = f"{cls.ENTITY_TYPE}/list"
        return parse_entities(cls, await self._get(endpoint, None, timeout), endpoint)

    async def _item(self, cls: type[V], entity_id: int, timeout: float | None) -> V:
        endpoint = f"{cls.ENTITY_TYPE}/item"
        found = parse_entity(cls, await self._get(endpoint, {"id": entity_id}, timeout), endpoint)
        if found.id != entity_id:
            raise _malformed(endpoint, f"for id {entity_id} with another id", found.raw)
        return found

    async def _find(self, cls: type[V], name: str, timeout: float | None) -> V:
        endpoint = f"{cls.ENTITY_TYPE}/find"
        found = parse_entity(cls, await self._get(endpoint, {"name": name}, timeout), endpoint)
        sent = found.raw.get("name")
        if not isinstance(sent, str) or sent.casefold() != name.casefold():
            raise _malformed(endpoint, f"for {name!r} with another name", found.raw)
        return found

    # -- accounts ------------------------------------------------------------------------

    async def account_list(self, *, timeout: float | None = None) -> tuple[Account, ...]:
        """``account/list``: every account the user can see."""
        return await self._list(Account, timeout)

    async def account_item(self, account_id: int, *, timeout: float | None = None) -> Account:
        """``account/item``: one account (``RequestError`` 404 if the server has none)."""
        return await self._item(Account, _check_id(account_id, "account_id"), timeout)

    async def cash_balance_list(self, *, timeout: float | None = None) -> tuple[CashBalance, ...]:
        """``cashBalance/list``: every account's cash balances."""
        return await self._list(CashBalance, timeout)

    async def position_list(self, *, timeout: float | None = None) -> tuple[Position, ...]:
        """``position/list``: every position, flat ones included."""
        return await self._list(Position, timeout)

    # -- orders and fills ------------------------------------------------------------------

    async def order_list(self, *, timeout: float | None = None) -> tuple[Order, ...]:
        """``order/list``: every order the server keeps (status only; terms are versions)."""
        return await self._list(Order, timeout)

    async def order_item(self, order_id: int, *, timeout: float | None = None) -> Order:
        """``order/item``: one order."""
        return await self._item(Order, _check_id(order_id, "order_id"), timeout)

    async def order_version_list(self, *, timeout: float | None = None) -> tuple[OrderVersion, ...]:
        """``orderVersion/list``: every order's versions (quantities, prices)."""
        return await self._list(OrderVersion, timeout)

    async def fill_list(self, *, timeout: float | None = None) -> tuple[Fill, ...]:
        """``fill/list``: every fill."""
        return await self._list(Fill, timeout)

    # -- reference data ----------------------------------------------------------------------

    async def contract_find(self, name: str, *, timeout: float | None = None) -> Contract:
        """``contract/find``: the contract with this symbol, e.g. ``"ESZ6"``."""
        return await self._find(Contract, _check_name(name, "ESZ6"), timeout)

    async def contract_item(self, contract_id: int, *, timeout: float | None = None) -> Contract:
        """``contract/item``: one contract by id."""
        return await self._item(Contract, _check_id(contract_id, "contract_id"), timeout)

    async def product_find(self, name: str, *, timeout: float | None = None) -> Product:
        """``product/find``: the product with this name, e.g. ``"ES"``."""
        return await self._find(Product, _check_name(name, "ES"), timeout)

    async def product_item(self, product_id: int, *, timeout: float | None = None) -> Product:
        """``product/item``: one product by id."""
        return await self._item(Product, _check_id(product_id, "product_id"), timeout)

    # -- the user ------------------------------------------------------------------------------

    async def auth_me(self, *, timeout: float | None = None) -> UserInfo:
        """``auth/me``: who the access token belongs to."""
        return parse_user_info(await self._get("auth/me", None, timeout))
