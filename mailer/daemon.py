"""`mailer run`: the one long-lived process. It owns the event loop and the shutdown.

Each capability is a task started here (the sandbox mail server, the delivery workers,
the inbox watcher, the schedules, the webhook worker and the web app); on SIGINT or
SIGTERM they stop taking new work and get a bounded time to finish what is in flight,
after which unfinished messages go back to the queue. SIGHUP reads the schedule files again.

A process runs the roles it is given (``[daemon] roles``, ``--only``). The webhook worker
goes with delivery: both send what the outbox tables hold to the outside world, are safe to
run in many processes (claims skip what another holds) and need outbound network access,
which a machine that only serves the web app may well not have. On PostgreSQL the inbox
watcher and the scheduler run in one process at a time (``store.leader``), and what a dead
process was sending is taken back as soon as its heartbeat stops (``store.workers``); on
SQLite a second `mailer run` on the same file refuses to start, so a start takes back
everything that was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import signal
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

import uvloop
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from mailer import checks
from mailer.core import config
from mailer.core.clock import Clock, SystemClock
from mailer.core.config import BounceMailboxSettings, Config, ImapSettings, Role
from mailer.customers import tokens
from mailer.hooks.sender import Webhooks
from mailer.inbound.bounce_mailbox import Reports
from mailer.inbound.intake import AckPolicy
from mailer.inbound.mailbox import Mailbox
from mailer.inbound.reports import ReportPolicy
from mailer.inbound.watcher import Inbox, Inquiries
from mailer.outbound import deliverability, dkim, outbox, relays, throttle
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import Policy
from mailer.outbound.pacing import DomainPacing
from mailer.outbound.prepare import Preparer
from mailer.outbound.smtp import SmtpTarget
from mailer.outbound.templates import TemplateStore
from mailer.sandbox import smtp_server
from mailer.sandbox.imap_server import SandboxImap
from mailer.scheduling.digests import Digests
from mailer.scheduling.firing import Firing
from mailer.scheduling.scheduler import Scheduler, Schedules
from mailer.scheduling.schedules import segment_names
from mailer.store import db, workers
from mailer.store.leader import Leader, Work
from mailer.store.models import Customer
from mailer.web import server as web_server

log = logging.getLogger("mailer")

SHUTDOWN_GRACE = 15.0  # seconds in-flight messages get to finish after a stop signal
LEASE = timedelta(minutes=5)
# Messages a delivery batch holds when no rate limits it. 400 sent a newsletter about 5%
# faster, but its claim held SQLite's write lock twice as long: the API's sends during a
# campaign waited longer (p99 234-277 ms against 158-196, bench/api.py --backlog).
BATCH = 200


def build_delivery(
    cfg: Config,
    engine: Engine,
    clock: Clock,
    target: SmtpTarget | Sequence[SmtpTarget],
    worker: str | None = None,
) -> Delivery:
    """The delivery workers, wired to this configuration and sending through ``target``, one
    relay or several (see relays.targets); ``worker`` marks what they claim."""
    settings = cfg.settings
    policy = Policy(
        rules=throttle.Rules.from_settings(settings.throttle),
        fallback_zone=settings.business_hours.timezone,
        lease=LEASE,
        worker=worker,
    )
    store = TemplateStore(cfg.templates_dir)
    preparer = Preparer(cfg, store, tokens.load_secret(cfg), dkim.from_config(cfg))
    rng = random.Random()  # one generator for both, so a test can seed the relays' draws
    chosen = [target] if isinstance(target, SmtpTarget) else target
    sender = relays.Relays(chosen, engine, clock, rng)
    return Delivery(
        engine=engine,
        batch_size=relays.batch_for(chosen, BATCH),
        preparer=preparer,
        relays=sender,
        pacing=DomainPacing.from_config(cfg, engine),
        policy=policy,
        clock=clock,
        rng=rng,
    )


SANDBOX_PASSWORD = "sandbox"  # the sandbox IMAP server listens on loopback only


async def _start_sandbox(
    cfg: Config, engine: Engine, clock: Clock, stack: contextlib.AsyncExitStack
) -> None:
    """The sandbox's SMTP server, and its IMAP mailbox that mail for support lands in."""
    settings = cfg.settings
    with checks.listening(cfg, "sandbox", "imap_port"):
        imap = await SandboxImap.start(
            settings.sandbox.imap_port, username=settings.imap.username, password=SANDBOX_PASSWORD
        )
    stack.push_async_callback(imap.close)
    support = AckPolicy.from_config(cfg).identity.addresses
    with checks.listening(cfg, "sandbox", "smtp_port"):
        server = await smtp_server.start(
            engine, settings.sandbox.smtp_port, clock.now, support, imap.deliver
        )
    stack.push_async_callback(_close_server, server)


