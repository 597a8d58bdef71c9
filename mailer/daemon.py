"""`mailer run`: the one long-lived process. It owns the event loop and the shutdown.

Each capability is a task started here (the sandbox mail server, the delivery workers,
the inbox watcher, the schedules, the webhook worker and the web app); on SIGINT or
SIGTERM they stop taking new work and get a bounded time to finish what is in flight,
after which unfinished messages go back to the queue. SIGHUP reads the schedule files again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import timedelta

import uvloop
from sqlalchemy import Engine, func, select

from mailer import checks
from mailer.core.clock import Clock, SystemClock
from mailer.core.config import Config
from mailer.customers import tokens
from mailer.hooks.sender import Webhooks
from mailer.inbound.intake import AckPolicy
from mailer.inbound.mailbox import Mailbox
from mailer.inbound.watcher import Inbox
from mailer.outbound import throttle
from mailer.outbound.delivery import Delivery
from mailer.outbound.outbox import Policy
from mailer.outbound.prepare import Preparer
from mailer.outbound.smtp import SmtpPool, SmtpTarget
from mailer.outbound.templates import TemplateStore
from mailer.sandbox import smtp_server
from mailer.sandbox.imap_server import SandboxImap
from mailer.scheduling.digests import Digests
from mailer.scheduling.firing import Firing
from mailer.scheduling.scheduler import Scheduler, Schedules
from mailer.scheduling.schedules import segment_names
from mailer.store.models import Customer
from mailer.web import server as web_server

log = logging.getLogger("mailer")

SHUTDOWN_GRACE = 15.0  # seconds in-flight messages get to finish after a stop signal
LEASE = timedelta(minutes=5)


def build_delivery(cfg: Config, engine: Engine, clock: Clock, target: SmtpTarget) -> Delivery:
    """The delivery workers, wired to this configuration."""
    settings = cfg.settings
    policy = Policy(
        rules=throttle.Rules.from_settings(settings.throttle),
        fallback_zone=settings.business_hours.timezone,
        lease=LEASE,
    )
    preparer = Preparer(cfg, TemplateStore(cfg.templates_dir), tokens.load_secret(cfg))
    return Delivery(
        engine=engine, preparer=preparer, pool=SmtpPool(target, clock), policy=policy, clock=clock
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
        return Mailbox(
            imap.host,
            imap.port,
            security=imap.security,
            username=imap.username,
            password=cfg.secret("imap", "password_env"),
            mailbox=imap.mailbox,
        )

    policy = AckPolicy.from_config(cfg)
    return Inbox(
        engine=engine,
        open_mailbox=open_mailbox,
        policy=policy,
        clock=clock,
        processed=imap.processed,
        poll_seconds=imap.poll_seconds,
        max_raw=imap.keep_raw_mb * 1024 * 1024,
        on_queued=wake,
    )


def build_scheduler(
    cfg: Config, engine: Engine, clock: Clock, wake: Callable[[], None]
) -> Scheduler:
    """Schedule files from ``[paths] schedules``, fired into the outbox; it wakes delivery."""
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
        digests=Digests.from_config(cfg, engine),
    )


async def serve(
    cfg: Config,
    engine: Engine,
    stop: asyncio.Event,
    *,
    sandbox_on: bool,
    clock: Clock,
    reload: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set; ``reload`` (SIGHUP) reads the schedule files again."""
    async with contextlib.AsyncExitStack() as stack:
        if sandbox_on:
            await _start_sandbox(cfg, engine, clock, stack)
        target = SmtpTarget.from_config(cfg, sandbox=sandbox_on)
        delivery = build_delivery(cfg, engine, clock, target)
        watcher = build_inbox(cfg, engine, clock, delivery.wake, sandbox_on=sandbox_on)
        scheduler = build_scheduler(cfg, engine, clock, delivery.wake)
        webhooks = Webhooks(engine=engine, clock=clock, settings=cfg.settings.webhooks)
        workers = [
            asyncio.create_task(delivery.run(stop), name="delivery"),
            asyncio.create_task(watcher.run(stop), name="inbox"),
            asyncio.create_task(scheduler.run(stop, reload or asyncio.Event()), name="schedules"),
            asyncio.create_task(webhooks.run(stop), name="webhooks"),
        ]
        if cfg.settings.web.enabled:
            with checks.listening(cfg, "web", "bind"):
                sock = web_server.listen(cfg.settings.web.bind)
            app = web_server.build(cfg, engine, clock)
            workers.append(asyncio.create_task(web_server.serve(app, sock, stop), name="web"))
        await _announce(cfg, engine, target, sandbox_on)
        await stop.wait()
        log.info("stopping: finishing messages in flight (at most %.0f s)", SHUTDOWN_GRACE)
        for worker in workers:
            await _finish(worker)
    log.info("mailer stopped")


async def _announce(cfg: Config, engine: Engine, target: SmtpTarget, sandbox_on: bool) -> None:
    customers = await asyncio.to_thread(_count_customers, engine)
    where = f"the sandbox at {target} (see `mailer sandbox list`)" if sandbox_on else str(target)
    log.info(
        "mailer is running with %d customers, %d templates; delivering to %s; database %s; "
        "press Ctrl+C to stop",
        customers,
        len(TemplateStore(cfg.templates_dir).names()),
        where,
        engine.url.render_as_string(hide_password=True),
    )


async def _finish(task: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


def _count_customers(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())


def run(cfg: Config, engine: Engine, *, sandbox_on: bool) -> None:
    """Serve until SIGINT/SIGTERM, then return normally so the process exits 0."""

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await serve(cfg, engine, stop, sandbox_on=sandbox_on, clock=SystemClock(), reload=reload)

    # uvloop: aiosmtplib's protocol handling, most of a send's CPU, runs about 1.5x as fast
    uvloop.run(main())
