"""Access tokens over REST: request, renew, and who-am-I (tradovate-protocol.md §8-9).

Tradovate answers most failures with HTTP 200 and a body that says so: ``errorText`` for bad
credentials, ``p-ticket``/``p-time`` for a time penalty, ``p-captcha`` when only a human could
go on. This module turns those bodies into :class:`AccessToken` or typed errors; the engine
decides what to do with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import trio

from .config import Credentials
from .errors import AuthenticationError, CaptchaRequired, ConnectError, classify_connect_error

logger = logging.getLogger("trio_tradovate.auth")

#: How many time penalties one token request honours before giving up.
MAX_PENALTIES = 3


@dataclass(frozen=True)
class AccessToken:
    """A token and what came with it; the secrets stay out of ``repr``."""

    token: str = field(repr=False)
    md_token: str | None = field(default=None, repr=False)
    expiration: datetime | None = None
    user_id: int | None = None
    name: str | None = None
    #: Minted by us in this process (``True``) or given by the caller (``False``).
    fresh: bool = True

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until ``expiration``; ``None`` when the server did not say."""
        if self.expiration is None:
            return None
        return (self.expiration - now).total_seconds()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _token_from(body: Any) -> AccessToken:
    if not isinstance(body, dict):
        raise AuthenticationError("token response is not a JSON object")
    if body.get("p-captcha"):
        raise CaptchaRequired(
            "Tradovate asks for a captcha on the token request; a program cannot answer it. "
            "Wait about an hour before trying again."
        )
    if "errorText" in body and not body.get("accessToken"):
        raise AuthenticationError(f"token request rejected: {body['errorText']}")
    token = body.get("accessToken")
    if not isinstance(token, str) or not token:
        raise AuthenticationError("token response has no accessToken")
    user_id = body.get("userId")
    return AccessToken(
        token=token,
        md_token=body.get("mdAccessToken") if isinstance(body.get("mdAccessToken"), str) else None,
        expiration=_parse_time(body.get("expirationTime")),
        user_id=user_id if isinstance(user_id, int) else None,
        name=body.get("name") if isinstance(body.get("name"), str) else None,
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
        return response.json()
    except ValueError:
        raise AuthenticationError(f"{request.url.path} answered with invalid JSON") from None


async def request_access_token(
    client: httpx.AsyncClient, rest_url: str, credentials: Credentials
) -> AccessToken:
    """``POST /auth/accesstokenrequest``, honouring time penalties (wait ``p-time``, resend the
    identical body plus ``p-ticket``, §8)."""
    body = credentials.request_body()
    for _ in range(MAX_PENALTIES + 1):
        request = client.build_request("POST", f"{rest_url}/auth/accesstokenrequest", json=body)
        answer = await _send(client, request)
        if isinstance(answer, dict) and "p-ticket" in answer and not answer.get("p-captcha"):
            wait = float(answer.get("p-time") or 0)
            logger.warning("token request penalised: waiting %.1f s, then resending", wait)
            await trio.sleep(wait)
            body = {**credentials.request_body(), "p-ticket": answer["p-ticket"]}
            continue
        return _token_from(answer)
    raise AuthenticationError("token request still penalised after several waits")


async def renew_access_token(
    client: httpx.AsyncClient, rest_url: str, token: AccessToken
) -> AccessToken:
    """``GET /auth/renewaccesstoken``: extends the session instead of opening a new one (§9)."""
    request = client.build_request(
        "GET",
        f"{rest_url}/auth/renewaccesstoken",
        headers={"Authorization": f"Bearer {token.token}"},
    )
    renewed = _token_from(await _send(client, request))
    if renewed.user_id is None and token.user_id is not None:
        renewed = AccessToken(
            renewed.token, renewed.md_token, renewed.expiration, token.user_id, token.name
        )
    return renewed


async def fetch_user_id(client: httpx.AsyncClient, rest_url: str, token: AccessToken) -> int:
    """``GET /auth/me`` for a caller-given token whose user id we do not know."""
    request = client.build_request(
        "GET", f"{rest_url}/auth/me", headers={"Authorization": f"Bearer {token.token}"}
    )
    body = await _send(client, request)
    user_id = body.get("userId") if isinstance(body, dict) else None
    if not isinstance(user_id, int):
        raise AuthenticationError("GET /auth/me did not return a userId", retryable=True)
    return user_id