def build_inbox(
    cfg: Config, engine: Engine, clock: Clock, wake: Callable[[], None], *, sandbox_on: bool
) -> Inbox:
    """The watcher of the support mailbox (``[imap]``, or the sandbox's); it wakes delivery."""
    imap = cfg.settings.imap

    def open_mailbox() -> Mailbox:
        if sandbox_on:
            port = cfg.settings.sandbox.imap_port
            return Mailbox(
                "127.0.0.1",
                port,
                security="none",
                username=imap.username,
                password=SANDBOX_PASSWORD,
                mailbox="INBOX",
            )
        return _mailbox(cfg, imap, "imap")

    return Inbox(
        engine=engine,
        open_mailbox=open_mailbox,
        handler=Inquiries(AckPolicy.from_config(cfg)),
        clock=clock,
        processed=imap.processed,
        poll_seconds=imap.poll_seconds,
        max_raw=imap.keep_raw_mb * 1024 * 1024,
        on_queued=wake,
    )


def _mailbox(cfg: Config, settings: ImapSettings | BounceMailboxSettings, section: str) -> Mailbox:
    """The mailbox ``[section]`` configures, with the password its ``password_env`` names."""
    return Mailbox(
        settings.host,
        settings.port,
        security=settings.security,
        username=settings.username,
        password=cfg.secret(section, "password_env"),
        mailbox=settings.mailbox,
    )


def build_bounce_mailbox(
    cfg: Config, engine: Engine, clock: Clock, *, sandbox_on: bool
) -> Inbox | None:
    """The watcher of the bounce mailbox (``[bounces.imap]``): its reports are read beside
    support's mail and none becomes an inquiry. None when none is set, and in the sandbox,
    which sends nothing out, so nothing bounces."""
    imap = cfg.settings.bounces.imap
    if sandbox_on or not imap.enabled:
        return None

    return Inbox(
        engine=engine,
        open_mailbox=lambda: _mailbox(cfg, imap, "bounces.imap"),
        handler=Reports(ReportPolicy.from_config(cfg)),
        clock=clock,
        processed=imap.processed,
        poll_seconds=imap.poll_seconds,
    )


def build_scheduler(
    cfg: Config,
    engine: Engine,
    clock: Clock,
    wake: Callable[[], None],
    tell: Callable[[], None],
) -> Scheduler:
    """Schedule files from ``[paths] schedules``, fired into the outbox; it wakes delivery,
    and ``tell`` (the webhook worker) when due follow-ups were recorded as webhooks."""
    store = TemplateStore(cfg.templates_dir)
    files = Schedules(
        directory=cfg.schedules_dir,
        template_names=store.names,
        clock=clock,
        segments=segment_names(cfg.settings.insight),
    )
    return Scheduler(
        schedules=files,
        engine=engine,
        clock=clock,
        firing=Firing.from_config(cfg),
        on_queued=wake,
        on_told=tell,
        digests=Digests.from_config(cfg, engine),
        watch=deliverability.Watch(
            engine=engine,
            limits=deliverability.Thresholds.from_config(cfg),
            zone=cfg.settings.business_hours.timezone,
        ),
    )


