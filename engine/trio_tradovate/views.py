"""Typed, read-only queries over an :class:`~trio_tradovate.store.EntityStore`.

:class:`StoreViews` answers the questions application code keeps asking of the account state
("the working orders of account 12", "the position in ESZ6") with the typed views of
:mod:`trio_tradovate.entities`, and always from the store's *current* contents: it holds no
state of its own except a parse cache, so it can never disagree with the store.

The cache is keyed by ``(entityType, id)`` and checked against the *identity* of the store's
mapping. The store replaces the mapping object on every change and never mutates one in place,
so "same object" means "same content" and a hit needs no comparison. The cache holds a
reference to the mapping it parsed, which keeps that object alive: its ``id()`` cannot be
reused by a newer mapping, so the identity check cannot be fooled. Entries the store no longer
holds are dropped whenever a query notices (a full scan of a type rebuilds that type's cache),
so the cache stays the size of the store.

Only :meth:`EntityStore.get` and :meth:`EntityStore.of_type` are used; the store stays the
single source of truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .entities import (
    VIEW_TYPES,
    Account,
    AccountRiskStatus,
    CashBalance,
    Contract,
    EntityView,
    ExecutionReport,
    Fill,
    MarginSnapshot,
    Order,
    OrderVersion,
    Position,
    Product,
)
from .store import EntityStore

__all__ = ["StoreViews"]

V = TypeVar("V", bound=EntityView)

#: Per entity type: id -> (the store's mapping we parsed, the view built from it).
_TypeCache = dict[int, tuple[Mapping[str, Any], EntityView]]


class StoreViews:
    """Read-only, typed queries over ``store``; every result reflects the store right now.

    Lists are sorted by id. Lookups of something the store does not hold return ``None``.
    """

    def __init__(self, store: EntityStore) -> None:
        self._store = store
        self._cache: dict[str, _TypeCache] = {}

    # -- generic access ----------------------------------------------------------------------

    def cached_ids(self, entity_type: str) -> frozenset[int]:
        """The ids whose typed view is cached now (diagnostics: deleted entities leave it)."""
        return frozenset(self._cache.get(entity_type, {}))

    def view(self, entity_type: str, entity_id: int) -> EntityView | Mapping[str, Any] | None:
        """The typed view of one entity; the store's raw mapping for types without a view class
        (``user``, ``contractMaturity``, ...), so every entity is reachable through here."""
        cls = VIEW_TYPES.get(entity_type)
        if cls is None:
            return self._store.get(entity_type, entity_id)
        return self._one(cls, entity_id)

    def _parse(self, cls: type[V], raw: Mapping[str, Any], cache: _TypeCache) -> V:
        """``cls.from_raw(raw)``, reusing the cached view if ``raw`` equals the value parsed
        (the store hands out a fresh read-only view per read, and never replaces a value by an
        equal one, so equal means the same version)."""
        entity_id = raw.get("id")
        if not isinstance(entity_id, int) or isinstance(entity_id, bool):
            return cls.from_raw(raw)  # the store would not key it so; do not cache the oddity
        hit = cache.get(entity_id)
        if hit is not None and isinstance(hit[1], cls) and hit[0] == raw:
            return hit[1]
        view = cls.from_raw(raw)
        cache[entity_id] = (raw, view)
        return view

    def _one(self, cls: type[V], entity_id: int) -> V | None:
        cache = self._cache.setdefault(cls.ENTITY_TYPE, {})
        raw = self._store.get(cls.ENTITY_TYPE, entity_id)
        if raw is None:
            cache.pop(entity_id, None)
            return None
        return self._parse(cls, raw, cache)

    def _all(self, cls: type[V], keep: Callable[[V], bool] | None = None) -> list[V]:
        """Every entity of ``cls``'s type (by id, as the store lists them), optionally filtered.

        The type's cache is rebuilt from what the store holds now, which is what drops the
        entries of deleted entities.
        """
        old = self._cache.get(cls.ENTITY_TYPE, {})
        fresh: _TypeCache = {}
        views = [self._parse(cls, raw, old) for raw in self._store.of_type(cls.ENTITY_TYPE)]
        for view in views:
            if view.id in old:
                fresh[view.id] = old[view.id]
        self._cache[cls.ENTITY_TYPE] = fresh
        return views if keep is None else [v for v in views if keep(v)]

    # -- accounts ------------------------------------------------------------------------------

    def accounts(self) -> list[Account]:
        """Every account."""
        return self._all(Account)

    def account(self, account_id: int) -> Account | None:
        """One account."""
        return self._one(Account, account_id)

    def cash_balances(self, account_id: int | None = None) -> list[CashBalance]:
        """Cash balances, of one account or of all."""
        if account_id is None:
            return self._all(CashBalance)
        return self._all(CashBalance, lambda b: b.account_id == account_id)

    def margin_snapshot(self, account_id: int) -> MarginSnapshot | None:
        """The account's margin snapshot (Tradovate gives it the account's id)."""
        return self._one(MarginSnapshot, account_id)

    def risk_status(self, account_id: int) -> AccountRiskStatus | None:
        """The account's risk status (Tradovate gives it the account's id)."""
        return self._one(AccountRiskStatus, account_id)

    # -- orders and fills ------------------------------------------------------------------------

    def orders(self, account_id: int | None = None, *, working_only: bool = False) -> list[Order]:
        """Orders, of one account or of all; ``working_only`` keeps those whose ``ordStatus`` is
        in :data:`~trio_tradovate.entities.WORKING_ORD_STATUSES`."""
        return self._all(
            Order,
            lambda o: (
                (account_id is None or o.account_id == account_id)
                and (not working_only or o.is_working)
            ),
        )

    def order(self, order_id: int) -> Order | None:
        """One order."""
        return self._one(Order, order_id)

    def order_versions(self, order_id: int) -> list[OrderVersion]:
        """The versions of one order, oldest (lowest id) first: the last is its current terms."""
        return self._all(OrderVersion, lambda v: v.order_id == order_id)

    def fills(self, order_id: int | None = None, account_id: int | None = None) -> list[Fill]:
        """Fills, optionally of one order and/or one account.

        A fill carries no ``accountId``, so the account filter joins through the fill's order;
        a fill whose order the store does not hold (yet) matches no account.
        """
        fills = self._all(Fill, None if order_id is None else lambda f: f.order_id == order_id)
        if account_id is None:
            return fills
        mine = {o.id for o in self.orders(account_id)}
        return [f for f in fills if f.order_id in mine]

    def execution_reports(self, order_id: int) -> list[ExecutionReport]:
        """The execution reports of one order, in id order."""
        return self._all(ExecutionReport, lambda r: r.order_id == order_id)

    # -- positions -------------------------------------------------------------------------------

    def positions(
        self, account_id: int | None = None, *, open_only: bool = False
    ) -> list[Position]:
        """Positions, of one account or of all; ``open_only`` drops flat ones (``netPos`` 0 or
        unknown)."""
        return self._all(
            Position,
            lambda p: (
                (account_id is None or p.account_id == account_id) and (not open_only or p.is_open)
            ),
        )

    def position(self, account_id: int, contract_id: int) -> Position | None:
        """The account's position in a contract (the lowest id, should the server send two)."""
        found = self._all(
            Position, lambda p: p.account_id == account_id and p.contract_id == contract_id
        )
        return found[0] if found else None

    # -- reference data ----------------------------------------------------------------------

    def contract(self, contract_id: int) -> Contract | None:
        """One contract."""
        return self._one(Contract, contract_id)

    def contract_by_name(self, name: str) -> Contract | None:
        """A contract by symbol (``ESZ6``), ignoring case as Tradovate's ``contract/find`` does."""
        wanted = name.casefold()
        found = self._all(Contract, lambda c: c.name is not None and c.name.casefold() == wanted)
        return found[0] if found else None

    def product(self, product_id: int) -> Product | None:
        """One product."""
        return self._one(Product, product_id)
