"""Access tokens over REST: request, renew, and who-am-I (docs/protocol.md §8-9).

Tradovate answers most failures with HTTP 200 and a body that says so: ``errorText`` for bad
credentials, ``p-ticket``/``p-time`` for a time penalty, ``p-captcha`` when only a human could
go on. This module turns those bodies into :class:`AccessToken` or typed errors; the engine
decides what to do with them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
import trio

from .boundary import classify_connect_error
from .config import Credentials
from .errors import (
    AuthenticationError,
    CaptchaRequired,
    ConnectError,
    Penalized,
    excerpt,
)
from .scheduler import server_ticket, server_wait

logger = logging.getLogger("trio_tradovate.auth")

#: How many time penalties one token request waits out and resends before giving up (the
#: engine then retries later through its backoff).
MAX_PENALTIES = 3

#: Never renew a token sooner than this after receiving it (renewaccesstoken: 15/h, P-RL).
MIN_RENEW_INTERVAL = 300.0

#: Lifetime assumed for a token whose expirationTime is unknown (P-ATR: 80 minutes).
ASSUMED_LIFETIME = 80 * 60.0

#: An ``expirationTime`` further ahead than this is not believed: Tradovate's tokens live 80
#: minutes (P-ATR), and trusting a far-future date would mean never renewing. Such a token is
#: treated as one of unknown expiry (:data:`ASSUMED_LIFETIME`).
MAX_TOKEN_LIFETIME = 24 * 3600.0

#: Added to every ``p-time`` wait: clocks and latencies differ, and a resend that arrives a
#: hair early earns a new penalty, while one that arrives a quarter second late costs nothing.
PENALTY_MARGIN = 0.25


@dataclass(frozen=True)
class AccessToken:
    """A token and what came with it; the secrets stay out of ``repr``."""

    token: str = field(repr=False)
    md_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None
    user_id: int | None = None
    name: str | None = None
    #: When we received it (trio time), if we minted it.
    minted_at: float | None = None

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until ``expiration``; ``None`` when the server did not say."""
        if self.expiration is None:
            return None
        return (self.expiration - now).total_seconds()


def _parse_time(value: Any) -> datetime | None:
    """``expirationTime`` as an aware datetime, or ``None`` for "unknown expiry".

    A missing value is unknown. A value that is not an ISO time, or has no time zone (which
    instant would it be?), is logged as malformed and is also unknown: the token is then
    renewed after :data:`ASSUMED_LIFETIME`, as for a server that does not say. Never raises.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        logger.warning("malformed expirationTime (a %s): expiry unknown", type(value).__name__)
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        logger.warning("malformed expirationTime %s: expiry unknown", excerpt(value, 40))
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        logger.warning(
            "malformed expirationTime %s (no time zone): expiry unknown", excerpt(value, 40)
        )
        return None
    return moment


def _optional(body: dict[str, Any], key: str, kind: type) -> Any:
    """``body[key]`` when it has the type ``kind`` (never a bool for ``int``), else ``None``;
    a present value of another type is logged as malformed."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    logger.warning("malformed %s in the token response (a %s): ignored", key, type(value).__name__)
    return None


def _token_from(body: Any) -> AccessToken:
    """The token in a REST token answer, or the typed reason there is none.

    Every field is checked where it enters: whatever JSON the server sends, the result is an
    :class:`AccessToken` or an :class:`AuthenticationError` (a :class:`CaptchaRequired` for
    ``p-captcha``), never a ``TypeError`` from a field of the wrong type.
    """
    if not isinstance(body, dict):
        raise AuthenticationError("token response is not a JSON object")
    if body.get("p-captcha"):
        raise CaptchaRequired(
            "Tradovate asks for a captcha on the token request; a program cannot answer it. "
            "Wait about an hour before trying again."
        )
    token = body.get("accessToken")
    if "errorText" in body and not token:
        text = body["errorText"]
        shown = (
            text[:200] if isinstance(text, str) else f"(an errorText of type {type(text).__name__})"
        )
        raise AuthenticationError(f"token request rejected: {shown}")
    if not isinstance(token, str) or not token:
        raise AuthenticationError("token response has no accessToken")
    return AccessToken(
        token=token,
        md_token=_optional(body, "mdAccessToken", str),
        expiration=_parse_time(body.get("expirationTime")),
        user_id=_optional(body, "userId", int),
        name=_optional(body, "name", str),
        minted_at=trio.current_time(),
    )


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> Any:
    try:
        response = await client.send(request)
    except httpx.HTTPError as exc:
        raise classify_connect_error(exc) from exc
    if response.status_code in (401, 403):
        raise AuthenticationError(
            f"{request.url.path} answered HTTP {response.status_code}",
            status=response.status_code,
            retryable=True,
        )
    if response.status_code >= 400:
        raise ConnectError(f"{request.url.path} answered HTTP {response.status_code}")
    try:
        # orjson, not response.json(): the standard library's parser recurses and raises
        # RecursionError on a deeply nested body, orjson stops at 1024 levels with an error.
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise AuthenticationError(f"{request.url.path} answered with invalid JSON") from None


