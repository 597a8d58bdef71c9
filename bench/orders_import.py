"""How fast `mailer orders import` takes a large CSV: lines/s for a first import and a re-import.

    .venv/bin/python bench/orders_import.py [--lines N] [--customers N]
        [--postgres | --database-url URL]

Without either it uses a fresh SQLite file in a temp dir; --postgres starts a throwaway
PostgreSQL server. Orders of 1-9 lines, three
channels, EUR and BGN, one order in fifty a return.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.pg

from mailer.commerce import orders  # noqa: E402
from mailer.commerce.order_rows import Rules  # noqa: E402
from mailer.store import db, migrate  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402

CHANNELS = ("web shop", "phone", "store")
PRODUCTS = [
    (f"SKU-{i:05d}", f"Product {i}", ("coffee", "tea", "cups", "gifts")[i % 4]) for i in range(4000)
]
START = datetime(2024, 1, 1, tzinfo=UTC)


def write_csv(path: Path, lines: int, customers: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(
            "order_id,email,ordered_at,sku,product,category,quantity,unit_price,cost,currency,channel,status\n"
        )
        written, order = 0, 0
        while written < lines:
            order += 1
            size = min(1 + order * 7 % 9, lines - written)
            returned = order % 50 == 0
            when = (START + timedelta(minutes=order * 3)).strftime("%Y-%m-%d %H:%M")
            head = f"O{order},customer{order * 7919 % customers}@example.com,{when}"
            status = "returned" if returned else "placed"
            tail = f"{('EUR', 'BGN')[order % 2]},{CHANNELS[order % 3]},{status}"
            for n in range(size):
                sku, name, category = PRODUCTS[(order + n * 31) % len(PRODUCTS)]
                qty = -1 if returned else 1 + n % 3
                price = 100 + (order + n) % 5000
                fh.write(
                    f"{head},{sku},{name},{category},{qty},{price // 100}.{price % 100:02d},"
                    f"{price // 300}.{price % 100:02d},{tail}\n"
                )
            written += size


def timed(engine: object, path: Path) -> tuple[float, orders.ImportReport]:
    rules = Rules(
        now=datetime.now(UTC), zone=ZoneInfo("Europe/Sofia"), currencies=frozenset({"EUR", "BGN"})
    )
    start, cpu = time.perf_counter(), _cpu()
    report = orders.import_csv(engine, path, rules)  # type: ignore[arg-type]
    took = time.perf_counter() - start
    mine, reader = (now - then for now, then in zip(_cpu(), cpu, strict=True))
    print(f"  CPU {mine:.1f} s here, {reader:.1f} s in the child reading the file", flush=True)
    return took, report


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its ended children."""
    spent = os.times()
    return spent.user + spent.system, spent.children_user + spent.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server")
    where.add_argument("--database-url", help="an empty database to fill")
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        if args.postgres:
            server = PostgresServer.start()
            stack.callback(server.stop)
            server.admin("CREATE DATABASE bench")
            url = server.url("bench")
        path = Path(tmp) / "orders.csv"
        started = time.perf_counter()
        write_csv(path, args.lines, args.customers)
        print(f"wrote {args.lines} lines in {time.perf_counter() - started:.1f} s")
        engine = db.connect(url)
        migrate.upgrade(engine)
        print(f"database: {engine.dialect.name}")
        first, report = timed(engine, path)
        print(
            f"first import: {report.added} orders, {report.lines} lines, "
            f"{report.customers_added} customers, {len(report.rejected)} rejected in {first:.1f} s "
            f"({report.lines / first:.0f} lines/s)"
        )
        again, report = timed(engine, path)
        print(f"re-import:    {report.unchanged} orders unchanged in {again:.1f} s")
        engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    reader = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(f"peak RSS {peak} MB; the child that reads the file {reader} MB")


if __name__ == "__main__":
    main()
