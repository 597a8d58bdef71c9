"""Who is calling: the key in ``Authorization: Bearer KEY``, its scopes and its rate.

A missing, unknown or revoked key is 401 and says nothing more; a key without the scope a
route needs is 403; a key past its requests for the minute is 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mailer.api import keys, limits
from mailer.api.keys import ApiKey, Scope
from mailer.core.clock import Clock
from mailer.core.config import Config

BEARER = HTTPBearer(auto_error=False, description="an API key from `mailer api-keys create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


@dataclass(frozen=True, slots=True)
class ApiState:
    cfg: Config
    engine: Engine
    clock: Clock


def state(request: Request) -> ApiState:
    found = request.app.state.api
    assert isinstance(found, ApiState)
    return found


def caller(scope: Scope) -> Callable[[Request, Credentials], Awaitable[ApiKey]]:
    """A dependency: the calling key, which must hold ``scope``; looked up, counted and
    judged in one trip to a worker thread (the database calls block)."""

    async def check(request: Request, credentials: Credentials) -> ApiKey:
        secret = credentials.credentials if credentials else ""
        return await run_in_threadpool(_allowed, state(request), secret, scope)

    return check


def _allowed(api: ApiState, secret: str, scope: Scope) -> ApiKey:
    key = _counted(api, secret)
    if scope not in key.scopes:
        raise HTTPException(403, f"this key lacks the scope {scope.value}")
    return key


def _counted(api: ApiState, secret: str) -> ApiKey:
    now = api.clock.now()
    with api.engine.begin() as conn:
        key = keys.authenticate(conn, secret, now) if secret else None
        if key is None:
            raise HTTPException(
                401, "a valid API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        number = limits.count(conn, key.id, now)
    limit = key.rate_per_minute or api.cfg.settings.api.rate_per_minute
    verdict = limits.judge(number, limit, now)
    if not verdict.allowed:
        raise HTTPException(
            429,
            f"this key may make {limit} requests a minute",
            headers={"Retry-After": str(verdict.retry_after)},
        )
    return key
