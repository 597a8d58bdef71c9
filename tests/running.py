"""The daemon (``daemon.serve``) running inside a test, stopped however the test ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine

from mailer import daemon
from mailer.clock import Clock
from mailer.config import Config

STOP_SECONDS = 30.0


@asynccontextmanager
async def serving(clock: Clock, *instances: tuple[Config, Engine]) -> AsyncIterator[None]:
    """One daemon per (config, database), on real servers (no sandbox), for the block."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(daemon.serve(cfg, engine, stop, sandbox_on=False, clock=clock))
        for cfg, engine in instances
    ]
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            await asyncio.wait_for(task, STOP_SECONDS)
