"""For operators and their monitoring: /healthz and Prometheus /metrics, without sign-in
(metrics need a bearer token, or come only to this machine).

Metrics are read from the database at scrape time, so they are the same whichever process
is asked and survive restarts: messages by status, the queue due now, SMTP replies by
outcome over the last hour, and how long ago the inbox last moved.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mailer.core.clock import Clock
from mailer.outbound import deliverability
from mailer.outbound.outbox import ATTEMPTS, OUTBOX, WAITING
from mailer.store.models import MAILBOX_STATE, OutboxStatus
from mailer.web.clients import proxied
from mailer.web.common import db, state

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = {"127.0.0.1", "::1"}
DAY = timedelta(days=1)
UTC_ZONE = ZoneInfo("UTC")


async def healthz(request: Request) -> Response:
    """200 when the database answers; 503 otherwise, with why."""
    try:
        await db(request, _ping, state(request).engine)
    except SQLAlchemyError as exc:
        return PlainTextResponse(f"database unavailable: {exc.__class__.__name__}\n", 503)
    return PlainTextResponse("ok\n")


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def metrics(request: Request) -> Response:
    """Volumes and bounce rates are the business's own: only for the configured bearer
    token, or, without one, only for a scraper on this machine."""
    web = state(request)
    if not _may_scrape(request, web.cfg.secret("web", "metrics_token_env")):
        return PlainTextResponse("metrics need the bearer token ([web] metrics_token_env)\n", 403)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Figures(web.engine, web.clock))
    body = await db(request, generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE)


def _may_scrape(request: Request, token: str | None) -> bool:
    if token:
        sent = request.headers.get("Authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())
    client = request.client.host if request.client else ""
    return client in LOOPBACK and not proxied(request)  # a proxy here serves the world


class Figures(Collector):
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine, self.clock = engine, clock

    def collect(self) -> list[GaugeMetricFamily]:
        now = self.clock.now()
        with self.engine.connect() as conn:
            by_status = conn.execute(
                select(OUTBOX.c.status, func.count()).group_by(OUTBOX.c.status)
            ).all()
            due = conn.execute(
                select(func.count()).where(OUTBOX.c.status.in_(WAITING), OUTBOX.c.due_at <= now)
            ).scalar_one()
            replies = conn.execute(
                select(ATTEMPTS.c.outcome, func.count())
                .where(ATTEMPTS.c.at >= now - timedelta(hours=1))
                .group_by(ATTEMPTS.c.outcome)
            ).all()
            moved = conn.execute(select(MAILBOX_STATE.c.mailbox, MAILBOX_STATE.c.updated_at)).all()
            day = deliverability.total(deliverability.collect(conn, now - DAY, now, UTC_ZONE))
        messages = GaugeMetricFamily(
            "mailer_messages", "Outbox messages by status", labels=["status"]
        )
        counted = {str(status): count for status, count in by_status}
        for status in OutboxStatus:  # zeros too: a rate needs the series to exist
            messages.add_metric([status.value], counted.get(status.value, 0))
        queue = GaugeMetricFamily("mailer_queue_due", "Messages waiting whose time has come")
        queue.add_metric([], due)
        smtp = GaugeMetricFamily(
            "mailer_smtp_attempts_last_hour", "Delivery attempts by outcome", labels=["outcome"]
        )
        for outcome, count in replies:
            smtp.add_metric([outcome], count)
        lag = GaugeMetricFamily(
            "mailer_inbox_idle_seconds",
            "Seconds since the inbox watcher last logged a message, per mailbox",
            labels=["mailbox"],
        )
        for mailbox, updated_at in moved:
            lag.add_metric([mailbox], _seconds_since(updated_at, now))
        return [messages, queue, smtp, lag, *_deliverability(day)]


def _deliverability(day: deliverability.Counts) -> list[GaugeMetricFamily]:
    """The last 24 hours as `mailer stats` counts them, and the rates providers judge by."""
    counts = GaugeMetricFamily(
        "mailer_deliverability_last_day",
        "Sent, deferred, bounced, complained about and suppressed in the last 24 hours",
        labels=["kind"],
    )
    for kind in deliverability.COUNTED:
        counts.add_metric([kind], getattr(day, kind))
    rates = GaugeMetricFamily(
        "mailer_deliverability_rate_last_day",
        "Hard bounces and complaints per message sent in the last 24 hours",
        labels=["kind"],
    )
    rates.add_metric(["bounce"], day.bounce_rate or 0.0)
    rates.add_metric(["complaint"], day.complaint_rate or 0.0)
    return [counts, rates]


def _seconds_since(then: datetime, now: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


routes = [Route("/healthz", healthz), Route("/metrics", metrics)]
