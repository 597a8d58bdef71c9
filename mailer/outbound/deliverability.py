"""How the installation's mail is doing, per day and per receiving domain: what was sent,
deferred by the receiving side, bounced softly or hard, complained about, suppressed; and
the rates that mailbox providers judge a sender by, against the thresholds they publish.

Counted from what is stored (delivery attempts, bounce reports, the customers' history), so
every process and `mailer stats` see the same figures. The database groups by quarter hour
and domain; the quarter hours fold into days of the reader's zone here, exactly (every
zone's offset is whole quarter hours). A bounce or complaint counts on the day it was
reported, which may be a day after the mail it is about.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Table, func, select
from sqlalchemy.engine import Connection

from mailer.core.config import Config
from mailer.outbound.bounces import REPORTS, Kind
from mailer.outbound.outbox import ATTEMPTS, OUTBOX, Result
from mailer.store.db import QUARTER_HOUR, domain_of, quarter_hour
from mailer.store.models import Customer, CustomerChange

CUSTOMERS: Table = Customer.__table__  # type: ignore[attr-defined]
CHANGES: Table = CustomerChange.__table__  # type: ignore[attr-defined]
SUPPRESSED = "suppressed_reason"  # the history's field for an address mail stopped to
OTHERS = "(other domains)"
DAY = timedelta(days=1)
log = logging.getLogger("mailer.deliverability")


@dataclass(slots=True, kw_only=True)
class Counts:
    sent: int = 0
    deferred: int = 0  # the receiving server said "try later" (4xx)
    soft: int = 0
    hard: int = 0  # bounced for good, reported later or refused (5xx) when sent
    complaints: int = 0
    suppressed: int = 0

    def add(self, other: Counts) -> None:
        for name in COUNTED:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def bounce_rate(self) -> float | None:
        return self.hard / self.sent if self.sent else None

    @property
    def complaint_rate(self) -> float | None:
        return self.complaints / self.sent if self.sent else None


COUNTED = tuple(f.name for f in fields(Counts))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Rates past which providers junk or refuse a sender's mail, judged only over at least
    ``min_sent`` messages: three bounces in forty messages say little."""

    bounce_rate: float
    complaint_rate: float
    min_sent: int = 100

    @classmethod
    def from_config(cls, cfg: Config) -> Thresholds:
        bounces = cfg.settings.bounces
        return cls(bounces.bounce_rate_max, bounces.complaint_rate_max)


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    day: date
    domain: str
    counts: Counts = field(default_factory=Counts)


def collect(
    conn: Connection, since: datetime, until: datetime, zone: ZoneInfo, *, top: int = 10
) -> list[Row]:
    """Each day's figures per domain, the ``top`` domains by mail sent in the period and
    the rest together, newest day first."""
    found: dict[tuple[date, str], Counts] = defaultdict(Counts)
    for quarter, domain, what, count in _counted(conn, since, until):
        day = datetime.fromtimestamp(quarter * QUARTER_HOUR, UTC).astimezone(zone).date()
        counts = found[day, domain]
        setattr(counts, what, getattr(counts, what) + count)
    volume: dict[str, int] = defaultdict(int)
    for (_, domain), counts in found.items():
        volume[domain] += counts.sent
    kept = set(sorted(volume, key=lambda d: (-volume[d], d))[:top])
    folded: dict[tuple[date, str], Counts] = defaultdict(Counts)
    for (day, domain), counts in found.items():
        folded[day, domain if domain in kept else OTHERS].add(counts)
    ordered = sorted(folded.items(), key=lambda item: (-item[0][0].toordinal(), -item[1].sent))
    return [Row(day=day, domain=domain, counts=counts) for (day, domain), counts in ordered]


def total(rows: Iterable[Row]) -> Counts:
    summed = Counts()
    for row in rows:
        summed.add(row.counts)
    return summed


def by_domain(rows: Iterable[Row]) -> dict[str, Counts]:
    summed: dict[str, Counts] = defaultdict(Counts)
    for row in rows:
        summed[row.domain].add(row.counts)
    return dict(summed)


