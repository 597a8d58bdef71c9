"""The daemon (``daemon.serve``) running inside a test, stopped however the test ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import Engine

from mailer import daemon
from mailer.core.clock import Clock
from mailer.core.config import Config

STOP_SECONDS = 30.0
EVENT_SECONDS = 10.0  # bound on waiting for something a real server will do
POLL = 0.01  # seconds between two looks at its progress


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


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait, bounded by EVENT_SECONDS, for something a real server will do."""
    for _ in range(int(EVENT_SECONDS / POLL)):
        if condition():
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"not within {EVENT_SECONDS} s: {what}")
