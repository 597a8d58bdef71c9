"""`mailer run`: the one long-lived process. It owns the event loop and the shutdown.

Each capability (delivery workers, inbox watcher, scheduler, web app) is a task started
here; on SIGINT or SIGTERM they are asked to stop and given a bounded time to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from sqlalchemy import Engine, func, select

from mailer.config import Config
from mailer.models import Customer
from mailer.templates import TemplateStore

log = logging.getLogger("mailer")


async def serve(cfg: Config, engine: Engine, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    customers = await asyncio.to_thread(_count_customers, engine)
    templates = TemplateStore(cfg.templates_dir).names()
    log.info(
        "mailer is running with %d customers and %d templates (database %s); press Ctrl+C to stop",
        customers,
        len(templates),
        engine.url.render_as_string(hide_password=True),
    )
    await stop.wait()
    log.info("mailer stopped")


def _count_customers(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())


def run(cfg: Config, engine: Engine) -> None:
    """Serve until SIGINT/SIGTERM, then return normally so the process exits 0."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(cfg, engine, stop)

    asyncio.run(main())
