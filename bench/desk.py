"""The desk's conversation list with its quick filters, over a large inquiry log.

    .venv/bin/python bench/desk.py [--inquiries 100000] [--postgres | --database-url URL]

Writes ``--inquiries`` messages of about a kilobyte in threads of one to three, nine in ten
of them answered or closed, most assigned to one busy agent, and prints the median time of
the desk's first page: everything, Open, Mine for an agent with a few conversations and for
the busy one, Unassigned, and a search. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.pg and the timeline bench's helpers

from sqlalchemy import Engine, insert, update  # noqa: E402

from bench.common import add_database_options, database_url  # noqa: E402
from bench.timeline import median_ms  # noqa: E402
from mailer.inbound import inquiries  # noqa: E402
from mailer.inbound.inquiries import INQUIRIES, Wanted  # noqa: E402
from mailer.store import db, migrate  # noqa: E402

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BATCH = 10_000
LETTER = "It came on Tuesday, and the box was open when it arrived. " * 12  # ~700 characters
FEW_AGENT = "lee"  # five conversations of their own


def _message(n: int) -> dict[str, Any]:
    return {
        "sender": f"customer{n % 20_000}@example.com",
        "sender_name": f"Customer {n % 20_000}",
        "subject": f"Question {n}",
        "body_text": f"Hello, about order {n}. {LETTER}",
        "reply_text": f"Hello, about order {n}. {LETTER}",
        "attachments": [],
        "defects": [],
        "received_at": NOW - timedelta(minutes=7 * n),
        "status": "answered" if n % 10 else "open",
        "reasons": [],
        "raw": b"",
        "raw_truncated": False,
        "assignee": None if n % 50 == 0 else "sam",
    }


def write(engine: Engine, count: int) -> None:
    """Roots first, oldest last; every third root gets one or two later messages."""
    start = time.perf_counter()
    roots = (count * 3) // 5
    for first in range(0, roots, BATCH):
        with engine.begin() as conn:
            rows = [_message(n) for n in range(first, min(first + BATCH, roots))]
            conn.execute(insert(INQUIRIES), rows)
    with engine.begin() as conn:
        ids = list(conn.execute(INQUIRIES.select().with_only_columns(INQUIRIES.c.id)).scalars())
        for root in ids[1:6]:
            conn.execute(update(INQUIRIES).where(INQUIRIES.c.id == root).values(assignee=FEW_AGENT))
    later = [(ids[i % len(ids)], i) for i in range(count - roots)]
    for first in range(0, len(later), BATCH):
        rows = []
        for root, i in later[first : first + BATCH]:
            row = _message(root)
            row.update(thread_id=root, assignee=None, status="new",
                       received_at=NOW - timedelta(minutes=7 * root - 3 - i % 3))  # fmt: skip
            rows.append(row)
        with engine.begin() as conn:
            conn.execute(insert(INQUIRIES), rows)
    print(f"wrote {count} inquiries in {time.perf_counter() - start:.0f} s")


def measure(engine: Engine) -> None:
    figures = {
        "everything": Wanted(),
        "Open": Wanted(waiting=True),
        f"Mine, {FEW_AGENT} with 5 conversations": Wanted(assignee=FEW_AGENT),
        "Mine, the busy agent": Wanted(assignee="sam"),
        "Mine, an agent with none": Wanted(assignee="nobody"),
        "Unassigned": Wanted(unassigned=True),
        "Unassigned and Open": Wanted(unassigned=True, waiting=True),
        "search 'order 12345'": Wanted(search="order 12345"),
    }
    with engine.connect() as conn:
        for name, wanted in figures.items():
            shown = len(inquiries.conversations(conn, wanted).rows)
            ms = median_ms(lambda w=wanted: inquiries.conversations(conn, w))  # type: ignore[misc]
            print(f"{name} ({shown} shown): {ms:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inquiries", type=int, default=100_000)
    add_database_options(parser)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = database_url(stack, args, "desk")
        kind = url.split(":")[0]
        engine = db.connect(url)
        migrate.upgrade(engine)
        write(engine, args.inquiries)
        if kind.startswith("postgresql"):
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        measure(engine)
        engine.dispose()


if __name__ == "__main__":
    main()