def warnings(rows: Sequence[Row], limits: Thresholds) -> list[str]:
    """A rate over its threshold, over the whole period and for each domain, in words."""
    judged = {"all mail": total(rows), **by_domain(rows)}
    found = []
    for name, counts in judged.items():
        if counts.sent < limits.min_sent:
            continue
        for what, rate, limit in (
            ("hard bounces", counts.bounce_rate, limits.bounce_rate),
            ("complaints", counts.complaint_rate, limits.complaint_rate),
        ):
            if rate is not None and rate > limit:
                found.append(
                    f"{name}: {what} are {rate:.2%} of {counts.sent} sent, over the "
                    f"{limit:.2%} providers tolerate"
                )
    return found


def _counted(
    conn: Connection, since: datetime, until: datetime
) -> Iterable[tuple[int, str, str, int]]:
    """(quarter hour, domain, which count, how many) from each source."""
    dialect = conn.dialect.name
    attempts = select(
        quarter_hour(ATTEMPTS.c.at, dialect).label("q"),
        domain_of(OUTBOX.c.to_address, dialect).label("d"),
        ATTEMPTS.c.outcome,
        ATTEMPTS.c.smtp_code,
        func.count(),
    ).join(OUTBOX, OUTBOX.c.id == ATTEMPTS.c.outbox_id)
    attempts = attempts.where(ATTEMPTS.c.at >= since, ATTEMPTS.c.at < until).group_by(
        "q", "d", ATTEMPTS.c.outcome, ATTEMPTS.c.smtp_code
    )
    for quarter, domain, outcome, code, count in conn.execute(attempts):
        what = _attempt_count(outcome, code)
        if what:
            yield quarter, domain, what, count
    reports = (
        select(
            quarter_hour(REPORTS.c.reported_at, dialect).label("q"),
            domain_of(REPORTS.c.address, dialect).label("d"),
            REPORTS.c.kind,
            func.count(),
        )
        .where(REPORTS.c.reported_at >= since, REPORTS.c.reported_at < until)
        .group_by("q", "d", REPORTS.c.kind)
    )
    names = {Kind.SOFT: "soft", Kind.HARD: "hard", Kind.COMPLAINT: "complaints"}
    for quarter, domain, kind, count in conn.execute(reports):
        yield quarter, domain, names[Kind(kind)], count
    suppressions = (
        select(
            quarter_hour(CHANGES.c.at, dialect).label("q"),
            domain_of(CUSTOMERS.c.email, dialect).label("d"),
            func.count(),
        )
        .join(CUSTOMERS, CUSTOMERS.c.id == CHANGES.c.customer_id)
        .where(CHANGES.c.field == SUPPRESSED, CHANGES.c.at >= since, CHANGES.c.at < until)
        .group_by("q", "d")
    )
    for quarter, domain, count in conn.execute(suppressions):
        yield quarter, domain, "suppressed", count


def _attempt_count(outcome: str, code: int | None) -> str | None:
    if outcome == Result.SENT:
        return "sent"
    if outcome == Result.RETRY and code is not None and 400 <= code < 500:
        return "deferred"
    if outcome == Result.FAILED and code is not None and code >= 500:
        return "hard"
    return None


WATCHED = timedelta(days=7)  # the period the daemon's warnings judge


@dataclass(kw_only=True)
class Watch:
    """The daemon's look at the rates, once an hour: a warning in the log when one crosses
    its threshold, said again only when what is wrong changes or a day has passed."""

    engine: Engine
    limits: Thresholds
    zone: ZoneInfo
    every: timedelta = timedelta(hours=1)
    _looked: datetime | None = None
    _said: tuple[list[str], datetime] | None = None

    def tick(self, now: datetime) -> int:
        if self._looked is not None and now - self._looked < self.every:
            return 0
        self._looked = now
        with self.engine.connect() as conn:
            found = warnings(collect(conn, now - WATCHED, now, self.zone), self.limits)
        if found and (self._said is None or self._said[0] != found or now - self._said[1] >= DAY):
            for warning in found:
                log.warning("deliverability over the last 7 days: %s", warning)
            self._said = (found, now)
        elif not found:
            self._said = None
        return 0
