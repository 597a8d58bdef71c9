"""A customer's timeline and the customer list by last contact, at scale.

    .venv/bin/python bench/timeline.py [--entries 5000] [--customers 100000]
        [--contacts 10] [--postgres | --database-url URL]

Builds one customer with ``--entries`` timeline entries (two fifths mail in every status,
one fifth inquiries, two fifths calls, meetings and notes), and ``--customers`` others with
``--contacts`` logged contacts each (one in ten never contacted), then prints the median
time of: the customer page's timeline (first page, and a page deep in the history), and
the customer list sorted by last contact both ways and filtered to "not spoken to in 90
days". Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.common and tests.pg

from sqlalchemy import Engine, insert  # noqa: E402

from bench.common import add_database_options, database_url  # noqa: E402
from mailer.customers import contacts  # noqa: E402
from mailer.customers.profiles import CUSTOMERS  # noqa: E402
from mailer.inbound.inquiries import INQUIRIES  # noqa: E402
from mailer.outbound.outbox import OUTBOX  # noqa: E402
from mailer.relationship import history  # noqa: E402
from mailer.store import db, migrate  # noqa: E402

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MAIL_STATUSES = ("sent", "sent", "sent", "deferred", "skipped", "bounced", "expired")
KINDS = ("call", "meeting", "note")
BATCH = 10_000


def _batched(rows: Iterator[dict[str, Any]], engine: Engine, table: Any) -> None:
    while batch := list(islice(rows, BATCH)):
        with engine.begin() as conn:
            conn.execute(insert(table), batch)


def _customer(i: int) -> dict[str, Any]:
    return {
        "email": f"customer{i}@example.com",
        "name": f"Customer {i}",
        "search_text": f"customer{i}@example.com\ncustomer {i}\ncustomer",
        "fields": {},
        "marketing_consent": True,
        "relationship_consent": True,
        "source": "bench",
        "created_at": NOW - timedelta(days=800),
        "updated_at": NOW - timedelta(days=800),
    }


def _contact(customer_id: int, n: int, at: datetime) -> dict[str, Any]:
    kind = KINDS[n % 3]
    return {
        "customer_id": customer_id,
        "kind": kind,
        "direction": None if kind == "note" else ("out", "in")[n % 2],
        "at": at,
        "duration_seconds": 600 if kind == "call" else None,
        "outcome": "",
        "location": "",
        "attendees": [],
        "note": f"note {n}",
        "logged_by": "sam",
        "created_at": at,
    }


def the_customer(engine: Engine, entries: int) -> int:
    """One customer with ``entries`` timeline entries, one every 37 minutes going back."""
    with engine.begin() as conn:
        found = conn.execute(insert(CUSTOMERS).values(_customer(0))).inserted_primary_key
    assert found is not None
    customer_id = int(found[0])

    def at(n: int) -> datetime:
        return NOW - timedelta(minutes=37 * n)

    mail = (
        {
            "dedupe_key": f"bench:{n}",
            "customer_id": customer_id,
            "to_address": "customer0@example.com",
            "category": "marketing",
            "template": "newsletter",
            "context": {},
            "headers": {},
            "priority": 0,
            "status": MAIL_STATUSES[n % len(MAIL_STATUSES)],
            "due_at": at(n),
            "attempts": 1,
            "created_at": at(n),
            "updated_at": at(n),
            "sent_at": at(n) if MAIL_STATUSES[n % len(MAIL_STATUSES)] == "sent" else None,
        }
        for n in range(entries)
        if n % 5 in (0, 1)
    )
    _batched(mail, engine, OUTBOX)
    asked = (_inquiry(customer_id, n, at(n)) for n in range(entries) if n % 5 == 2)
    _batched(asked, engine, INQUIRIES)
    logged = (_contact(customer_id, n, at(n)) for n in range(entries) if n % 5 in (3, 4))
    _batched(logged, engine, contacts.CONTACTS)
    return customer_id


def _inquiry(customer_id: int, n: int, at: datetime) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "sender": "customer0@example.com",
        "sender_name": "Customer 0",
        "subject": f"Question {n}",
        "body_text": "Hello",
        "reply_text": "Hello",
        "attachments": [],
        "defects": [],
        "received_at": at,
        "status": "new",
        "reasons": [],
        "raw": b"",
        "raw_truncated": False,
    }


def many_customers(engine: Engine, count: int, per_customer: int) -> None:
    """``count`` customers with ``per_customer`` contacts each over two years; one in ten
    never contacted. Their last contacts are written as the contact log would keep them."""
    start = time.perf_counter()
    for first in range(1, count + 1, BATCH):
        numbers = range(first, min(first + BATCH, count + 1))
        with engine.begin() as conn:
            made = conn.execute(
                insert(CUSTOMERS).returning(CUSTOMERS.c.id), [_customer(i) for i in numbers]
            )
            ids = [i for i in made.scalars() if i % 10]
        touches = [
            (customer_id, n, NOW - timedelta(hours=(customer_id * 7919 + n * 104729) % 17_520))
            for customer_id in ids
            for n in range(per_customer)
        ]
        with engine.begin() as conn:
            if touches:
                conn.execute(
                    insert(contacts.CONTACTS), [_contact(c, n, at) for c, n, at in touches]
                )
            for direction in ("out", "in"):
                latest: dict[int, datetime] = {}
                for c, n, at in touches:
                    if ("out", "in")[n % 2] == direction and KINDS[n % 3] != "note":
                        latest[c] = max(latest.get(c, at), at)
                contacts.touch(conn, contacts.Direction(direction), "call", list(latest.items()))
    print(f"wrote {count} customers, {count * per_customer * 9 // 10} contacts "
          f"in {time.perf_counter() - start:.0f} s")  # fmt: skip


def median_ms(work: Callable[[], object], runs: int = 7) -> float:
    work()  # warm the caches: a page is read many times a day
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(engine: Engine, customer_id: int, entries: int) -> None:
    with engine.connect() as conn:
        first = history.page(conn, customer_id, None)
        deep = first.older
        for _ in range(entries // history.PAGE // 2):  # half-way back through the history
            if deep is None:
                break
            deep = history.page(conn, customer_id, None, cursor=deep).older
        figures = {
            f"timeline, first page of {entries}": lambda: history.page(conn, customer_id, None),
            "timeline, a page half-way back": lambda: history.page(
                conn, customer_id, None, cursor=deep
            ),
            "list by last contact, latest first": lambda: contacts.browse(
                conn, order="recent", limit=51
            ),
            "list by last contact, longest quiet first": lambda: contacts.browse(
                conn, order="quiet", limit=51
            ),
            "list not spoken to in 90 days, by email": lambda: contacts.browse(
                conn, quiet_since=NOW - timedelta(days=90), limit=51
            ),
        }
        for name, work in figures.items():
            print(f"{name}: {median_ms(work):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=10, help="per customer")
    add_database_options(parser)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = database_url(stack, args, "timeline")
        kind = url.split(":")[0]
        engine = db.connect(url)
        migrate.upgrade(engine)
        customer_id = the_customer(engine, args.entries)
        many_customers(engine, args.customers, args.contacts)
        if kind.startswith("postgresql"):
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        measure(engine, customer_id, args.entries)
        engine.dispose()


if __name__ == "__main__":
    main()
