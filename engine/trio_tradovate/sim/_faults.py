"""One data-driven entry point for every fault control: :func:`apply_fault`.

Tests call the :class:`Simulator` methods directly; a CLI (``--fault``) or an out-of-process
client (``POST /_sim/fault`` on the loopback server) describes the same faults as JSON-like
mappings ``{"kind": "...", **params}``. Keeping the mapping here, in one table, means the
endpoint, the CLI and the docs cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeVar

import trio

from ._simulator import Simulator

__all__ = ["FAULT_KINDS", "FaultError", "apply_fault"]

_T = TypeVar("_T")

#: Every ``kind`` :func:`apply_fault` understands, with its parameters (all optional unless
#: marked required) — usable as CLI help text.
FAULT_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "drop": "abrupt TCP drop of every socket (no c frame, no WS close); role (str: "
        "user | md | replay, default all)",
        "stall": "every socket goes silent (still reads)",
        "unstall": "end a stall",
        "close": 'c[code,"reason"] + WS close; code (int, 3000), reason (str, "Go away!")',
        "shutdown": "shutdown event then close; reasonCode (str, Maintenance), reason (str)",
        "refuse": "refuse new connections; seconds (number, required; null = stop refusing)",
        "ignore_authorize": "never answer authorize; on (bool, true)",
        "expire_tokens": "every token issued so far stops working",
        "fail_renewals": "GET /auth/renewaccesstoken answers 401; on (bool, true)",
        "frame": "send a raw websocket text message to every socket; text (str, required)",
        "malformed": "send one malformed frame; malformed (str, required): "
        "invalid_json | unknown_frame | unknown_event | props_missing_fields | "
        "props_wrong_types | oversized | bad_batch",
        "duplicate_props": "send every props frame twice; on (bool, true)",
        "replay_props": "re-send each socket's last props messages; count (int, required)",
        "split_frames": "write in pieces; max_bytes (int, required; null = whole writes)",
        "penalize_auth": "p-ticket instead of a token; p_time (number, required), "
        "captcha (bool, false), times (int, 1)",
        "penalize_requests": "p-ticket instead of executing websocket requests; endpoint (str), "
        "nth (int), p_time (number, 5.0), captcha (bool, false), times (int, 1)",
        "rate_limit_429": "429 instead of an answer (websocket and REST); endpoint (str), "
        "times (int, 1)",
        "freeze_subscription": "one subscription stops updating, the rest stream on; symbol "
        "(str or int, required), md_kind (str: quote | dom | histogram | chart, quote), "
        "until_resubscribed (bool, true)",
        "unfreeze_subscriptions": "end every freeze_subscription",
        "conflate_market": "quote/DOM/histogram updates only every Nth market step; every "
        "(int, required; null = every step)",
        "chart_gap": "every open chart discards its next realtime steps (tick id or bar "
        "timestamp gaps); count (int, required)",
        "silence_market": "md and replay sockets send nothing, not even h; on (bool, true)",
        "quiet_market": "no market updates (idle md sockets send h); on (bool, true)",
        "throttle_replay": "every replay clock stops (clock event with s 0) until changeSpeed",
    }
)


class FaultError(ValueError):
    """A fault spec that names an unknown kind or carries a bad parameter."""


class _Params:
    """Typed access to a spec's parameters; every key must be consumed exactly once."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spec = dict(spec)
        self._spec.pop("kind", None)

    def take(self, key: str, kind: type[_T] | tuple[type, ...], default: Any) -> Any:
        """The value of ``key`` (``default`` if absent; a ``...`` default means required)."""
        if key not in self._spec:
            if default is ...:
                raise FaultError(f"missing parameter {key!r}")
            return default
        value = self._spec.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise FaultError(f"parameter {key!r} must be {_names(kinds)}")
        if value is None and type(None) in kinds:
            return None
        if int in kinds and float not in kinds and isinstance(value, float):
            raise FaultError(f"parameter {key!r} must be {_names(kinds)}")
        if not isinstance(value, kinds):
            raise FaultError(f"parameter {key!r} must be {_names(kinds)}")
        return float(value) if float in kinds and isinstance(value, int) else value

    def done(self) -> None:
        if self._spec:
            raise FaultError(f"unknown parameters {sorted(self._spec)}")


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


_NUMBER: Final = (int, float)


