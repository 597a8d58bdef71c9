"""A role of the daemon that ends on an error stops the whole daemon, said in the log,
instead of the process running on without it (a delivery that stopped, say, would leave
the queue growing while the heartbeat says all is well)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Role
from mailer.hooks.sender import Webhooks
from mailer.outbound.delivery import Delivery
from tests.configs import shipped_config
from tests.smtp_sink import Sink


async def test_a_role_that_fails_stops_the_daemon_and_the_others_finish(
    engine: Engine,
    clock: ManualClock,
    sink: tuple[Sink, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No real server makes mailer's own code fail, so the webhook worker is given a bug;
    delivery, running beside it, is stopped as at a signal (its run returns)."""
    cfg = shipped_config(
        tmp_path, {"MAILER_SANDBOX__ENABLED": "false", "MAILER_SMTP__PORT": str(sink[1])}
    )

    async def broken(self: Webhooks, stop: asyncio.Event) -> None:
        raise RuntimeError("a bug in the webhook worker")

    finished: list[str] = []
    run = Delivery.run

    async def delivering(self: Delivery, stop: asyncio.Event) -> None:
        await run(self, stop)
        finished.append("delivery")

    monkeypatch.setattr(Webhooks, "run", broken)
    monkeypatch.setattr(Delivery, "run", delivering)
    stop = asyncio.Event()
    roles: frozenset[Role] = frozenset({"delivery"})
    serving = daemon.serve(cfg, engine, stop, sandbox_on=False, clock=clock, roles=roles)
    with caplog.at_level(logging.ERROR, "mailer"), pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(serving, 30)
    assert stop.is_set()
    assert finished == ["delivery"]
    assert "webhooks stopped on an error, so mailer stops" in caplog.text
