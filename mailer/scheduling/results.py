"""What marketing reads about schedules: each file and when it fires next, and what became
of every run: its messages by status and reason, who unsubscribed since, and mail per day.

Read-only, behind ``mailer schedules list`` and the schedule pages. A run's messages are
tied to it by ``outbox.run_id`` and counted by the database in grouped rows, so a run of a
million messages costs what a run of ten does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from mailer.core.clock import Clock
from mailer.core.config import Config
from mailer.core.errors import Problem
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import outbox
from mailer.outbound.outbox import OUTBOX
from mailer.outbound.templates import TemplateStore
from mailer.scheduling import occurrences
from mailer.scheduling.fanout import RUNS
from mailer.scheduling.schedules import Schedule, load_schedules, segment_names
from mailer.store.db import QUARTER_HOUR, quarter_hour
from mailer.store.models import OutboxStatus

RUNS_SHOWN = 60
DAYS_CHARTED = 30
EXPLAINED = (OutboxStatus.SKIPPED, OutboxStatus.DEFERRED)  # counted by reason as well
TOTALLED = (
    OutboxStatus.QUEUED,
    OutboxStatus.SENT,
    OutboxStatus.DEFERRED,
    OutboxStatus.SKIPPED,
    OutboxStatus.EXPIRED,
    OutboxStatus.BOUNCED,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    name: str
    schedule: Schedule
    next_fire: datetime | None
    zones: list[str]  # occurrences.EVERYONE ("") for one instant for everybody


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """One run as fanned out (queued, skipped) and as its messages stand now."""

    id: int
    occurrence: str
    zone: str
    planned_at: datetime
    started_at: datetime
    status: str
    queued: int
    skipped: int
    by_status: Mapping[str, int]
    reasons: Sequence[tuple[str, str, int]]  # (status, reason, messages), most first
    unsubscribed: int  # recipients who unsubscribed after the run started


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    sent: int
    not_sent: int


def load(cfg: Config, clock: Clock) -> tuple[dict[str, Schedule], list[Problem]]:
    """The schedule files as the daemon loads them; broken ones come back as problems."""
    names = TemplateStore(cfg.templates_dir).names()
    return load_schedules(cfg.schedules_dir, names, clock, segment_names(cfg.settings.insight))


def summaries(
    schedules: Mapping[str, Schedule], zones: Iterable[str], now: datetime
) -> list[Summary]:
    """Each schedule with its next firing, given the zones customers live in."""
    zones = list(zones)
    return [
        Summary(
            name=name,
            schedule=s,
            next_fire=occurrences.next_fire(s, zones, now),
            zones=occurrences.zones_for(s, zones),
        )
        for name, s in schedules.items()
    ]


def problems_by_file(problems: Iterable[Problem]) -> dict[str, list[Problem]]:
    """Problems under the schedule (file stem) they are in; each names its file and key."""
    found: dict[str, list[Problem]] = {}
    for problem in problems:
        found.setdefault(Path(problem.where.partition(": ")[0]).stem, []).append(problem)
    return found


def runs(conn: Connection, schedule: str, limit: int = RUNS_SHOWN) -> list[RunReport]:
    """The latest runs of a schedule, newest first."""
    query = (
        select(RUNS)
        .where(RUNS.c.schedule == schedule)
        .order_by(RUNS.c.planned_at.desc(), RUNS.c.zone)
        .limit(limit)
    )
    rows = conn.execute(query).mappings().all()
    ids = [row["id"] for row in rows]
    by_status, reasons, gone = _by_status(conn, ids), _reasons(conn, ids), _unsubscribed(conn, ids)
    return [
        RunReport(
            id=row["id"],
            occurrence=row["occurrence"],
            zone=row["zone"],
            planned_at=row["planned_at"],
            started_at=row["started_at"],
            status=row["status"],
            queued=row["queued"],
            skipped=row["skipped"],
            by_status=by_status.get(row["id"], {}),
            reasons=[(s, r, n) for (s, r), n in reasons.get(row["id"], Counter()).most_common()],
            unsubscribed=gone.get(row["id"], 0),
        )
        for row in rows
    ]


def totals(reports: Iterable[RunReport]) -> dict[str, int]:
    """The runs' messages by status now, and ``audience``: the customers they were fanned
    out to (queued or skipped at fan-out)."""
    found = dict.fromkeys(["audience", *TOTALLED], 0)
    for report in reports:
        found["audience"] += report.queued + report.skipped
        for status in TOTALLED:
            found[status] += report.by_status.get(status, 0)
    return found


def daily(
    conn: Connection, schedule: str, today: date, zone: tzinfo, days: int = DAYS_CHARTED
) -> list[Day]:
    """The schedule's messages by the day in ``zone`` (the reader's) they were due, sent or
    not, up to ``today`` there. The database counts per quarter hour (at most 2,880 rows for
    30 days), which fold into local days here."""
    first = today - timedelta(days=days - 1)
    quarter = quarter_hour(OUTBOX.c.due_at, conn.dialect.name).label("quarter")
    sent = OUTBOX.c.status == OutboxStatus.SENT
    query = (
        select(quarter, func.count().filter(sent), func.count().filter(~sent))
        .where(
            OUTBOX.c.run_id.in_(select(RUNS.c.id).where(RUNS.c.schedule == schedule)),
            OUTBOX.c.due_at >= datetime.combine(first, time(), zone),
            OUTBOX.c.due_at < datetime.combine(today + timedelta(days=1), time(), zone),
        )
        .group_by(quarter)
    )
    counted: dict[date, tuple[int, int]] = {}
    for number, sent_count, not_sent in conn.execute(query):
        day = datetime.fromtimestamp(number * QUARTER_HOUR, zone).date()
        before = counted.get(day, (0, 0))
        counted[day] = (before[0] + sent_count, before[1] + not_sent)
    every = (first + timedelta(days=i) for i in range(days))
    return [Day(d, *counted.get(d, (0, 0))) for d in every]


def _by_status(conn: Connection, run_ids: list[int]) -> dict[int, dict[str, int]]:
    query = (
        select(OUTBOX.c.run_id, OUTBOX.c.status, func.count())
        .where(OUTBOX.c.run_id.in_(run_ids))
        .group_by(OUTBOX.c.run_id, OUTBOX.c.status)
    )
    found: dict[int, dict[str, int]] = {}
    for run_id, status, count in conn.execute(query):
        found.setdefault(run_id, {})[status] = count
    return found


def _reasons(conn: Connection, run_ids: list[int]) -> dict[int, Counter[tuple[str, str]]]:
    """Why messages were skipped or deferred; failures' SMTP replies differ per message, so
    they are read one by one in the outbox instead."""
    query = (
        select(OUTBOX.c.run_id, OUTBOX.c.status, OUTBOX.c.reason, func.count())
        .where(OUTBOX.c.run_id.in_(run_ids), OUTBOX.c.status.in_(EXPLAINED))
        .group_by(OUTBOX.c.run_id, OUTBOX.c.status, OUTBOX.c.reason)
    )
    found: dict[int, Counter[tuple[str, str]]] = {}
    for run_id, status, reason, count in conn.execute(query):
        why = outbox.cause(reason or "no reason recorded")
        found.setdefault(run_id, Counter())[(status, why)] += count
    return found


def _unsubscribed(conn: Connection, run_ids: list[int]) -> dict[int, int]:
    joined = OUTBOX.join(CUSTOMERS, CUSTOMERS.c.id == OUTBOX.c.customer_id).join(
        RUNS, RUNS.c.id == OUTBOX.c.run_id
    )
    query = (
        select(OUTBOX.c.run_id, func.count())
        .select_from(joined)
        .where(OUTBOX.c.run_id.in_(run_ids), CUSTOMERS.c.unsubscribed_at > RUNS.c.started_at)
        .group_by(OUTBOX.c.run_id)
    )
    return {run_id: count for run_id, count in conn.execute(query)}
