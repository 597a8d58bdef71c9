"""Operators' pages, for admins only: the outbox by status with its failures on top, a
retry for each and a cancel for what has not gone yet, the messages the local sandbox
captured instead of delivering, the webhooks with every delivery attempt, and how the mail
is doing with the receiving providers (deliverability).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.core.fieldtypes import whole_number
from mailer.hooks import deliveries, endpoints
from mailer.hooks.events import EventType
from mailer.outbound import deliverability, outbox
from mailer.outbound.pacing import DomainPacing
from mailer.sandbox import smtp_server
from mailer.store.models import OutboxStatus
from mailer.web.common import checked_form, db, render, require, state, viewer_zone

LISTED = 100
STATUSES = [status.value for status in OutboxStatus]
# what the retry button is offered for; outbox.retry also takes waiting messages
RETRIED = (
    OutboxStatus.FAILED,
    OutboxStatus.EXPIRED,
    OutboxStatus.SKIPPED,
    OutboxStatus.CANCELLED,
)
T = TypeVar("T")
Change = Callable[[Connection, int, datetime], bool]


@require()
async def outbox_page(request: Request) -> Response:
    status = request.query_params.get("status", "")
    status = status if status in STATUSES else ""
    found = await db(request, _outbox, state(request).engine, status)
    done = {
        action: whole_number(request.query_params.get(action, ""))
        for action in ("retried", "cancelled")
    }
    context = {
        **found,
        **done,
        "status": status,
        "statuses": STATUSES,
        "retryable": RETRIED,
        "cancellable": outbox.CANCELLABLE,
    }
    return render(request, "ops_outbox.html", context)


@require()
async def retry(request: Request) -> Response:
    return await _change(request, outbox.retry, "retried", "failed, expired or skipped")


@require()
async def cancel(request: Request) -> Response:
    return await _change(request, outbox.cancel, "cancelled", "queued, deferred or sending")


async def _change(request: Request, change: Change, done: str, which: str) -> Response:
    """Apply an operator's retry or cancel and go back to the list it was pressed in."""
    form = await checked_form(request)
    message_id: int = request.path_params["id"]
    web = state(request)
    if not await db(request, _apply, web.engine, change, message_id, web.clock.now()):
        raise HTTPException(404, f"There is no {which} message {message_id}.")
    back = str(form.get("status", ""))
    query = {"status": back} if back in STATUSES else {}
    return RedirectResponse(f"/outbox?{urlencode({**query, done: message_id})}", 303)


@require()
async def sandbox_page(request: Request) -> Response:
    rows = await db(request, _read, state(request).engine, smtp_server.find)
    enabled = state(request).cfg.settings.sandbox.enabled
    return render(request, "ops_sandbox.html", {"rows": rows, "enabled": enabled})


@require()
async def sandbox_message(request: Request) -> Response:
    message_id: int = request.path_params["id"]
    found = await db(
        request, _read, state(request).engine, lambda conn: smtp_server.get(conn, message_id)
    )
    if found is None:
        raise HTTPException(404, f"The sandbox holds no message {message_id}.")
    return render(request, "ops_sandbox_message.html", {"message": found})


@require()
async def webhooks_page(request: Request) -> Response:
    """Read-only: webhooks are added and removed with `mailer webhooks`, which shows the
    signing secret once in a terminal rather than in a page a browser may keep."""
    found = await db(request, _webhooks, state(request).engine, request.query_params.get("failed"))
    return render(request, "ops_webhooks.html", found)


@require()
async def deliverability_page(request: Request) -> Response:
    """The last days per day and receiving domain, in the reader's zone, with the rates
    providers judge the sender by and a warning where one is over its threshold."""
    web = state(request)
    zone = viewer_zone(request)
    days = _days(request.query_params.get("days"))
    pacing = DomainPacing.from_config(web.cfg, web.engine)
    found = await db(request, _deliverability, pacing, web.clock.now(), zone, days)
    limits = deliverability.Thresholds.from_config(web.cfg)
    rows = found["rows"]
    return render(
        request,
        "ops_deliverability.html",
        {
            "rows": rows,
            "days": days,
            "total": deliverability.total(rows),
            "limits": limits,
            "warnings": deliverability.warnings(rows, limits),
            "slowed": found["slowed"],
        },
    )


DAY_CHOICES = (1, 7, 30, 90)


def _days(text: str | None) -> int:
    days = whole_number(text or "")
    return days if days in DAY_CHOICES else 7


def _deliverability(
    pacing: DomainPacing, now: datetime, zone: ZoneInfo, days: int
) -> dict[str, Any]:
    start = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    since = start - timedelta(days=days - 1)
    with pacing.engine.connect() as conn:
        return {
            "rows": deliverability.collect(conn, since, now, zone),
            "slowed": pacing.slowed_now(conn, now),
        }


def _webhooks(engine: Engine, failed: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            "endpoints": endpoints.find(conn),
            "deliveries": deliveries.find(conn, failed=bool(failed), limit=LISTED),
            "failed": bool(failed),
            "events": list(EventType),
        }


def _read(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return work(conn)


def _outbox(engine: Engine, status: str) -> dict[str, Any]:
    """Counts by status, and one status's messages or all with the failures first."""
    first = None if status else OutboxStatus.FAILED
    with engine.connect() as conn:
        rows = outbox.find(conn, status=status or None, limit=LISTED, first=first)
        return {"counts": outbox.counts(conn), "rows": rows}


def _apply(engine: Engine, change: Change, message_id: int, now: datetime) -> bool:
    with engine.begin() as conn:
        return change(conn, message_id, now)


routes = [
    Route("/outbox", outbox_page),
    Route("/outbox/{id:rowid}/retry", retry, methods=["POST"]),
    Route("/outbox/{id:rowid}/cancel", cancel, methods=["POST"]),
    Route("/sandbox", sandbox_page),
    Route("/sandbox/{id:rowid}", sandbox_message),
    Route("/webhooks", webhooks_page),
    Route("/deliverability", deliverability_page),
]
