"""Inbox latency and backlog: the real daemon (``daemon.serve``) against a real Dovecot and a
real SMTP sink, with the shipped config.toml and a temp SQLite database.

    .venv/bin/python bench/inbox.py [--inquiries 200] [--backlog 10000]

1. Latency: N inquiries, one at a time, each from its own sender (so neither
   once_per_sender nor max_per_day holds one back), APPENDed by the bench over stdlib
   imaplib while the daemon IDLEs. Measured from just before the APPEND is sent to the
   moment the sink has the acknowledgement's DATA (before it answers 250). The next inquiry
   goes only after the previous ack arrived (bounded) and the watcher is back in IDLE
   (bounded), plus a short pause. The split at the commit of the inquiry (its
   ``received_at``) is printed too: IMAP side (APPEND -> logged) and delivery side
   (logged -> at the sink).
2. Backlog: N inquiries APPENDed (4 imaplib connections) while the daemon is stopped; then
   the daemon starts and the bench polls the inquiries table until all are logged, and the
   sink until every ack arrived (both bounded).

The sink is aiosmtpd in a subprocess (``python -c``), so timing it costs the daemon's event
loop nothing: it writes "recipient epoch" per accepted recipient to its stdout, read by a
thread here. Postfix's smtp-sink is faster but cannot say when each message arrived. Both
processes read the same system clock (``time.time()``).

Needs root (Dovecot switches to the mail uid) and Dovecot installed. The last line reads
``inbox: p50 X ms, p99 Y ms; backlog N msg/s``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, suppress
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.dovecot and tests.configs

from sqlalchemy import Engine, func, select  # noqa: E402

from mailer import daemon  # noqa: E402
from mailer.core.clock import SystemClock  # noqa: E402
from mailer.core.config import Config  # noqa: E402
from mailer.inbound import inquiries  # noqa: E402
from mailer.store import db, migrate  # noqa: E402
from tests.configs import real_servers, shipped_config  # noqa: E402
from tests.dovecot import DovecotServer  # noqa: E402

ACK_TIMEOUT = 10.0  # seconds one inquiry may take to be acknowledged before it counts as lost
IDLE_TIMEOUT = 10.0  # seconds to wait for the watcher to be back in IDLE
PAUSE = 0.02  # seconds between one ack and the next inquiry
START_TIMEOUT = 30.0  # the daemon's first IDLE, the sink's start
STOP_TIMEOUT = 2 * daemon.SHUTDOWN_GRACE + 10
APPEND_THREADS = 4
SUPPORT = "support@northwind-roasters.example"

SINK_SCRIPT = r"""
import asyncio, sys, time
from aiosmtpd.smtp import SMTP

class Recorder:
    async def handle_DATA(self, server, session, envelope):
        now = time.time()
        sys.stdout.write("".join(f"{r} {now:.6f}\n" for r in envelope.rcpt_tos))
        sys.stdout.flush()
        return "250 2.0.0 ok"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Recorder(), hostname="sink.bench"), "127.0.0.1", 0
    )
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Sink:
    """The aiosmtpd subprocess and the arrival time of each recipient's message."""

    def __init__(self, stderr_path: Path) -> None:
        self._stderr = stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", SINK_SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT):
            self.close()
            raise RuntimeError(f"the aiosmtpd sink did not start; see {stderr_path}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode().split()
            if line[0] == "ready":
                self.port = int(line[1])
                self._ready.set()
                continue
            with self._changed:
                if line[0] in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[line[0]] = float(line[1])
                self._changed.notify_all()

    def wait_for(self, recipient: str, timeout: float) -> float | None:
        with self._changed:
            self._changed.wait_for(lambda: recipient in self.arrivals, timeout)
            return self.arrivals.get(recipient)

    def wait_count(self, prefix: str, count: int, timeout: float) -> bool:
        def enough() -> bool:
            return sum(1 for r in self.arrivals if r.startswith(prefix)) >= count

        with self._changed:
            return self._changed.wait_for(enough, timeout)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._stderr.close()


class Daemon:
    """``daemon.serve`` on its own event loop in a thread, so the bench never blocks it."""

    def __init__(self, cfg: Config, engine: Engine) -> None:
        self._cfg, self._engine = cfg, engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise RuntimeError("the daemon thread did not start")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        await daemon.serve(
            self._cfg, self._engine, self._stop, sandbox_on=False, clock=SystemClock()
        )

    def stop(self) -> float:
        """Ask it to stop; returns how long the shutdown took."""
        start = time.perf_counter()
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(f"the daemon did not stop within {STOP_TIMEOUT} s")
        if self.error is not None:
            raise RuntimeError(f"the daemon failed: {self.error!r}") from self.error
        return time.perf_counter() - start


def inquiry(tag: str, i: int) -> bytes:
    now = format_datetime(datetime.now().astimezone())
    return (
        f"From: Bench Sender {i} <{tag}{i}@bench.example>\r\nTo: {SUPPORT}\r\n"
        f"Subject: Where is order {tag}-{i}?\r\n"
        f"Message-ID: <{tag}-{i}-{uuid.uuid4().hex}@bench.example>\r\nDate: {now}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello, my order {i} has not arrived yet. Could you look into it?\r\n\r\nThanks\r\n"
    ).encode()


def make_config(tmp: Path, dovecot: DovecotServer, smtp_port: int, mailbox: str) -> Config:
    return shipped_config(tmp, real_servers(dovecot, smtp_port, mailbox))


def count_inquiries(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inquiries.INQUIRIES)).scalar_one())


