"""The morning digest: each agent with an address and something due today gets one email,
at ``SEND_AT`` in their own zone, through the outbox.

Its dedupe key names the agent and their local date, so asking again (every minute, after
a restart, from two daemons) never sends a second one that day.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from mailer.core.categories import Category
from mailer.core.config import Config
from mailer.customers import followups
from mailer.outbound import outbox

log = logging.getLogger("mailer.scheduling.digests")

TEMPLATE = "followups_digest"
SEND_AT = time(8, 0)
VALID_FOR = timedelta(hours=12)  # a digest that could not go by evening is stale
EVERY = timedelta(minutes=1)  # how often the daemon asks who is owed one


@dataclass(kw_only=True)
class Digests:
    engine: Engine
    fallback_zone: ZoneInfo
    base_url: str
    send_at: time = SEND_AT
    _asked_at: datetime | None = None

    @classmethod
    def from_config(cls, cfg: Config, engine: Engine) -> Digests:
        web = cfg.settings.web.base_url.rstrip("/")
        return cls(engine=engine, fallback_zone=cfg.settings.business_hours.timezone, base_url=web)

    def tick(self, now: datetime) -> int:
        """``send`` at most once a minute (of the injected clock); returns how many queued."""
        if self._asked_at is not None and now - self._asked_at < EVERY:
            return 0
        self._asked_at = now
        return self.send(now)

    def send(self, now: datetime) -> int:
        """Queue the digests owed now; returns how many were new."""
        with self.engine.connect() as conn:
            staff = followups.agents(conn, self.fallback_zone)
            owed = followups.digests_due(
                staff.values(), followups.earliest_due(conn), now, self.send_at
            )
            messages = [self._message(conn, digest, now) for digest in owed]
        queued = outbox.enqueue(self.engine, messages, now)
        if queued:
            log.info("follow-ups: %d morning digest(s) queued", queued)
        return queued

    def _message(
        self, conn: Connection, digest: followups.Digest, now: datetime
    ) -> outbox.NewMessage:
        agent = digest.agent
        assert agent.email is not None  # digests_due keeps only agents with an address
        rows = followups.find(
            conn, assignee=agent.name, due_before=followups.end_of_day(now, agent.zone)
        )
        groups = followups.by_day(rows, now, agent.zone)
        params = {
            "agent": agent.display_name,
            "day": digest.day.isoformat(),
            "zone": str(agent.zone),
            "overdue": [self._item(row, agent.zone) for row in groups["overdue"]],
            "today": [self._item(row, agent.zone) for row in groups["today"]],
            "followups_url": f"{self.base_url}/followups",
        }
        return outbox.NewMessage(
            dedupe_key=digest.dedupe_key,
            to_address=agent.email,
            category=Category.TRANSACTIONAL,
            template=TEMPLATE,
            locale="en",
            context={"params": params},
            valid_for=VALID_FOR,
        )

    def _item(self, row: Mapping[str, Any], zone: ZoneInfo) -> dict[str, str]:
        return {
            "customer": row["customer_name"] or row["email"],
            "email": row["email"],
            "due": f"{row['due_at'].astimezone(zone):%Y-%m-%d %H:%M}",
            "note": row["note"],
            "url": f"{self.base_url}/customers/{row['customer_id']}",
        }