async def serve(
    cfg: Config,
    engine: Engine,
    stop: asyncio.Event,
    *,
    sandbox_on: bool,
    clock: Clock,
    reload: asyncio.Event | None = None,
    roles: frozenset[Role] | None = None,
) -> None:
    """Run ``roles`` (default ``[daemon] roles``) until ``stop`` is set; ``reload`` (SIGHUP)
    reads the schedule files again."""
    roles = frozenset(cfg.settings.daemon.roles) if roles is None else roles
    async with contextlib.AsyncExitStack() as stack:
        if sandbox_on and roles & {"delivery", "inbox"}:
            await _start_sandbox(cfg, engine, clock, stack)
        targets = relays.targets(cfg, sandbox=sandbox_on)
        worker = await _arrive(engine, clock)
        wake, tell, tasks = _nobody, _nobody, []
        if "delivery" in roles:
            delivery = build_delivery(cfg, engine, clock, targets, worker)
            webhooks = Webhooks(engine=engine, clock=clock, settings=cfg.settings.webhooks)
            tasks += [
                _task(delivery.run(stop), "delivery", stop),
                _task(webhooks.run(stop), "webhooks", stop),
            ]
            wake, tell = delivery.wake, webhooks.wake
        if "inbox" in roles:
            watcher = build_inbox(cfg, engine, clock, wake, sandbox_on=sandbox_on)
            mailbox = "INBOX" if sandbox_on else cfg.settings.imap.mailbox
            tasks.append(_task(_led(engine, f"inbox {mailbox}", watcher.run, stop), "inbox", stop))
            bounced = build_bounce_mailbox(cfg, engine, clock, sandbox_on=sandbox_on)
            if bounced is not None:
                lock = bounced.position_name(cfg.settings.bounces.imap.mailbox)
                tasks.append(_task(_led(engine, lock, bounced.run, stop), "bounce mailbox", stop))
        if "schedules" in roles:
            scheduler = build_scheduler(cfg, engine, clock, wake, tell)
            fire = functools.partial(_fire_schedules, scheduler, reload or asyncio.Event())
            tasks.append(_task(_led(engine, "schedules", fire, stop), "schedules", stop))
        if worker is not None:
            beating = _keep_alive(engine, clock, worker, wake, stop, workers.HEARTBEAT)
            tasks.append(_task(beating, "heartbeat", stop))
        if "web" in roles and cfg.settings.web.enabled:
            with checks.listening(cfg, "web", "bind"):
                sock = web_server.listen(cfg.settings.web.bind)
            app = web_server.build(cfg, engine, clock)
            tasks.append(_task(web_server.serve(app, sock, stop), "web", stop))
        await _announce(cfg, engine, targets, sandbox_on, roles)
        await stop.wait()
        log.info("stopping: finishing messages in flight (at most %.0f s)", SHUTDOWN_GRACE)
        failed = [error for task in tasks if (error := await _finish(task)) is not None]
        if worker is not None:
            await asyncio.to_thread(workers.forget, engine, [worker])
    if failed:
        raise failed[0]  # the process exits 1, for a service manager to start it again
    log.info("mailer stopped")