def logged_at(engine: Engine, senders: list[str]) -> dict[str, float]:
    """sender -> epoch of the inquiry's commit (its received_at, from the system clock)."""
    table = inquiries.INQUIRIES
    found: dict[str, float] = {}
    with engine.connect() as conn:
        for start in range(0, len(senders), 500):
            rows = conn.execute(
                select(table.c.sender, table.c.received_at).where(
                    table.c.sender.in_(senders[start : start + 500])
                )
            )
            found.update({sender: when.timestamp() for sender, when in rows})
    return found


def status_counts(engine: Engine) -> dict[str, int]:
    table = inquiries.INQUIRIES
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.status, func.count()).group_by(table.c.status))
        return {str(status): int(n) for status, n in rows}


def outbox_counts(engine: Engine) -> dict[str, int]:
    table = inquiries.OUTBOX
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.status, func.count()).group_by(table.c.status))
        return {str(status): int(n) for status, n in rows}


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def describe_machine() -> None:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    dovecot_version = subprocess.run(
        ["dovecot", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))} ({model}), "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print(f"Dovecot {dovecot_version}, SQLite {sqlite3.sqlite_version}, aiosmtpd sink subprocess")


def latency(
    tmp: Path, engine: Engine, dovecot: DovecotServer, sink: Sink, count: int
) -> list[float]:
    mailbox = "Latency"
    dovecot.create(mailbox)
    cfg = make_config(tmp, dovecot, sink.port, mailbox)
    running = Daemon(cfg, engine)
    totals: list[float] = []
    senders: list[str] = []
    appended: dict[str, float] = {}
    append_rtt: list[float] = []
    lost = 0
    try:
        dovecot.wait_until_idling(START_TIMEOUT)
        with dovecot.connect() as imap:
            for i in range(count):
                sender = f"lat{i}@bench.example"
                raw = inquiry("lat", i)
                start = time.time()
                typ, data = imap.append(mailbox, None, None, raw)
                append_rtt.append(time.time() - start)
                if typ != "OK":
                    raise RuntimeError(f"APPEND failed: {typ} {data!r}")
                arrival = sink.wait_for(sender, ACK_TIMEOUT)
                if arrival is None:
                    lost += 1
                else:
                    totals.append(arrival - start)
                    senders.append(sender)
                    appended[sender] = start
                with suppress(TimeoutError):  # bounded; a late IDLE is measured anyway
                    dovecot.wait_until_idling(IDLE_TIMEOUT)
                time.sleep(PAUSE)
    finally:
        shutdown = running.stop()
    logged = logged_at(engine, senders)
    imap_side = [logged[s] - appended[s] for s in senders if s in logged]
    smtp_side = [sink.arrivals[s] - logged[s] for s in senders if s in logged]
    print(f"latency: {count} inquiries, one at a time, {len(totals)} acknowledged, {lost} lost")
    if totals:
        for name, values in (
            ("APPEND -> ack at sink", totals),
            ("  APPEND -> inquiry committed", imap_side),
            ("  committed -> ack at sink", smtp_side),
            ("  APPEND round trip (bench)", append_rtt),
        ):
            if values:
                print(
                    f"  {name:32s} p50 {ms(quantile(values, 0.5)):>5} ms, "
                    f"p99 {ms(quantile(values, 0.99)):>5} ms, max {ms(max(values)):>5} ms, "
                    f"mean {ms(statistics.fmean(values)):>5} ms"
                )
    print(f"  daemon shutdown took {shutdown:.1f} s")
    return totals