async def request_access_token(
    client: httpx.AsyncClient, rest_url: str, credentials: Credentials
) -> AccessToken:
    """``POST /auth/accesstokenrequest``, honouring time penalties (wait ``p-time``, resend the
    identical body plus ``p-ticket``, §8)."""
    body = credentials.request_body()
    for attempt in range(MAX_PENALTIES + 1):
        request = client.build_request("POST", f"{rest_url}/auth/accesstokenrequest", json=body)
        answer = await _send(client, request)
        if isinstance(answer, dict) and "p-ticket" in answer and not answer.get("p-captcha"):
            if attempt == MAX_PENALTIES:
                break  # no point waiting out a penalty we will not resend after
            wait = server_wait(answer.get("p-time"), what="p-time of the token request")
            logger.warning("token request penalised: waiting %.1f s, then resending", wait)
            await trio.sleep(wait + PENALTY_MARGIN)
            ticket = server_ticket(answer["p-ticket"])
            body = credentials.request_body()
            if ticket is not None:
                body["p-ticket"] = ticket
            continue
        return _token_from(answer)
    raise Penalized("token request still penalised after several waits; retrying later")


async def renew_access_token(
    client: httpx.AsyncClient, rest_url: str, token: AccessToken
) -> AccessToken:
    """``GET /auth/renewaccesstoken``: extends the session instead of opening a new one (§9).

    A time penalty is honoured like the token request's, with the ticket as a query parameter
    (a GET has no body; docs/protocol.md §13.12 leaves this open).
    """
    params: dict[str, str] = {}
    for attempt in range(MAX_PENALTIES + 1):
        request = client.build_request(
            "GET",
            f"{rest_url}/auth/renewaccesstoken",
            headers={"Authorization": f"Bearer {token.token}"},
            params=params,
        )
        answer = await _send(client, request)
        if isinstance(answer, dict) and "p-ticket" in answer and not answer.get("p-captcha"):
            if attempt == MAX_PENALTIES:
                raise Penalized("token renewal still penalised after several waits")
            wait = server_wait(answer.get("p-time"), what="p-time of the token renewal")
            logger.warning("token renewal penalised: waiting %.1f s, then resending", wait)
            await trio.sleep(wait + PENALTY_MARGIN)
            ticket = server_ticket(answer["p-ticket"])
            params = {} if ticket is None else {"p-ticket": ticket}
            continue
        break
    renewed = _token_from(answer)
    if renewed.user_id is None and token.user_id is not None:
        renewed = AccessToken(
            renewed.token,
            renewed.md_token,
            renewed.expiration,
            token.user_id,
            token.name,
            minted_at=renewed.minted_at,
        )
    return renewed


async def fetch_user_id(client: httpx.AsyncClient, rest_url: str, token: AccessToken) -> int:
    """``GET /auth/me`` for a caller-given token whose user id we do not know."""
    request = client.build_request(
        "GET", f"{rest_url}/auth/me", headers={"Authorization": f"Bearer {token.token}"}
    )
    body = await _send(client, request)
    user_id = body.get("userId") if isinstance(body, dict) else None
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise AuthenticationError("GET /auth/me did not return a userId", retryable=True)
    return user_id


