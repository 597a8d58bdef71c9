"""Delivery throughput: N customers, one personalised newsletter each, every throttle check
on, delivered over SMTP into a local sink running in another process, on the event loop
`mailer run` uses; then Postfix's C load generator `smtp-source` pushes as many messages of
the same size into a sink of the same kind, in the same run, as the ceiling to compare with.

    .venv/bin/python bench/delivery.py [--customers 20000] [--database-url URL] [--pool 10]

The sink is Postfix's smtp-sink when installed (apt-get install postfix; it is not started
as a mail server), else aiosmtpd's Sink handler. Prints the time to enqueue, messages per
second and peak RSS, then smtp-source's rate and the ratio; the last line reads
`mailer/smtp-source: R` (or says that smtp-source is not installed).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import uvloop
from sqlalchemy import Engine, insert

from mailer import daemon
from mailer.core import config
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.customers.profiles import CUSTOMERS
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db, migrate

ROOT = Path(__file__).resolve().parent.parent
# zones where 10:00 UTC is daytime, so quiet hours are checked but do not defer
ZONES = ("Europe/Sofia", "Europe/Berlin", "Asia/Jakarta", "Asia/Manila", "Africa/Lagos")
LOCALES = ("bg", "en", "id", "tl", "en")
NAMES = ("Мария Иванова", "Zoë Müller", "Siti Rahmawati", "José Reyes", "Ada Obi")
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    if shutil.which("smtp-sink"):
        command = ["smtp-sink", "-c", f"127.0.0.1:{port}", "1000"]
        if os.geteuid() == 0:  # it refuses to run as root without a user to switch to
            command[1:1] = ["-u", "nobody"]
    else:
        command = [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ]
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):  # bounded: up to 5 s for the sink to listen
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return sink
        time.sleep(0.05)
    raise RuntimeError(f"the SMTP sink did not start: {command}")


def smtp_source(count: int, size: int) -> float | None:
    """Messages a second from ``smtp-source -s 10 -d`` (10 sessions, each kept open, as
    mailer's pool does) into a new sink; None when Postfix's tools are not installed."""
    if not shutil.which("smtp-source"):
        return None
    port = free_port()
    sink = start_sink(port)
    try:
        command = ["smtp-source", "-s", "10", "-d", "-m", str(count), "-l", str(size)]
        start = time.perf_counter()
        subprocess.run([*command, f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
        return count / (time.perf_counter() - start)
    finally:
        sink.terminate()
        sink.wait()


def add_customers(engine: Engine, count: int) -> None:
    def rows() -> Iterator[dict[str, object]]:
        for i in range(count):
            yield {
                "email": f"customer{i}@example.com",
                "name": NAMES[i % 5],
                "first_name": NAMES[i % 5].split()[0],
                "locale": LOCALES[i % 5],
                "timezone": ZONES[i % 5],
                "fields": {},
                "marketing_consent": True,
                "relationship_consent": True,
                "source": "bench",
                "created_at": NOW,
                "updated_at": NOW,
            }

    iterator = rows()
    while batch := list(islice(iterator, 5000)):
        with engine.begin() as conn:
            conn.execute(insert(CUSTOMERS), batch)


def messages(count: int) -> Iterator[NewMessage]:
    params = {"params": {"headline": "December news", "intro": "Our winter blend is back."}}
    for i in range(count):
        yield NewMessage(
            dedupe_key=f"bench:newsletter:{i + 1}",
            to_address=f"customer{i}@example.com",
            category=Category.MARKETING,
            template="newsletter",
            customer_id=i + 1,
            context=params,
        )


async def deliver_all(delivery: daemon.Delivery) -> tuple[int, int]:
    """How many messages went, and their mean size in bytes (smtp-source sends that size)."""
    sizes: list[int] = []
    send = delivery.pool.send

    async def counted(sender: str, recipient: str, data: bytes) -> str:
        sizes.append(len(data))
        return await send(sender, recipient, data)

    delivery.pool.send = counted  # type: ignore[method-assign]
    total = 0
    while handled := await delivery.deliver_due():
        total += handled
    return total, sum(sizes) // max(len(sizes), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--database-url")
    parser.add_argument("--pool", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.connect(args.database_url or f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        add_customers(engine, args.customers)
        cfg = config.load(ROOT / "config.toml", {"MAILER_PATHS__DATA": tmp})
        start = time.perf_counter()
        outbox.enqueue(engine, messages(args.customers), NOW)
        print(f"enqueued {args.customers} messages in {time.perf_counter() - start:.1f} s")
        port = free_port()
        sink = start_sink(port)
        try:
            target = SmtpTarget(host="127.0.0.1", port=port, pool_size=args.pool)
            delivery = daemon.build_delivery(cfg, engine, ManualClock(NOW), target)
            start = time.perf_counter()
            sent, size = uvloop.run(deliver_all(delivery))  # as `mailer run` does
            elapsed = time.perf_counter() - start
        finally:
            sink.terminate()
            sink.wait()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rate = sent / elapsed
    print(f"delivered {sent} messages of {size:,} bytes on average in {elapsed:.1f} s")
    print(f"{rate:.0f} msg/s, peak RSS {peak} MB")
    ceiling = smtp_source(sent, size)
    if ceiling is None:
        print("smtp-source is not installed (apt-get install postfix): no ratio")
        return
    print(f"smtp-source -s 10 -d, {sent} messages of {size:,} bytes: {ceiling:.0f} msg/s")
    print(f"mailer/smtp-source: {rate / ceiling:.3f}")


if __name__ == "__main__":
    main()