def bulk_append(dovecot: DovecotServer, mailbox: str, count: int) -> None:
    errors: list[BaseException] = []

    def worker(indexes: range) -> None:
        try:
            with dovecot.connect() as imap:
                for i in indexes:
                    typ, data = imap.append(mailbox, None, None, inquiry("bl", i))
                    if typ != "OK":
                        raise RuntimeError(f"APPEND failed: {typ} {data!r}")
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(range(t, count, APPEND_THREADS),))
        for t in range(APPEND_THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def backlog(
    tmp: Path, engine: Engine, dovecot: DovecotServer, sink: Sink, count: int
) -> float | None:
    mailbox = "Backlog"
    dovecot.create(mailbox)
    start = time.perf_counter()
    bulk_append(dovecot, mailbox, count)
    appended = time.perf_counter() - start
    print(
        f"backlog: {count} inquiries APPENDed with the daemon stopped in {appended:.1f} s "
        f"({count / appended:.0f}/s over {APPEND_THREADS} imaplib connections)"
    )
    baseline = count_inquiries(engine)
    cfg = make_config(tmp, dovecot, sink.port, mailbox)
    limit = 60 + count * 0.1  # gives up below 10 messages/s
    marks = {n: None for n in (1000, 2500, 5000, 7500, 10000) if n < count}
    progress: list[tuple[int, float]] = []
    start = time.perf_counter()
    running = Daemon(cfg, engine)
    logged_all: float | None = None
    acks_all: float | None = None
    try:
        done = 0
        while time.perf_counter() - start < limit:
            done = count_inquiries(engine) - baseline
            now = time.perf_counter() - start
            for mark in marks:
                if marks[mark] is None and done >= mark:
                    marks[mark] = now
                    progress.append((mark, now))
            if done >= count:
                logged_all = now
                break
            time.sleep(0.1)
        if logged_all is None:
            print(f"  only {done} of {count} logged within {limit:.0f} s")
        else:
            remaining = max(10.0, limit - logged_all)
            if sink.wait_count("bl", count, remaining):
                acks_all = time.perf_counter() - start
            else:
                got = sum(1 for r in sink.arrivals if r.startswith("bl"))
                print(f"  only {got} of {count} acks at the sink {remaining:.0f} s later")
    finally:
        shutdown = running.stop()
    previous = (0, 0.0)
    for mark, at in progress:
        rate = (mark - previous[0]) / (at - previous[1]) if at > previous[1] else float("inf")
        print(f"  {mark:>6} logged after {at:6.1f} s  ({rate:.0f} msg/s since {previous[0]})")
        previous = (mark, at)
    rate = None
    if logged_all is not None:
        rate = count / logged_all
        tail = (count - previous[0]) / (logged_all - previous[1])
        print(
            f"  {count:>6} logged after {logged_all:6.1f} s  ({tail:.0f} msg/s since "
            f"{previous[0]}): {rate:.0f} msg/s overall"
        )
    if acks_all is not None:
        print(f"  all {count} acks at the sink after {acks_all:.1f} s ({count / acks_all:.0f}/s)")
    print(f"  inquiries by status: {status_counts(engine)}; outbox: {outbox_counts(engine)}")
    print(f"  daemon shutdown took {shutdown:.1f} s; sink saw {sink.duplicates} duplicate acks")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inquiries", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    describe_machine()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailer-bench-")))
        engine = db.connect(f"sqlite:///{tmp}/bench.db")
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        dovecot = DovecotServer.start()
        stack.callback(dovecot.stop)
        sink = Sink(tmp / "sink.err")
        stack.callback(sink.close)
        totals = latency(tmp, engine, dovecot, sink, args.inquiries)
        rate = backlog(tmp, engine, dovecot, sink, args.backlog) if args.backlog else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"peak RSS of the bench process (daemon included) {peak} MB")
    p50 = ms(quantile(totals, 0.5)) if totals else "n/a"
    p99 = ms(quantile(totals, 0.99)) if totals else "n/a"
    summary = f"{rate:.0f}" if rate is not None else "n/a"
    print(f"inbox: p50 {p50} ms, p99 {p99} ms; backlog {summary} msg/s")


if __name__ == "__main__":
    main()
