"""A full insight refresh and the update after one order, at scale.

    .venv/bin/python bench/insights.py [--customers 100000] [--lines 1000000]
        [--postgres | --database-url URL]

Writes ``--customers`` customers and orders holding ``--lines`` lines straight into the
tables (batched multi-row inserts, no CSV), each customer buying at their own rate and
dropping out now and then; then times ``insights.refresh`` and its peak memory (RSS), the
median ``insights.update_customer`` for one customer, the build of the insights report
(part of the refresh, timed again alone) and the median read of the stored report, what
/insights and ``mailer insights report`` do before rendering it. Goals: refresh under 30 s
and 500 MB, the update under 10 ms, the report page under 300 ms. Figures only; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.pg

from sqlalchemy import Engine, insert  # noqa: E402

from mailer.commerce import facts, insights, recommendations, refresh, report  # noqa: E402
from mailer.commerce.orders import LINES, ORDERS  # noqa: E402
from mailer.core.config import InsightSettings  # noqa: E402
from mailer.customers.profiles import CUSTOMERS  # noqa: E402
from mailer.store import db, migrate  # noqa: E402
from mailer.store.bulk import analyze  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
START = date(2024, 1, 1)
BATCH = 20_000


def _insert(engine: Engine, table: Any, rows: Iterator[dict[str, Any]]) -> None:
    while batch := list(islice(rows, BATCH)):
        with engine.begin() as conn:
            conn.execute(insert(table), batch)


def _customers(count: int) -> Iterator[dict[str, Any]]:
    for i in range(1, count + 1):
        email = f"customer{i}@example.com"
        yield {"id": i, "email": email, "search_text": email, "fields": {}, "source": "bench"}


def _orders(customers: int, lines: int, seed: int = 1) -> tuple[list[dict[str, Any]], int]:
    """Orders of ~3 lines each until ``lines`` are spent: per customer a first day, a
    rate and a drop-out chance after each purchase."""
    pick = np.random.default_rng(seed)
    orders, horizon = [], (NOW.date() - START).days
    budget, customer = lines // 3, 0
    while len(orders) < budget:
        customer = customer % customers + 1
        day = int(pick.integers(horizon))
        gap = float(pick.gamma(2.0, 30.0)) + 1
        while day < horizon and len(orders) < budget:
            moment = datetime.combine(START + timedelta(days=day), datetime.min.time(), UTC)
            orders.append(
                {
                    "id": len(orders) + 1,
                    "order_ref": f"B{len(orders) + 1}",
                    "customer_id": customer,
                    "ordered_at": moment,
                    "channel": "web" if customer % 3 else "store",
                    "currency": "EUR" if customer % 10 else "USD",
                    "status": "placed",
                    "created_at": NOW,
                    "source": "bench",
                    "fingerprint": "x",
                }
            )
            if pick.random() < 0.25:
                break
            day += int(pick.exponential(gap)) + 1
    return orders, len(orders)


def _lines(orders: int, lines: int) -> Iterator[dict[str, Any]]:
    for n in range(lines):
        order, line_no = n % orders + 1, n // orders + 1
        yield {
            "order_id": order,
            "line_no": line_no,
            "sku": f"SKU-{(order * 7 + line_no) % 500}",
            "product": "",
            "category": "",
            "quantity": 1 + n % 3,
            "unit_price": 500 + (order * 37) % 5000,
            "unit_cost": 300,
        }


def build(engine: Engine, customers: int, lines: int) -> None:
    started = time.perf_counter()
    _insert(engine, CUSTOMERS, _customers(customers))
    orders, count = _orders(customers, lines)
    _insert(engine, ORDERS, iter(orders))
    _insert(engine, LINES, _lines(count, lines))
    if engine.dialect.name == "postgresql":  # as `mailer orders import` does after many lines
        with engine.begin() as conn:
            analyze(conn, CUSTOMERS, ORDERS, LINES)
    took = time.perf_counter() - started
    print(f"built {customers:,} customers, {count:,} orders, {lines:,} lines in {took:.0f} s")


def measure(engine: Engine) -> None:
    settings = InsightSettings()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu = time.perf_counter(), time.process_time()
    done = refresh.run(engine, settings, NOW.date(), NOW)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for note in done.notes:
        print(note)
    print(
        f"refresh: {done.customers:,} customers from {done.orders:,} orders in {took:.1f} s "
        f"(goal 30 s), {cpu:.1f} s of it on this process's CPU (a shared machine stretches the"
        f" wall time, less so this); peak RSS {peak:.0f} MB, {before:.0f} MB before (goal 500 MB)"
    )
    times = []
    for customer in range(1, 201, 10):
        with engine.begin() as conn:
            started = time.perf_counter()
            insights.update_customer(conn, customer, NOW, settings)
            times.append(time.perf_counter() - started)
    print(f"update of one customer: median {statistics.median(times) * 1000:.1f} ms (goal 10 ms)")
    measure_recommendations(engine)


def measure_recommendations(engine: Engine) -> None:
    """The co-bought part of the refresh on its own, and what a claim batch of 200
    messages adds when its template reads orders, insight and recommendations."""
    with engine.begin() as conn:
        started = time.perf_counter()
        skus = recommendations.store(conn, recommendations.learn(conn, NOW.date(), NOW))
        took = time.perf_counter() - started
    print(f"co-bought products (part of the refresh): {skus:,} SKUs in {took:.2f} s")
    times = []
    for first in range(1, 2001, 200):
        with engine.connect() as conn:
            started = time.perf_counter()
            facts.load(conn, list(range(first, first + 200)), set(facts.NAMES))
            times.append(time.perf_counter() - started)
    median = statistics.median(times) * 1000
    print(f"template facts for a claim batch of 200 customers: median {median:.0f} ms")


def measure_report(engine: Engine) -> None:
    started = time.perf_counter()
    with engine.begin() as conn:
        report.rebuild(conn, UTC, NOW)
    took = time.perf_counter() - started
    print(f"insights report build (orders read again, as after an upgrade): {took:.1f} s")
    times = []
    for _ in range(20):
        started = time.perf_counter()
        report.shown(report.current(engine, UTC, NOW).report)
        times.append(time.perf_counter() - started)
    median = statistics.median(times) * 1000
    print(f"insights report page (stored report read): median {median:.1f} ms (goal 300 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server")
    where.add_argument("--database-url", help="an empty database to fill")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.postgres:
            server = PostgresServer.start()
            stack.callback(server.stop)
            server.admin("CREATE DATABASE bench")
            url = server.url("bench")
        elif args.database_url:
            url = args.database_url
        else:
            url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/bench.db"
        engine = db.connect(url)
        migrate.upgrade(engine)
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"database: {engine.dialect.name}; load average {load} on {os.cpu_count()} cores")
        build(engine, args.customers, args.lines)
        measure(engine)
        measure_report(engine)
        engine.dispose()


if __name__ == "__main__":
    main()