def _task(work: Coroutine[Any, Any, None], name: str, stop: asyncio.Event) -> asyncio.Task[None]:
    """A role's task. One that ends on an error of its own stops the daemon at once, the
    others finishing as at a signal, rather than run on without that role and say nothing."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(functools.partial(_ended, stop))
    return task


def _ended(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    log.error("%s stopped on an error, so mailer stops: %r", task.get_name(), task.exception())
    stop.set()


def _nobody() -> None:
    """No delivery here: another process's delivery (and webhook worker) finds what was
    queued at its next look."""


async def _fire_schedules(scheduler: Scheduler, reload: asyncio.Event, stop: asyncio.Event) -> None:
    await scheduler.run(stop, reload)


def _led(engine: Engine, name: str, work: Work, stop: asyncio.Event) -> Coroutine[Any, Any, None]:
    """``work`` in one process at a time on PostgreSQL; on SQLite this is the only process."""
    if engine.dialect.name != "postgresql":
        return work(stop)
    return Leader(url=engine.url, name=name).run(work, stop)


async def _arrive(engine: Engine, clock: Clock) -> str | None:
    """This process's worker id on PostgreSQL (None on SQLite), once what processes that are
    gone left in flight is back in the queue: on SQLite all of it, this being the only one."""
    now = clock.now()
    worker = None
    if engine.dialect.name == "postgresql":
        worker = workers.new_id()
        await asyncio.to_thread(workers.register, engine, worker, now)
        taken = await asyncio.to_thread(_take_back, engine, now)
    else:
        taken = await asyncio.to_thread(outbox.take_back, engine, now, None)
    if taken:
        log.info("took back %d message(s) that a stopped process was sending", taken)
    return worker


def _take_back(engine: Engine, now: datetime, back_at: datetime | None = None) -> int:
    """Queue again what the processes whose heartbeat stopped were sending; forget them.
    ``back_at``: when this process found the database again after losing it."""
    gone = workers.gone(engine, now, back_at)
    taken = outbox.take_back(engine, now, gone)
    workers.forget(engine, gone)
    return taken


async def _keep_alive(
    engine: Engine,
    clock: Clock,
    worker: str,
    wake: Callable[[], None],
    stop: asyncio.Event,
    every: float,
) -> None:
    """Renew this process's heartbeat, and take back what dead processes left, until
    stopped. After the database was away, the others get a whole lifetime to beat again."""
    away, back_at = False, None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            if not await asyncio.to_thread(workers.renew, engine, worker, clock.now()):
                log.warning(
                    "this process was taken for dead (no heartbeat for %s); what it was "
                    "sending went back to the queue",
                    workers.LIFETIME,
                )
            if away:
                away, back_at = False, clock.now()
            if await asyncio.to_thread(_take_back, engine, clock.now(), back_at):
                log.info("took back the messages of a process that stopped")
                wake()
        except DBAPIError as exc:  # the database is away: the next beat tries again
            away = True
            log.warning("heartbeat: %s", db.reason(exc))


async def _announce(
    cfg: Config,
    engine: Engine,
    targets: Sequence[SmtpTarget],
    sandbox_on: bool,
    roles: frozenset[Role],
) -> None:
    customers = await asyncio.to_thread(_count_customers, engine)
    relayed = ", ".join(f"{t.name} {t}" if len(targets) > 1 else str(t) for t in targets)
    where = f"the sandbox at {relayed} (see `mailer sandbox list`)" if sandbox_on else relayed
    delivering = f"delivering to {where}" if "delivery" in roles else "not delivering"
    log.info(
        "mailer is running with %d customers, %d templates; %s; roles %s; database %s; "
        "press Ctrl+C to stop",
        customers,
        len(TemplateStore(cfg.templates_dir).names()),
        delivering,
        ",".join(name for name in config.ROLES if name in roles),
        engine.url.render_as_string(hide_password=True),
    )


async def _finish(task: asyncio.Task[None]) -> BaseException | None:
    """Wait for a role to end, cancelled past the grace; the error it ended on, if any."""
    try:
        await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception as error:  # said in the log when it happened
        return error
    return None


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def _count_customers(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())


def run(
    cfg: Config, engine: Engine, *, sandbox_on: bool, roles: frozenset[Role] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then return normally so the process exits 0. On SQLite
    the caller holds ``workers.alone``: this is then the only process."""

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await serve(
            cfg,
            engine,
            stop,
            sandbox_on=sandbox_on,
            clock=SystemClock(),
            reload=reload,
            roles=roles,
        )

    web_server.settle()
    # uvloop: aiosmtplib's protocol handling, most of a send's CPU, runs about 1.5x as fast
    uvloop.run(main())
