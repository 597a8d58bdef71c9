"""Transactional sends through the HTTP API: a real `mailer web` process taking
`POST /api/v1/messages` at a fixed rate, and a delivery worker (another process) sending
what it queued to a local SMTP sink.

    .venv/bin/python bench/api.py [--rate 200] [--seconds 10] [--processes 1]
                                  [--backlog 30000] [--postgres | --database-url URL]

Requests go out on schedule whatever the server does (an open loop), each timed from when
it was due, so a server that falls behind shows it in p99 instead of slowing the load.
Prints accepted p50/p99/max, and delivered p50/p99 (SMTP accepted, from the row's created
and sent times); the last line reads `accepted p99 X ms at R req/s, delivered p99 Y ms`.
``--backlog N`` queues a newsletter to each of N customers right before the load (quiet
hours off, as the wall clock would defer some zones), so the worker sends a campaign while
the API is measured, as when one goes out during the shop's day; it prints how many went
meanwhile; the receipts, like acknowledgements, are claimed before the campaign.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import uvloop
from sqlalchemy import func, select

from bench.common import add_database_options, database_url
from bench.delivery import ROOT, add_customers, free_port, messages, start_sink
from mailer import daemon
from mailer.api import keys
from mailer.api.keys import Scope
from mailer.core import config
from mailer.core.clock import SystemClock
from mailer.outbound import outbox
from mailer.outbound.smtp import SmtpTarget
from mailer.store import db, migrate
from mailer.web import server as web_server

CONNECTIONS = 32  # kept-alive client connections
START_SECONDS = 60.0  # a busy machine takes long to import
DRAIN_SECONDS = 60.0  # at most this long for the worker to send the rest after the load
TEMPLATE = {
    "subject.txt": "Your order {{ params.order }}",
    "body.txt": "Hello {{ customer.first_name or 'there' }},\n"
    "thank you for order {{ params.order }} ({{ params.total }}).\n",
}


def prepare(folder: Path, url: str, port: int, smtp_port: int) -> tuple[Path, dict[str, str]]:
    """config.toml as shipped, the shipped templates and a receipt, and the overrides."""
    shutil.copytree(ROOT / "templates", folder / "templates")
    (folder / "templates" / "receipt").mkdir()
    for name, text in TEMPLATE.items():
        (folder / "templates" / "receipt" / name).write_text(text, encoding="utf-8")
    path = folder / "config.toml"
    path.write_text((ROOT / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")
    env = {
        "MAILER_DATABASE__URL": url,
        "MAILER_PATHS__TEMPLATES": str(folder / "templates"),
        "MAILER_PATHS__DATA": str(folder / "var"),
        "MAILER_WEB__BIND": f"127.0.0.1:{port}",
        "MAILER_SANDBOX__ENABLED": "false",
        "MAILER_SMTP__PORT": str(smtp_port),
    }
    return path, env


def start_web(path: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "mailer", "--config", str(path), "web"]
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    web = subprocess.Popen(command, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:  # bounded wait for the listening socket
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/login")
            return web
        except OSError:
            time.sleep(0.05)
    web.kill()
    raise RuntimeError(
        f"mailer web did not start: {web.stderr.read().decode() if web.stderr else ''}"
    )


def deliver(path: Path, env: dict[str, str], smtp_port: int) -> None:
    """The delivery worker, in a process of its own until SIGTERM, started as `mailer run`
    starts it: what the process holds from its start frozen out of the garbage collector's
    passes, on uvloop. Without the freeze, the worker's full passes took 0.2-0.55 s during
    the load, and one that fell inside a write transaction held SQLite's lock that long."""
    cfg = config.load(path, env)
    engine = db.connect(cfg.database_url)
    target = SmtpTarget(host="127.0.0.1", port=smtp_port, pool_size=4)
    delivery = daemon.build_delivery(cfg, engine, SystemClock(), target)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await delivery.run(stop)

    web_server.settle()
    uvloop.run(main())


def post(connection: http.client.HTTPConnection, secret: str, i: int | str) -> int:
    """One receipt, named by ``i``; the answer's status."""
    body = _body(i)
    headers = {
        "Authorization": f"Bearer {secret}",
        "Idempotency-Key": f"bench-{i}",
        "Content-Type": "application/json",
    }
    connection.request("POST", "/api/v1/messages", json.dumps(body), headers)
    response = connection.getresponse()
    response.read()
    return response.status


def _body(i: int | str) -> dict[str, object]:
    return {
        "template": "receipt",
        "to": f"buyer{i}@example.com",
        "data": {"order": f"B-{i}", "total": "42.90 EUR"},
    }


def warm_up(url: str, port: int, secret: str) -> None:
    """One message through the server and the worker before the clock starts, so neither
    process's start (imports, the render worker) is counted as the API's latency."""
    status = post(http.client.HTTPConnection("127.0.0.1", port, timeout=30), secret, "warm")
    if status != 202:
        raise RuntimeError(f"the warm-up send was answered {status}")
    if len(delivered(url, 1)) != 1:
        raise RuntimeError("the delivery worker sent nothing; is the SMTP sink up?")


def load(port: int, secret: str, rate: int, seconds: int) -> tuple[list[float], list[int]]:
    """Each request due at start + i/rate; its latency counted from then, in ms. The client
    is one event loop (uvloop) over CONNECTIONS kept-alive connections: a request due while
    all are busy waits for one, and that wait is counted. (It was 32 threads of
    http.client: 0.55 ms of CPU a request on the cores the server shares, and a thread that
    got its answer waited for the interpreter's lock before it could read the clock.)"""
    return uvloop.run(_load(port, secret, rate, seconds))