def _apply(sim: Simulator, kind: str, p: _Params) -> Callable[[], Awaitable[None]] | None:
    """Validate the parameters, then apply the fault or return the awaitable action that
    applies it (``None`` when already applied)."""
    if kind in ("stall", "unstall", "expire_tokens", "unfreeze_subscriptions", "throttle_replay"):
        p.done()  # parameterless kinds
    if kind == "drop":
        role = p.take("role", (str, type(None)), None)
        p.done()
        if role not in (None, "user", "md", "replay"):
            raise FaultError("role must be user, md or replay")
        if role is None:
            return sim.drop_connections
        return lambda: sim.drop_connections(lambda audit: audit.role == role)
    if kind in _MARKET_KINDS:
        _market_fault(sim, kind, p)
    elif kind == "stall":
        sim.stall(True)
    elif kind == "unstall":
        sim.stall(False)
    elif kind == "close":
        code, reason = p.take("code", int, 3000), p.take("reason", str, "Go away!")
        p.done()
        return lambda: sim.close_connections(code, reason)
    elif kind == "shutdown":
        code, reason = p.take("reasonCode", str, "Maintenance"), p.take("reason", str, None)
        p.done()
        return lambda: sim.shutdown(code, reason)
    elif kind == "refuse":
        seconds = p.take("seconds", (*_NUMBER, type(None)), ...)
        p.done()
        sim.refuse_connections(None if seconds is None else trio.current_time() + seconds)
    elif kind == "ignore_authorize":
        on = p.take("on", bool, True)
        p.done()
        sim.ignore_authorize(on)
    elif kind == "expire_tokens":
        sim.expire_tokens()
    elif kind == "fail_renewals":
        on = p.take("on", bool, True)
        p.done()
        sim.fail_renewals(on)
    elif kind == "frame":
        text = p.take("text", str, ...)
        p.done()
        sim.inject_frame(text)
    elif kind == "malformed":
        which = p.take("malformed", str, ...)
        p.done()
        try:
            sim.inject_malformed(which)
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
    elif kind == "duplicate_props":
        on = p.take("on", bool, True)
        p.done()
        sim.duplicate_props(on)
    elif kind == "replay_props":
        count = p.take("count", int, ...)
        p.done()
        sim.replay_props(count)
    elif kind == "split_frames":
        max_bytes = p.take("max_bytes", (int, type(None)), ...)
        p.done()
        if max_bytes is not None and max_bytes < 1:
            raise FaultError("max_bytes must be >= 1")
        sim.split_frames(max_bytes)
    elif kind == "penalize_auth":
        p_time = p.take("p_time", _NUMBER, ...)
        captcha, times = p.take("captcha", bool, False), p.take("times", int, 1)
        p.done()
        _check_script(times, p_time)
        sim.penalize_auth(p_time, captcha=captcha, times=times)
    elif kind == "penalize_requests":
        endpoint, nth = p.take("endpoint", (str, type(None)), None), p.take("nth", int, None)
        p_time, captcha = p.take("p_time", _NUMBER, 5.0), p.take("captcha", bool, False)
        times = p.take("times", int, 1)
        p.done()
        _check_script(times, p_time)
        if nth is not None and nth < 1:
            raise FaultError("nth counts from 1")
        sim.penalize_requests(
            endpoint=endpoint, nth=nth, p_time=p_time, captcha=captcha, times=times
        )
    elif kind == "rate_limit_429":
        endpoint, times = p.take("endpoint", (str, type(None)), None), p.take("times", int, 1)
        p.done()
        _check_script(times, 0.0)
        sim.rate_limit_429(endpoint=endpoint, times=times)
    else:
        raise FaultError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
    return None


_MARKET_KINDS: Final = frozenset(
    {
        "freeze_subscription",
        "unfreeze_subscriptions",
        "throttle_replay",
        "conflate_market",
        "chart_gap",
        "silence_market",
        "quiet_market",
    }
)


def _market_fault(sim: Simulator, kind: str, p: _Params) -> None:
    """The market-data kinds (see :data:`FAULT_KINDS`)."""
    try:
        if kind == "freeze_subscription":
            symbol = p.take("symbol", (str, int), ...)
            md_kind = p.take("md_kind", str, "quote")
            until = p.take("until_resubscribed", bool, True)
            p.done()
            sim.freeze_subscription(symbol, md_kind, until_resubscribed=until)
        elif kind == "unfreeze_subscriptions":
            sim.unfreeze_subscriptions()
        elif kind == "throttle_replay":
            sim.throttle_replay()
        elif kind == "conflate_market":
            every = p.take("every", (int, type(None)), ...)
            p.done()
            sim.conflate_market(every)
        elif kind == "chart_gap":
            count = p.take("count", int, ...)
            p.done()
            sim.chart_gap(count)
        elif kind == "silence_market":
            on = p.take("on", bool, True)
            p.done()
            sim.silence_market(on)
        else:
            on = p.take("on", bool, True)
            p.done()
            sim.quiet_market(on)
    except ValueError as exc:
        if isinstance(exc, FaultError):
            raise
        raise FaultError(str(exc)) from exc


def _check_script(times: int, p_time: float) -> None:
    if times < 1:
        raise FaultError("times must be >= 1")
    if p_time < 0:
        raise FaultError("p_time must be >= 0")


async def apply_fault(sim: Simulator, spec: Mapping[str, Any]) -> None:
    """Apply ``{"kind": <one of FAULT_KINDS>, **params}`` to ``sim``.

    Raises :class:`FaultError` (a ``ValueError``) for an unknown kind, an unknown parameter or
    a parameter of the wrong type, before anything is changed. Kinds that close sockets
    (``drop``, ``close``, ``shutdown``) return once those sockets are gone, like the methods.
    """
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise FaultError("a fault spec needs a string 'kind'")
    action = _apply(sim, kind, _Params(spec))
    if action is not None:
        await action()
    else:
        await trio.lowlevel.checkpoint()
