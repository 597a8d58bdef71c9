"""How the mail is doing per day and domain: what operators read in `mailer stats`, on the
deliverability page and in the metrics, with warnings past the providers' thresholds."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.inbound.intake import AckPolicy
from mailer.outbound import deliverability, return_path
from mailer.outbound.deliverability import Counts, Row, Thresholds
from mailer.outbound.delivery import Delivery
from tests.command import environment, runner
from tests.smtp_sink import Sink
from tests.test_bounce_reports import (
    RETURN_PATH,
    _dsn,
    arf,
    report,
    send,
)
from tests.test_bounce_reports import delivery as delivery  # the fixtures
from tests.test_bounce_reports import verp_cfg as verp_cfg

SOFIA = ZoneInfo("Europe/Sofia")


def test_warnings_name_the_rate_the_domain_and_the_threshold() -> None:
    limits = Thresholds(bounce_rate=0.02, complaint_rate=0.003, min_sent=100)
    day = date(2026, 12, 1)
    rows = [
        Row(day=day, domain="gmail.com", counts=Counts(sent=400, hard=2, complaints=2)),
        Row(day=day, domain="abv.bg", counts=Counts(sent=200, hard=9)),
        Row(day=day, domain="tiny.example", counts=Counts(sent=20, hard=10)),  # too few to judge
    ]
    found = deliverability.warnings(rows, limits)
    assert found == [
        "all mail: hard bounces are 3.39% of 620 sent, over the 2.00% providers tolerate",
        "all mail: complaints are 0.32% of 620 sent, over the 0.30% providers tolerate",
        "gmail.com: complaints are 0.50% of 400 sent, over the 0.30% providers tolerate",
        "abv.bg: hard bounces are 4.50% of 200 sent, over the 2.00% providers tolerate",
    ]
    assert deliverability.warnings([], limits) == []


@pytest.fixture
def mailer_env(verp_cfg: Config, database_url: str) -> dict[str, str]:
    env = environment(verp_cfg.path, database_url)
    env.update(MAILER_BOUNCES__RETURN_PATH=RETURN_PATH, MAILER_PATHS__DATA=str(verp_cfg.data_dir))
    return env


async def test_stats_count_each_kind_per_local_day_and_domain(
    engine: Engine,
    verp_cfg: Config,
    delivery: Delivery,
    clock: ManualClock,
    sink: tuple[Sink, int],
    mailer_env: dict[str, str],
) -> None:
    # 23:30 UTC on 1 December is 01:30 on 2 December in Sofia, the business's zone
    clock.set(datetime(2026, 12, 1, 23, 30, tzinfo=UTC))
    sink[0].faults.append(("RCPT", "451 4.7.1 try again later"))  # emma's first try
    ids = await send(engine, delivery, clock, "maria", "siti", "emma")
    secret = AckPolicy.from_config(verp_cfg).secret
    verp = {who: return_path.address(secret, RETURN_PATH, n) for who, n in ids.items()}
    clock.advance(timedelta(hours=2))  # emma's retry is due
    assert await delivery.deliver_due() == 1
    (maria_mail,) = [r for r in sink[0].received if r.rcpt_tos == ["maria@example.com"]]
    report(engine, verp_cfg, _dsn("5.1.1", "failed", "550 no such user")(verp["siti"]), clock.now())
    report(engine, verp_cfg, _dsn("4.2.2", "failed", "552 full")(verp["emma"]), clock.now())
    original = f"Return-Path: <{maria_mail.mail_from}>\r\n".encode() + maria_mail.data
    report(engine, verp_cfg, arf(original, headers_only=True), clock.now())

    with engine.connect() as conn:
        since, until = clock.now() - timedelta(days=2), clock.now() + timedelta(seconds=1)
        rows = deliverability.collect(conn, since, until, SOFIA)
    assert {row.day for row in rows} == {date(2026, 12, 2)}
    (row,) = rows
    assert row.domain == "example.com"
    counts = row.counts
    assert (counts.sent, counts.deferred) == (3, 1)
    assert (counts.soft, counts.hard, counts.complaints, counts.suppressed) == (1, 1, 1, 1)

    clock.advance(timedelta(minutes=1))  # the operator looks a minute after the last send
    mailer = runner(mailer_env, clock=clock)  # the days counted back from the test's today
    shown = json.loads(mailer("stats", "--days", "3", "--json").stdout)
    assert shown["total"]["sent"] == 3 and shown["total"]["bounce_rate"] == round(1 / 3, 5)
    assert shown["days"][0]["day"] == "2026-12-02" and shown["days"][0]["domain"] == "example.com"
    assert shown["warnings"] == [], "three messages are too few to judge a sender by"
    table = mailer("stats").stdout
    assert "example.com" in table and "Mail since" in table
