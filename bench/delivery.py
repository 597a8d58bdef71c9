"""Delivery throughput: N customers, one personalised newsletter each, every throttle check
on, delivered over SMTP into a local sink running in another process, on the event loop
`mailer run` uses; then Postfix's C load generator `smtp-source` pushes as many messages of
the same size into a sink of the same kind, in the same run, as the ceiling to compare with.

    .venv/bin/python bench/delivery.py [--customers 20000] [--database-url URL] [--pool 10]
        [--profile FILE] [--rounds 1]
    .venv/bin/python bench/delivery.py --dkim rsa|ed25519|both [--customers 5000] [--rounds 2]
    .venv/bin/python bench/delivery.py --workers 4 --postgres [--customers 10000] [--one-core-each]

The sink is Postfix's smtp-sink when installed (apt-get install postfix; it is not started
as a mail server), else aiosmtpd's Sink handler. The render workers are started on a few
messages first, as with ``--dkim``, so no run counts their start; only messages that reached
the sink are counted. Prints the time to enqueue, messages per second, peak RSS and the CPU
a message took in this process and in the render workers, then smtp-source's rate and the
ratio; the last line reads `mailer/smtp-source: R` (or says that smtp-source is not
installed). ``--rounds N`` runs mailer and smtp-source in turn N times, each mailer round
on a fresh copy of the audience, and ends with the median ratio and the range: on a shared
machine both rates swing, and one pair's ratio with them. ``--profile FILE`` profiles the
delivery with cProfile (the event loop and the threads it hands claims, rendering and
recording to) and prints where the time went.

``--dkim`` answers "what does signing cost?": the same delivery, each on a fresh copy of
the audience, unsigned and signed with each key asked for, in turn for ``--rounds`` rounds
and unsigned once more (the machine may be shared: unsigned runs bracket the signed ones),
each rate with the CPU a message took in this process and in the render workers (where
messages are rendered and signed) and the load average at its end; then each signed mean
rate over the unsigned one, and the CPU signing added to a message.

``--workers N --postgres`` answers "does delivery scale out?": on a throwaway PostgreSQL,
the audience is queued once, held; for 1, 2, 4 ... N processes, a copy of it is released
to that many real `mailer run --only delivery` processes (each its own SMTP pool to the
sink, no rate limit; quiet hours off, as the wall clock would defer some zones), and the
rate from release to the last message sent is printed with its ratio to one process and
the statements the processes ran per message (pg_stat_statements). One process with its
two render workers keeps two cores busy, so on two cores a second process has nothing to
add; ``--one-core-each`` confines each process (and the render workers it starts) to one
core, in turn, as when every process has a core of its own: whether the processes share
the queue and the database without slowing each other, on a machine too small to show it
with whole processes (PostgreSQL and the sink are not confined).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.pg

import psycopg  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import ColumnElement, Engine, func, insert, select, update  # noqa: E402

from mailer import daemon  # noqa: E402
from mailer.core import config  # noqa: E402
from mailer.core.categories import Category  # noqa: E402
from mailer.core.clock import ManualClock  # noqa: E402
from mailer.customers import tokens  # noqa: E402
from mailer.customers.profiles import CUSTOMERS  # noqa: E402
from mailer.outbound import dkim, outbox  # noqa: E402
from mailer.outbound.delivery import Delivery  # noqa: E402
from mailer.outbound.outbox import OUTBOX, NewMessage  # noqa: E402
from mailer.outbound.smtp import SmtpTarget  # noqa: E402
from mailer.store import db, migrate, workers  # noqa: E402
from mailer.store.models import OutboxStatus  # noqa: E402
from mailer.web import server as web_server  # noqa: E402
from tests.pg import PostgresServer, _as_owner, _bindir  # noqa: E402

# zones where 10:00 UTC is daytime, so quiet hours are checked but do not defer
ZONES = ("Europe/Sofia", "Europe/Berlin", "Asia/Jakarta", "Asia/Manila", "Africa/Lagos")
LOCALES = ("bg", "en", "id", "tl", "en")
NAMES = ("Мария Иванова", "Zoë Müller", "Siti Rahmawati", "José Reyes", "Ada Obi")
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
HELD = datetime(2099, 1, 1, tzinfo=UTC)  # queued but not due until the processes are up
LEAD = timedelta(seconds=3)  # release to first due: longer than the daemon's idle poll (1 s)
T = TypeVar("T")
ALGORITHMS: dict[str, tuple[dkim.Algorithm, ...]] = {
    "rsa": ("rsa",),
    "ed25519": ("ed25519",),
    "both": ("rsa", "ed25519"),
}


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


def messages(count: int, due_at: datetime | None = None) -> Iterator[NewMessage]:
    params = {"params": {"headline": "December news", "intro": "Our winter blend is back."}}
    for i in range(count):
        yield NewMessage(
            dedupe_key=f"bench:newsletter:{i + 1}",
            to_address=f"customer{i}@example.com",
            category=Category.MARKETING,
            template="newsletter",
            customer_id=i + 1,
            context=params,
            due_at=due_at,
        )


def load() -> str:
    """The 1-minute load average, printed with every rate: on a shared machine a rate means
    little without it."""
    return f"load {os.getloadavg()[0]:.2f}"


async def deliver_all(delivery: Delivery) -> tuple[int, int, bytes]:
    """How many messages went to the sink (not how many rows were handled: a row the
    throttle defers is handled but not sent), their mean size in bytes (smtp-source sends
    that size), and the first one as sent, to show what was measured (signed or not)."""
    sizes: list[int] = []
    first: list[bytes] = []
    send = delivery.relays.send

    async def counted(sender: str, recipient: str, data: bytes, category: str) -> str:
        sizes.append(len(data))
        first[:] = first or [data]
        return await send(sender, recipient, data, category)

    delivery.relays.send = counted  # type: ignore[method-assign]
    while await delivery.deliver_due():
        pass
    return len(sizes), sum(sizes) // max(len(sizes), 1), b"".join(first)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """What one delivery into a sink took."""

    sent: int
    size: int  # mean bytes a message
    first: bytes  # the first message as sent
    seconds: float
    cpu: float  # seconds of CPU in this process (the daemon's part)
    worker_cpu: float  # and in its render workers


def deliver(cfg: config.Config, engine: Engine, pool: int) -> Run:
    """Everything queued in ``engine``, delivered into a new sink in this process."""
    port = free_port()
    sink = start_sink(port)
    try:
        target = SmtpTarget(host="127.0.0.1", port=port, pool_size=pool)
        delivery = daemon.build_delivery(cfg, engine, ManualClock(NOW), target)
        web_server.settle()  # as `mailer run` does before its event loop (daemon.run)
        workers = children_cpu(sink.pid)
        cpu = time.process_time()
        start = time.perf_counter()
        sent, size, first = uvloop.run(deliver_all(delivery))  # as `mailer run` does
        took = time.perf_counter() - start
        cpu = time.process_time() - cpu
        spent = sum(t - workers.get(pid, 0.0) for pid, t in children_cpu(sink.pid).items())
        return Run(sent=sent, size=size, first=first, seconds=took, cpu=cpu, worker_cpu=spent)
    finally:
        sink.terminate()
        sink.wait()


def children_cpu(*but: int) -> dict[int, float]:
    """CPU seconds (user and system) of each process this one started, but ``but``: the
    render workers, which live from one run to the next."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(stat.parent.name)
        if int(fields[1]) == me and pid not in but:  # fields[1] is the parent's pid
            found[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


def filled(url: str, count: int) -> Engine:
    """A migrated database at ``url`` with ``count`` customers and a newsletter queued to each."""
    engine = db.connect(url)
    migrate.upgrade(engine)
    add_customers(engine, count)
    outbox.enqueue(engine, messages(count), NOW)
    return engine


def warm_up(tmp: str, pool: int) -> None:
    """Start the render workers on 200 messages of a throwaway database, so that no run
    counts their start (about a second on a busy machine) in its time."""
    warm = filled(f"sqlite:///{tmp}/warm.db", 200)
    deliver(config.load(ROOT / "config.toml", {"MAILER_PATHS__DATA": tmp}), warm, pool)
    warm.dispose()


def single(args: argparse.Namespace) -> None:
    """Mailer, then smtp-source, ``--rounds`` times in turn, each round on a fresh copy of the
    audience (a second newsletter to the same customers would be held by the throttle): on
    a shared machine both rates swing from minute to minute, and the ratio of one pair
    with them; the median of the rounds' ratios is the figure to quote."""
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(tmp, args.pool)
        cfg = config.load(ROOT / "config.toml", {"MAILER_PATHS__DATA": tmp})
        for number in range(args.rounds):
            engine = db.connect(args.database_url or f"sqlite:///{tmp}/bench{number}.db")
            migrate.upgrade(engine)
            add_customers(engine, args.customers)
            start = time.perf_counter()
            outbox.enqueue(engine, messages(args.customers), NOW)
            print(f"enqueued {args.customers} messages in {time.perf_counter() - start:.1f} s")
            run = profiled(args.profile, partial(deliver, cfg, engine, args.pool))
            engine.dispose()
            ratio = _against_smtp_source(run, args.customers)
            ratios += [] if ratio is None else [ratio]
    if len(ratios) > 1:
        spread = f"median of {len(ratios)}, {min(ratios):.3f}-{max(ratios):.3f}"
        print(f"mailer/smtp-source: {statistics.median(ratios):.3f} ({spread})")


def _against_smtp_source(run: Run, customers: int) -> float | None:
    """Print the run's figures and smtp-source's beside it; the ratio (None without Postfix)."""
    if run.sent != customers:
        raise SystemExit(f"{run.sent} of {customers} messages reached the sink")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rate = run.sent / run.seconds
    print(f"delivered {run.sent} messages of {run.size:,} bytes on average in {run.seconds:.1f} s")
    print(
        f"{rate:.0f} msg/s, peak RSS {peak} MB; CPU a message {_ms(run.cpu, run)} here + "
        f"{_ms(run.worker_cpu, run)} in render workers ({load()})"
    )
    ceiling = smtp_source(run.sent, run.size)
    if ceiling is None:
        print("smtp-source is not installed (apt-get install postfix): no ratio")
        return None
    print(f"smtp-source -s 10 -d, {run.sent} messages of {run.size:,} bytes: {ceiling:.0f} msg/s")
    print(f"mailer/smtp-source: {rate / ceiling:.3f}")
    return rate / ceiling


def signing(args: argparse.Namespace) -> None:
    """Unsigned and signed with each algorithm, in turn, then unsigned again: each on its
    own copy of the audience (a second newsletter to the same customers would be held by
    the throttle)."""
    algorithms = ALGORITHMS[args.dkim]
    order = [*(["none", *algorithms] * args.rounds), "none"]
    runs: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in algorithms:
            dkim.write_new(Path(tmp) / "dkim" / f"bench{algorithm}.pem", dkim.generate(algorithm))
        warm_up(tmp, args.pool)
        for number, variant in enumerate(order):
            env = {"MAILER_PATHS__DATA": tmp}
            if variant != "none":
                env["MAILER_SENDER__DKIM_SELECTOR"] = f"bench{variant}"
            cfg = config.load(ROOT / "config.toml", env)
            engine = filled(f"sqlite:///{tmp}/run{number}.db", args.customers)
            run = deliver(cfg, engine, args.pool)
            engine.dispose()
            if run.sent != args.customers:
                raise SystemExit(f"{variant}: {run.sent} of {args.customers} reached the sink")
            signed = run.first.count(b"DKIM-Signature:")
            if signed != (variant != "none"):
                raise SystemExit(f"{variant}: the first message carries {signed} DKIM signatures")
            runs.setdefault(variant, []).append(run)
            print(
                f"dkim {variant:8}: {run.sent} messages of {run.size:,} bytes in "
                f"{run.seconds:.1f} s, {run.sent / run.seconds:.0f} msg/s, CPU a message "
                f"{_ms(run.cpu, run)} here + {_ms(run.worker_cpu, run)} in workers "
                f"({load()})"
            )
    unsigned = _mean_rate(runs["none"])
    cpu = _mean_cpu(runs["none"])
    for algorithm in algorithms:
        extra = [c - u for c, u in zip(_mean_cpu(runs[algorithm]), cpu, strict=True)]
        print(
            f"signed {algorithm}/unsigned: {_mean_rate(runs[algorithm]) / unsigned:.3f} of the "
            f"rate; signing added {extra[0]:+.3f} ms CPU here, {extra[1]:+.3f} ms in workers "
            "a message"
        )


def profiled(path: str | None, work: Callable[[], Run]) -> Run:
    """``work()``, profiled with cProfile when ``path`` is given: the event loop's thread
    and each call delivery hands to a thread (claims, rendering, recording), merged; the
    stats are written to ``path`` and the top of them printed. The render workers are other
    processes: their CPU is printed beside, not profiled."""
    if path is None:
        return work()
    profiles: list[cProfile.Profile] = []
    to_thread = asyncio.to_thread

    async def in_thread(func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        def run() -> T:
            profile = cProfile.Profile()
            profiles.append(profile)
            return profile.runcall(func, *args, **kwargs)

        return await to_thread(run)

    asyncio.to_thread = in_thread
    main = cProfile.Profile()
    try:
        run = main.runcall(work)
    finally:
        asyncio.to_thread = to_thread
    stats = pstats.Stats(main)
    for profile in profiles:
        stats.add(profile)
    stats.dump_stats(path)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    return run


def _ms(seconds: float, run: Run) -> str:
    return f"{seconds / run.sent * 1000:.3f} ms"


def _mean_rate(runs: list[Run]) -> float:
    return sum(run.sent / run.seconds for run in runs) / len(runs)


def _mean_cpu(runs: list[Run]) -> tuple[float, float]:
    """Milliseconds of CPU a message, in this process and in the render workers."""
    sent = sum(run.sent for run in runs)
    here = sum(run.cpu for run in runs) / sent * 1000
    return here, sum(run.worker_cpu for run in runs) / sent * 1000


def worker_counts(most: int) -> list[int]:
    """1, 2, 4 ... up to ``most``, and ``most`` itself."""
    counts = [1]
    while counts[-1] * 2 <= most:
        counts.append(counts[-1] * 2)
    return counts if counts[-1] == most else [*counts, most]


def scale_out(args: argparse.Namespace) -> None:
    server = PostgresServer.start()
    sink: subprocess.Popen[bytes] | None = None
    try:
        # pg_stat_statements must be loaded at start: restart with the options it started with
        server.admin("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        pg_ctl = str(_bindir() / "pg_ctl")
        data, log = str(server.directory / "data"), str(server.directory / "log")
        restart = [pg_ctl, "-D", data, "-l", log, "-w", "-t", "30", "restart"]  # -l: not our pipe
        subprocess.run(_as_owner(restart), check=True, capture_output=True)
        server.admin(
            "CREATE EXTENSION pg_stat_statements",
            "CREATE ROLE watcher SUPERUSER LOGIN",  # the bench's own statements are not counted
            "CREATE DATABASE audience",
        )
        engine = filled_held(server.url("audience"), args.customers)
        engine.dispose()
        print(f"machine: {os.cpu_count()} cores; {args.customers} messages queued, held")
        port = free_port()
        sink = start_sink(port)
        with tempfile.TemporaryDirectory() as tmp:
            base: float | None = None
            for count in worker_counts(args.workers):
                server.admin(f"CREATE DATABASE run{count} TEMPLATE audience")
                url = server.url(f"run{count}")
                sent, elapsed, statements = run_workers(args, url, port, count, Path(tmp))
                rate = sent / elapsed
                base = base or rate
                print(
                    f"workers {count}: {sent} messages in {elapsed:.1f} s, {rate:.0f} msg/s, "
                    f"x{rate / base:.2f} of one ({load()}); "
                    f"{statements / max(sent, 1):.2f} statements a message"
                )
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait()
        server.stop()


def filled_held(url: str, count: int) -> Engine:
    """Customers and their newsletters, queued but not due: each run releases a copy."""
    engine = db.connect(url)
    migrate.upgrade(engine)
    add_customers(engine, count)
    outbox.enqueue(engine, messages(count, HELD), datetime.now(UTC))
    return engine


def run_workers(
    args: argparse.Namespace, url: str, port: int, count: int, tmp: Path
) -> tuple[int, float, int]:
    """``count`` `mailer run --only delivery` processes on ``url``: how many messages they
    sent, the seconds from release to the last one sent, and the statements they ran."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MAILER_DATABASE__URL": url,
        "MAILER_PATHS__DATA": str(tmp),
        "MAILER_SANDBOX__ENABLED": "false",
        "MAILER_SMTP__HOST": "127.0.0.1",
        "MAILER_SMTP__PORT": str(port),
        "MAILER_SMTP__POOL_SIZE": str(args.pool),  # each process its own pool
        "MAILER_SMTP__RATE_PER_SECOND": "0",
        "MAILER_THROTTLE__QUIET_HOURS": "",
    }
    cfg = config.load(ROOT / "config.toml", env)
    tokens.load_secret(cfg)  # made once here, not raced for by the processes
    command = [sys.executable, "-m", "mailer", "--config", str(ROOT / "config.toml")]
    logs = [tmp / f"run{count}-{i}.log" for i in range(count)]
    processes = [
        subprocess.Popen(
            [*command, "run", "--only", "delivery"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        for log in logs
    ]
    if args.one_core_each:  # before they start their render workers, which inherit it
        cores = sorted(os.sched_getaffinity(0))
        for i, process in enumerate(processes):
            os.sched_setaffinity(process.pid, {cores[i % len(cores)]})
    watcher = db.connect(_as_watcher(url))
    try:
        wait_for(lambda: len(workers.seen(watcher)) >= count, processes, logs, 60, "start")
        reset_statements(url)
        released = datetime.now(UTC)
        with watcher.begin() as conn:
            conn.execute(update(OUTBOX).values(due_at=released + LEAD))
        waiting = OUTBOX.c.status.in_([*outbox.WAITING, OutboxStatus.SENDING])
        wait_for(lambda: count_of(watcher, waiting) == 0, processes, logs, args.timeout, "drain")
        statements = statements_run(url)
        with watcher.connect() as conn:
            row = conn.execute(
                select(func.count(), func.max(OUTBOX.c.sent_at)).where(
                    OUTBOX.c.status == OutboxStatus.SENT
                )
            ).one()
        if row[0] != args.customers:
            raise SystemExit(f"{count} workers sent {row[0]} of {args.customers}: see {tmp}")
        return int(row[0]), (row[1] - released - LEAD).total_seconds(), statements
    finally:
        watcher.dispose()
        stop(processes)


def count_of(engine: Engine, where: ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(OUTBOX).where(where)).scalar_one())


def wait_for(
    done: Callable[[], bool],
    processes: list[subprocess.Popen[bytes]],
    logs: list[Path],
    seconds: float,
    what: str,
) -> None:
    """Poll ``done`` every 0.2 s for at most ``seconds``; stop at once if a process exits."""
    for _ in range(int(seconds / 0.2)):
        if done():
            return
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"a delivery process exited ({process.returncode}):\n{tail}")
        time.sleep(0.2)
    tail = logs[0].read_text(errors="replace")[-2000:]
    raise SystemExit(f"the delivery processes did not {what} within {seconds:.0f} s:\n{tail}")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _as_watcher(url: str) -> str:
    return url.replace("postgresql://postgres@", "postgresql://watcher@")


def _server_as_watcher(url: str) -> str:
    """The server's own database, where pg_stat_statements was created, as the watcher."""
    return _as_watcher(url.rsplit("/", 1)[0] + "/postgres")


def reset_statements(url: str) -> None:
    with psycopg.connect(_server_as_watcher(url), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def statements_run(url: str) -> int:
    """Statements the delivery processes (user postgres) ran on their database since the reset."""
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(_server_as_watcher(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
            " JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid"
            " WHERE r.rolname = 'postgres' AND d.datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--database-url")
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--dkim", choices=sorted(ALGORITHMS), help="compare signed and unsigned")
    parser.add_argument(
        "--rounds", type=int, help="turns of each, in turn (default 1; 2 with --dkim)"
    )
    parser.add_argument("--workers", type=int, help="up to this many `mailer run` processes")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for a drain at most")
    parser.add_argument(
        "--one-core-each",
        action="store_true",
        help="with --workers: each process and its render workers confined to one core",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the delivery into FILE")
    args = parser.parse_args()
    if args.one_core_each and args.workers is None:
        parser.error("--one-core-each goes with --workers")
    if args.rounds is not None and (args.rounds < 1 or args.workers is not None):
        parser.error("--rounds N (N >= 1) goes with the plain run or --dkim")
    if (args.rounds or 1) > 1 and (args.database_url or args.profile):
        parser.error("--rounds runs on fresh SQLite files: not with --database-url or --profile")
    args.rounds = args.rounds or (2 if args.dkim else 1)
    if args.workers is not None:
        if not args.postgres or args.database_url or args.workers < 1:
            parser.error("--workers N (N >= 1) needs --postgres: SQLite has one process")
        scale_out(args)
    elif args.dkim:
        if args.database_url or args.postgres:
            parser.error("--dkim runs on SQLite files of its own")
        signing(args)
    else:
        if args.postgres:
            parser.error("--postgres goes with --workers")
        single(args)


if __name__ == "__main__":
    main()
