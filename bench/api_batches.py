"""Batch writes through the HTTP API: a real `mailer web` process taking
`POST /api/v1/customers` and `POST /api/v1/orders` in calls of 1,000, one after another.

    .venv/bin/python bench/api_batches.py [--calls 10] [--clients 1]
                                          [--postgres | --database-url URL]

New customers, the same customers again (unchanged), then orders of 2 lines each for
them; each figure is items per second over the calls, timed at the client, with the
server's CPU per item beside it. The last line reads
`customers X/s, unchanged Y/s, order lines Z/s`. ``--clients N`` sends the calls over N
connections at once, each its share one call after another, as a shop that sends its
batches side by side would: the web process's Python and the database's work on
different calls then overlap.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.api import cpu_seconds, prepare, start_web
from bench.common import add_database_options, database_url
from bench.delivery import free_port
from mailer.api import keys
from mailer.api.keys import Scope
from mailer.store import db, migrate

BATCH = 1000
NAMES = ("Мария Иванова", "Siti Rahmawati", "José Reyes", "Zoë Müller", "Liam O'Connor")
ZONES = ("Europe/Sofia", "Asia/Jakarta", "Asia/Manila", "America/Los_Angeles", "UTC")


def customer(i: int) -> dict[str, Any]:
    return {
        "email": f"customer{i}@example.com",
        "name": NAMES[i % 5],
        "locale": ("bg", "id", "tl", "en", "en-NZ")[i % 5],
        "timezone": ZONES[i % 5],
        "birthday": f"19{70 + i % 30}-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
        "tags": ["newsletter", "vip" if i % 7 == 0 else "webinar"],
        "fields": {"city": f"City {i % 100}"},
    }


def order(i: int) -> dict[str, Any]:
    return {
        "order_id": f"O-{i}",
        "email": f"customer{i}@example.com",
        "ordered_at": f"2025-{i % 12 + 1:02d}-{i % 28 + 1:02d}T10:00:00+02:00",
        "currency": "EUR",
        "lines": [
            {"sku": f"SKU-{i % 50}", "product": f"Product {i % 50}", "unit_price": "12.90"},
            {"sku": "BAG", "product": "Bag", "quantity": 2, "unit_price": "0.50"},
        ],
    }


def timed(
    port: int,
    pid: int,
    secret: str,
    path: str,
    items: Callable[[int], dict[str, Any]],
    calls: int,
    clients: int,
) -> tuple[float, float]:
    """Seconds for ``calls`` calls of a batch each, sent over ``clients`` connections side
    by side (each its share, one call after another), and the server's CPU seconds."""
    bodies = [
        json.dumps([items(c * BATCH + i) for i in range(BATCH)]).encode() for c in range(calls)
    ]

    def send(share: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        for body in share:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}: {answer[:500]!r}")

    cpu, began = cpu_seconds(pid), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for sent in [pool.submit(send, bodies[i::clients]) for i in range(clients)]:
            sent.result()
    return time.perf_counter() - began, cpu_seconds(pid) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="calls of 1,000 for each figure")
    parser.add_argument("--clients", type=int, default=1, help="connections sending at once")
    add_database_options(parser)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = database_url(stack, args, "bench_api_batches")
        engine = db.connect(url)
        migrate.upgrade(engine)
        with engine.begin() as conn:
            scopes = [Scope.CUSTOMERS_WRITE, Scope.ORDERS_WRITE]
            _, secret = keys.create(
                conn, "bench", scopes, rate_per_minute=10_000, created_by="bench",
                now=datetime.now(UTC),
            )  # fmt: skip
        engine.dispose()
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailer-api-")))
        port = free_port()
        path, env = prepare(folder, url, port, free_port())
        env["MAILER_API__MAX_BODY_BYTES"] = str(8 * 1024 * 1024)
        web = start_web(path, env, port)
        stack.callback(web.terminate)
        rates = []
        for label, route, items, per in (
            ("new customers", "/api/v1/customers", customer, 1),
            ("unchanged customers", "/api/v1/customers", customer, 1),
            ("order lines", "/api/v1/orders", order, 2),
        ):
            took, cpu = timed(port, web.pid, secret, route, items, args.calls, args.clients)
            count = args.calls * BATCH * per
            rates.append(count / took)
            print(
                f"{label}: {count} in {took:.2f} s, {count / took:,.0f}/s, server CPU "
                f"{cpu * 1e6 / count:.0f} us each (load average {os.getloadavg()[0]:.1f})"
            )
        print(
            f"customers {rates[0]:.0f}/s, unchanged {rates[1]:.0f}/s, order lines {rates[2]:.0f}/s"
        )


if __name__ == "__main__":
    main()
