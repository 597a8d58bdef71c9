"""The mailbox watcher: every message in a watched mailbox is handed to its handler. In the
support mailbox (:class:`Inquiries`) each becomes an inquiry, and those from people get an
acknowledgement through the outbox; in the bounce mailbox
(:class:`mailer.inbound.bounce_mailbox.Reports`) reports change what they report and
nothing becomes an inquiry.

A message is marked processed on the server only after what its handler wrote (an
inquiry and its acknowledgement, or a bounce) is committed, and the last UID is kept with
the mailbox's UIDVALIDITY, so a restart at any moment loses no mail and handles none twice.
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
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from mailer.core.clock import Clock
from mailer.inbound import inquiries, language
from mailer.inbound.intake import AckPolicy, handle
from mailer.inbound.mailbox import Fetched, Mailbox, MailboxUnavailable
from mailer.inbound.parsing import MAX_RAW, Inbound, parse
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


class Handler(Protocol):
    """What a watched mailbox's messages become, written in the caller's transaction, the one
    that also moves the mailbox's position."""

    @property
    def name(self) -> str:
        """The mailbox's part in the log ("inbox"); a prefix to its position unless "inbox"."""

    def handle(self, conn: Connection, inbound: Inbound, now: datetime) -> None: ...

    def failed(self, conn: Connection, raw: bytes, error: str, now: datetime) -> None:
        """A message that made ``handle`` fail (``error`` is the traceback), kept or logged."""

    def ready(self) -> None:
        """Load what ``handle`` needs before it runs inside the mailbox's transaction."""


@dataclass(frozen=True, slots=True)
class Inquiries:
    """The support mailbox: each message becomes an inquiry; one that fails is kept as a
    failed inquiry, for a person to read."""

    policy: AckPolicy
    name = "inbox"

    def handle(self, conn: Connection, inbound: Inbound, now: datetime) -> None:
        handle(conn, inbound, now, self.policy)

    def failed(self, conn: Connection, raw: bytes, error: str, now: datetime) -> None:
        inquiries.log_failed(conn, raw, error, now)

    def ready(self) -> None:
        """The language model for new senders: loading it takes about a second, which the
        first new sender's transaction (SQLite's one writer) would otherwise wait for."""
        language.load()


@dataclass(kw_only=True)
class Inbox:
    engine: Engine
    open_mailbox: Callable[[], Mailbox]
    handler: Handler
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
        name = self.position_name(mailbox.name)
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
            log.info(
                "%s: %d new message(s) in %s handled", self.handler.name, handled, mailbox.name
            )
        return handled

    def position_name(self, mailbox: str) -> str:
        """Where the position is kept: the support mailbox's by its name, another's with its
        handler's name before it, as a bounce mailbox is often an INBOX too."""
        kind = self.handler.name
        return mailbox if kind == Inquiries.name else f"{kind} {mailbox}"

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
                    self.handler.handle(conn, inbound, now)
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
        log.exception("%s: message UID %d could not be handled", self.handler.name, message.uid)
        with self.engine.begin() as conn:
            self.handler.failed(conn, message.raw[: self.max_raw], error, now)
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
        await asyncio.to_thread(self.handler.ready)
        try:
            while not stop.is_set():
                try:
                    await self.process_available()
                    await _until_stop(stop, self._wait_for_new())
                    wait = RECONNECT[0]
                except UNAVAILABLE as exc:
                    kind = self.handler.name
                    log.warning("%s unavailable, retrying in %.0f s: %s", kind, wait, exc)
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
