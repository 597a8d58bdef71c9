"""Schedule fan-out at scale: a day's birthdays and a newsletter to every customer.

    .venv/bin/python bench/fanout.py [--customers 1000000] [--database-url URL]

The customers (five zones, birthdays spread over the year, 90% tagged "newsletter") are
written by a child process, so the peak RSS printed is the fan-out's alone. Prints the
birthday selection time for one day across all zones, the newsletter fan-out time and rate,
and peak RSS; the last line reads `birthdays X s, newsletter Y s (N/s), peak RSS M MB`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.common and tests.pg

from sqlalchemy import Engine, func, insert, select  # noqa: E402

from bench.common import add_database_options, database_url  # noqa: E402
from mailer.customers.profiles import CUSTOMERS, TAGS  # noqa: E402
from mailer.outbound.outbox import OUTBOX  # noqa: E402
from mailer.scheduling import firing  # noqa: E402
from mailer.scheduling.firing import Firing  # noqa: E402
from mailer.scheduling.schedules import Audience, BirthdaySchedule, NewsletterSchedule  # noqa: E402
from mailer.store import db, migrate  # noqa: E402

ZONES = ("Europe/Sofia", "Asia/Jakarta", "Asia/Manila", "Pacific/Auckland", "America/Los_Angeles")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
BIRTHDAY = date(2027, 3, 14)
FIRING = Firing(fallback_zone="Europe/Sofia", domain="example.com")


def populate(url: str, count: int) -> None:
    engine = db.connect(url)
    migrate.upgrade(engine)
    first = date(2001, 1, 1)

    def rows() -> Iterator[dict[str, object]]:
        for i in range(count):
            born = first + timedelta(days=i % 366)
            yield {
                "email": f"customer{i}@example.com",
                "name": f"Customer {i}",
                "locale": ("bg", "id", "tl", "en", "en")[i % 5],
                "timezone": ZONES[i % 5],
                "birth_month": born.month,
                "birth_day": born.day,
                "fields": {},
                "marketing_consent": i % 50 != 0,  # 2% said no: written as skipped
                "relationship_consent": True,
                "source": "bench",
                "created_at": CREATED,
                "updated_at": CREATED,
            }

    iterator = rows()
    start = time.perf_counter()
    while batch := list(islice(iterator, 10_000)):
        with engine.begin() as conn:
            ids = conn.execute(insert(CUSTOMERS).returning(CUSTOMERS.c.id), batch).scalars()
            tags = [{"customer_id": i, "tag": "newsletter"} for i in ids if i % 10]
            conn.execute(insert(TAGS), tags)
    print(f"wrote {count} customers in {time.perf_counter() - start:.0f} s (child process)")


def birthdays(engine: Engine) -> tuple[float, int]:
    """Every zone's birthday run for one day, fired once at 23:59 UTC when all five are due."""
    # two days' validity: Auckland's 09:00 on the 14th was 20:00 UTC on the 13th
    schedule = BirthdaySchedule(template="birthday", valid_for=timedelta(days=2))
    moment = datetime(BIRTHDAY.year, BIRTHDAY.month, BIRTHDAY.day, 23, 59, tzinfo=UTC)
    start = time.perf_counter()
    results = firing.fire_due(engine, {"birthdays": schedule}, moment, FIRING)
    elapsed = time.perf_counter() - start
    greeted = sum(r.queued + r.skipped for r in results if r.occurrence == BIRTHDAY.isoformat())
    return elapsed, greeted


def newsletter(engine: Engine) -> tuple[float, int]:
    schedule = NewsletterSchedule(
        template="newsletter",
        cron="0 9 1 * *",
        timezone="Europe/Sofia",
        audience=Audience(tags_any=["newsletter"]),
        params={"headline": "December news", "intro": "Our winter blend is back."},
    )
    moment = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    start = time.perf_counter()
    (result,) = firing.fire_due(engine, {"newsletter": schedule}, moment, FIRING)
    return time.perf_counter() - start, result.queued + result.skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    add_database_options(parser)
    parser.add_argument("--populate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate_only:
        populate(args.database_url, args.customers)
        return
    with ExitStack() as stack:
        url = database_url(stack, args, "fanout")
        command = [sys.executable, __file__, "--populate-only", "--customers", str(args.customers)]
        subprocess.run([*command, "--database-url", url], check=True)
        engine = db.connect(url)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        took, greeted = birthdays(engine)
        print(f"birthdays on {BIRTHDAY}: {greeted} customers in 5 zones queued in {took:.2f} s")
        sent, count = newsletter(engine)
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        rate = count / sent
        print(f"newsletter: {count} customers in {sent:.1f} s ({rate:.0f}/s); outbox {rows} rows")
        print(f"peak RSS {peak} MB (before fan-out {before} MB)")
        print(f"birthdays {took:.2f} s, newsletter {sent:.1f} s ({rate:.0f}/s), peak RSS {peak} MB")
        engine.dispose()


if __name__ == "__main__":
    main()
