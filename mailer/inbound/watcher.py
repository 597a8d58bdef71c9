"""The inbox watcher: every message in the support mailbox becomes an inquiry, and those
from people get an acknowledgement through the outbox.

A message is marked processed on the server only after its inquiry (and its
acknowledgement, in the same transaction) is committed, and the last UID is kept with
the mailbox's UIDVALIDITY, so a restart at any moment loses no mail and logs none twice.
When UIDVALIDITY changes the mailbox is read again from the start and Message-IDs
already logged are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.core.clock import Clock
from mailer.inbound import inquiries
from mailer.inbound.intake import AckPolicy, handle
from mailer.inbound.mailbox import Fetched, Mailbox, MailboxUnavailable
from mailer.inbound.parsing import MAX_RAW, parse
from mailer.store.models import MAILBOX_STATE

log = logging.getLogger("mailer.inbound.watcher")

RECONNECT = (1.0, 300.0)  # first and longest wait before reconnecting
IDLE_SECONDS = 25 * 60  # re-issue IDLE well before the 29 minutes of RFC 2177
# Failures that say nothing about the message: wait and try again, never log it as failed.
UNAVAILABLE = (MailboxUnavailable, OperationalError, InterfaceError)


def load_position(conn: Connection, mailbox: str, uidvalidity: int) -> int:
    """The last UID handled, or 0 when the mailbox is new or its UIDVALIDITY changed."""
    row = (
        conn.execute(select(MAILBOX_STATE).where(MAILBOX_STATE.c.mailbox == mailbox))
        .mappings()
        .first()
    )
    if row is None or row["uidvalidity"] != uidvalidity:
        return 0
    return int(row["last_uid"])


def save_position(
    conn: Connection, mailbox: str, uidvalidity: int, uid: int, now: datetime
) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    values = {"mailbox": mailbox, "uidvalidity": uidvalidity, "last_uid": uid, "updated_at": now}
    statement = dialect.insert(MAILBOX_STATE).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["mailbox"],
            set_={k: statement.excluded[k] for k in ("uidvalidity", "last_uid", "updated_at")},
        )
    )


@dataclass(kw_only=True)
class Inbox:
    engine: Engine
    open_mailbox: Callable[[], Mailbox]
    policy: AckPolicy
    clock: Clock
    processed: str = "flag"
    poll_seconds: float = 60.0  # only for servers without IDLE
    max_raw: int = MAX_RAW
    on_queued: Callable[[], None] = lambda: None
    rng: random.Random = field(default_factory=random.Random)
    _mailbox: Mailbox | None = None
    _swept: bool = False

    async def process_available(self) -> int:
        """Log everything not yet handled; returns how many messages were new.

        Each fetched list is committed in one transaction with the new position and then
        marked on the server with one command: a backlog costs a commit and a round trip
        per hundred messages, not per message.
        """
        mailbox = await self._connected()
        name = mailbox.name
        last = await asyncio.to_thread(self._position, name, mailbox.uidvalidity)
        if not self._swept:  # once per connection: what an interruption left unmarked
            await mailbox.mark_processed(await mailbox.unmarked_up_to(last), self.processed)
            self._swept = True
        handled = 0
        async for fetched in mailbox.fetch_after(last):
            await asyncio.to_thread(self._commit, name, mailbox.uidvalidity, fetched)
            self.on_queued()  # their acknowledgements can go at once, not at the next poll
            await mailbox.mark_processed([f.uid for f in fetched], self.processed)
            handled += len(fetched)
        if handled:
            log.info("inbox: %d new message(s) in %s logged", handled, name)
        return handled

    def _position(self, name: str, uidvalidity: int) -> int:
        with self.engine.connect() as conn:
            return load_position(conn, name, uidvalidity)

    def _commit(self, name: str, uidvalidity: int, fetched: list[Fetched]) -> None:
        """All or nothing per list; if the list fails, each message again on its own, so one
        message that breaks the decision is logged as failed and the others as usual."""
        now = self.clock.now()
        try:
            # parsed before the transaction: SQLite's one writer is not kept waiting on MIME
            parsed = [parse(message.raw, max_raw=self.max_raw) for message in fetched]
            with self.engine.begin() as conn:
                for inbound in parsed:
                    handle(conn, inbound, now, self.policy)
                save_position(conn, name, uidvalidity, fetched[-1].uid, now)
        except UNAVAILABLE:
            raise  # the server or the database is unreachable: no message is to blame
        except Exception:
            if len(fetched) == 1:
                self._commit_failed(name, uidvalidity, fetched[0], now)
            else:
                for message in fetched:
                    self._commit(name, uidvalidity, [message])

    def _commit_failed(self, name: str, uidvalidity: int, message: Fetched, now: datetime) -> None:
        error = traceback.format_exc(limit=-3)
        log.exception("inbox: message UID %d could not be handled; logged as failed", message.uid)
        with self.engine.begin() as conn:
            inquiries.log_failed(conn, message.raw[: self.max_raw], error, now)
            save_position(conn, name, uidvalidity, message.uid, now)

    async def _connected(self) -> Mailbox:
        if self._mailbox is None:
            mailbox = self.open_mailbox()
            await mailbox.open()
            self._mailbox, self._swept = mailbox, False
        return self._mailbox

    async def close(self) -> None:
        if self._mailbox is not None:
            mailbox, self._mailbox = self._mailbox, None
            await mailbox.close()

    async def _wait_for_new(self) -> None:
        mailbox = await self._connected()
        await mailbox.wait_for_new(IDLE_SECONDS if mailbox.supports_idle else self.poll_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until stopped; any connection problem is logged and retried with backoff."""
        wait = RECONNECT[0]
        try:
            while not stop.is_set():
                try:
                    await self.process_available()
                    await _until_stop(stop, self._wait_for_new())
                    wait = RECONNECT[0]
                except UNAVAILABLE as exc:
                    log.warning("inbox unavailable, retrying in %.0f s: %s", wait, exc)
                    await self.close()
                    await _sleep_or_stop(stop, wait * self.rng.uniform(0.8, 1.2))
                    wait = min(wait * 2, RECONNECT[1])
        finally:
            await self.close()


async def _until_stop(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` unless ``stop`` comes first; then cancel it (an IDLE may last minutes)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        task.result()
    else:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, MailboxUnavailable):
            await task


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