class TokenKeeper:
    """Keeps one valid access token for the engine: renew ahead of expiry, single-flight.

    Tradovate caps concurrent sessions at two and evicts the oldest when a third login
    arrives (docs/protocol.md §9), so the keeper prefers ``renewaccesstoken`` (same
    session) and logs in again only when renewal is refused. Every caller of :meth:`get`
    shares one refresh at a time: concurrent needs wait for the same result instead of each
    opening a session.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        rest_url: str,
        credentials: Credentials | None,
        initial: AccessToken | None,
        *,
        wall_clock: Callable[[], datetime],
        margin: float,
        pace: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._http = http
        self._pace = pace
        self._rest_url = rest_url
        self._credentials = credentials
        self._token: AccessToken | None = None
        self._renew_at = float("-inf")
        self._rejected = False
        self._wall_clock = wall_clock
        self._margin = margin
        self._lock = trio.Lock()
        #: How many renewals and logins happened (for tests and health reports).
        self.renewals = 0
        self.logins = 0
        if initial is not None:
            self._hold(initial)

    def _hold(self, token: AccessToken) -> None:
        """Keep ``token`` and decide, once, when to renew it (in trio time).

        The wall clock is read only here: comparing it again and again with a server's
        ``expirationTime`` would, on a machine whose clock is off, find every new token
        already due and renew in a tight loop. So the renewal time is fixed at receipt and
        never sooner than :data:`MIN_RENEW_INTERVAL` away (``renewaccesstoken`` is limited
        to 15 an hour, P-RL). A token without ``expirationTime`` is assumed to live
        :data:`ASSUMED_LIFETIME` (the documented 80 minutes, P-ATR).
        """
        left = token.seconds_left(self._wall_clock())
        if left is not None and left > MAX_TOKEN_LIFETIME:
            logger.warning(
                "the new token claims to live %.0f s, beyond the %.0f s believed: treating its "
                "expiry as unknown",
                left,
                MAX_TOKEN_LIFETIME,
            )
            left = None
        if left is None:
            left = ASSUMED_LIFETIME
        due_in = left - self._margin
        if due_in < MIN_RENEW_INTERVAL:
            logger.warning(
                "the new token is due for renewal in %.0f s by this machine's clock (clock "
                "skew, or a short lifetime): renewing in %.0f s instead",
                due_in,
                MIN_RENEW_INTERVAL,
            )
            due_in = MIN_RENEW_INTERVAL
        self._token = token
        self._renew_at = trio.current_time() + due_in
        self._rejected = False

    @property
    def token(self) -> AccessToken | None:
        """The token currently held (possibly stale)."""
        return self._token

    def _good(self) -> bool:
        return (
            self._token is not None
            and not self._rejected
            and (trio.current_time() < self._renew_at)
        )

    async def get(self) -> AccessToken:
        """A token that is neither rejected nor within ``margin`` of expiry.

        Raises:
            AuthenticationError: no token could be had (bad credentials, captcha, or a
                caller-given token that the server refuses to renew).
            ConnectError: the REST endpoint could not be reached.
        """
        async with self._lock:
            if not self._good():
                self._hold(await self._refresh())
            assert self._token is not None
            return self._token

    def reject(self, token: AccessToken) -> None:
        """The server refused ``token`` (401 at authorize): the next :meth:`get` replaces it."""
        if token is self._token:
            self._rejected = True

    async def _refresh(self) -> AccessToken:
        current = self._token
        if current is not None:
            try:
                if self._pace is not None:
                    await self._pace("auth/renewaccesstoken")
                renewed = await renew_access_token(self._http, self._rest_url, current)
            except (AuthenticationError, Penalized) as exc:
                logger.info("token renewal refused (%s); %s", exc, "logging in again")
            else:
                self.renewals += 1
                logger.info("access token renewed")
                return renewed
        if self._credentials is None:
            raise AuthenticationError(
                "the access token was rejected or expired and cannot be renewed; "
                "give credentials so the engine can log in again",
                status=401,
            )
        token = await request_access_token(self._http, self._rest_url, self._credentials)
        self.logins += 1
        logger.info("access token obtained by login for user %s", token.user_id)
        return token

    async def run(self) -> None:
        """Renew in the background when the held token comes due, forever.

        A failed renewal (network, or refused) is retried after a minute; the next
        connection attempt also refreshes through :meth:`get`, so nothing waits on this task.
        """
        while True:
            if self._token is None:
                await trio.sleep(60)
                continue
            await trio.sleep_until(self._renew_at)
            try:
                await self.get()
            except (AuthenticationError, ConnectError, Penalized) as exc:
                logger.warning("background token renewal failed (%s); retrying in 60 s", exc)
                await trio.sleep(60)