async def _load(port: int, secret: str, rate: int, seconds: int) -> tuple[list[float], list[int]]:
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    statuses: list[int] = []
    start = time.monotonic() + 0.2  # not the loop's clock: uvloop's counts whole milliseconds

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        reader, writer = await idle.get()
        writer.write(_request(secret, i))
        status = await _answer(reader)
        idle.put_nowait((reader, writer))
        latencies.append((time.monotonic() - due) * 1000)
        statuses.append(status)

    await asyncio.gather(*(one(i) for i in range(rate * seconds)))
    while not idle.empty():
        idle.get_nowait()[1].close()
    return latencies, statuses


def _request(secret: str, i: int) -> bytes:
    """The bytes of one send, as ``post`` sends it."""
    body = json.dumps(_body(i)).encode()
    head = (
        f"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {secret}\r\nIdempotency-Key: bench-{i}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """The status of the answer on ``reader``, its body read (the server says its length)."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its child processes so far (Linux; the
    web processes of `[web] processes`), to tell what one request costs the server from
    how long it waited for a core on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(p * 10) - 1]


def queue_campaign(url: str, count: int) -> None:
    engine = db.connect(url)
    outbox.enqueue(engine, messages(count), datetime.now(UTC))
    engine.dispose()


def newsletters_sent(url: str) -> int:
    engine = db.connect(url)
    table = outbox.OUTBOX
    with engine.connect() as conn:
        query = select(func.count()).where(table.c.template == "newsletter")
        count = int(conn.execute(query.where(table.c.sent_at.is_not(None))).scalar_one())
    engine.dispose()
    return count


def delivered(url: str, expected: int) -> list[float]:
    """Once all receipts are sent (or the drain time is up): each one's created-to-sent
    time in ms."""
    engine = db.connect(url)
    table = outbox.OUTBOX
    receipts = table.c.template == "receipt"
    sent = select(func.count()).where(table.c.sent_at.is_not(None), receipts)
    deadline = time.monotonic() + DRAIN_SECONDS
    with engine.connect() as conn:
        while conn.execute(sent).scalar_one() < expected and time.monotonic() < deadline:
            conn.commit()
            time.sleep(0.2)
        rows = conn.execute(
            select(table.c.created_at, table.c.sent_at)
            .where(table.c.sent_at.is_not(None), receipts)
            .order_by(table.c.id)
        )
        times = [(s - c).total_seconds() * 1000 for c, s in rows]
    engine.dispose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=200, help="requests per second")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1, help="[web] processes")
    parser.add_argument("--backlog", type=int, default=0, help="newsletters sent meanwhile")
    add_database_options(parser)
    args = parser.parse_args()
    with ExitStack() as stack:
        url = database_url(stack, args, "bench_api")
        engine = db.connect(url)
        migrate.upgrade(engine)
        with engine.begin() as conn:
            _, secret = keys.create(
                conn,
                "bench",
                [Scope.SEND],
                rate_per_minute=args.rate * 120,
                created_by="bench",
                now=datetime.now(UTC),
            )
        if args.backlog:
            add_customers(engine, args.backlog)
        engine.dispose()
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailer-api-")))
        port, smtp_port = free_port(), free_port()
        path, env = prepare(folder, url, port, smtp_port)
        if args.processes > 1:
            env["MAILER_WEB__PROCESSES"] = str(args.processes)
        if args.backlog:
            env["MAILER_THROTTLE__QUIET_HOURS"] = ""
        sink = start_sink(smtp_port)
        stack.callback(sink.kill)
        web = start_web(path, env, port)
        stack.callback(web.terminate)
        worker = get_context("spawn").Process(target=deliver, args=(path, env, smtp_port))
        worker.start()
        stack.callback(worker.join, 10)
        stack.callback(worker.terminate)

        warm_up(url, port, secret)
        if args.backlog:  # queued now, so that it goes out while the API is measured
            queue_campaign(url, args.backlog)
        campaign = newsletters_sent(url)
        cpu = cpu_seconds(web.pid)
        began = time.monotonic()
        latencies, statuses = load(port, secret, args.rate, args.seconds)
        took = time.monotonic() - began
        cpu = cpu_seconds(web.pid) - cpu
        campaign = newsletters_sent(url) - campaign
        accepted = statuses.count(202)
        print(
            f"{len(statuses)} requests in {took:.1f} s ({len(statuses) / took:.0f} req/s), "
            f"{accepted} accepted, others: {sorted(set(statuses) - {202}) or 'none'}"
        )
        print(
            f"server CPU: {cpu * 1000 / len(statuses):.1f} ms a request "
            f"(load average {os.getloadavg()[0]:.1f})"
        )
        if args.backlog:
            print(f"newsletters sent during the load: {campaign} ({campaign / took:.0f}/s)")
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        print(f"accepted: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms")
        times = delivered(url, accepted + 1)[1:]  # the warm-up's left out
        d50, d99 = percentile(times, 50), percentile(times, 99)
        print(f"delivered {len(times)} of {accepted}: p50 {d50:.0f} ms, p99 {d99:.0f} ms")
        print(f"accepted p99 {p99:.1f} ms at {args.rate} req/s, delivered p99 {d99:.0f} ms")


if __name__ == "__main__":
    main()
