"""The local sandbox: an SMTP server inside mailer that keeps every message it is given.

With ``[sandbox] enabled`` the daemon delivers here instead of to a real server, so a
newcomer sees the whole road work (outbox -> SMTP -> a readable message) with no mail
account, and nothing can leave the machine.
"""

from __future__ import annotations

import asyncio
import email.policy
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.message import MIMEPart
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Table, delete, insert, select
from sqlalchemy.engine import Connection

from mailer.store.models import SandboxMessage

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

SANDBOX: Table = SandboxMessage.__table__  # type: ignore[attr-defined]
MAX_MESSAGE_BYTES = 50 * 1024 * 1024


Inbox = Callable[[bytes], Awaitable[None]]


class Capture:
    """aiosmtpd handler: store the message, then say 250 (only after it is stored).

    Mail for one of the ``support`` addresses is also put into the sandbox's IMAP
    mailbox, where the inbox watcher finds it, as a real server would deliver it."""

    def __init__(
        self, engine: Engine, now: Callable[[], datetime], support: frozenset[str], inbox: Inbox
    ) -> None:
        self._engine = engine
        self._now = now
        self._support = support
        self._inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        await asyncio.to_thread(self._store, envelope.mail_from or "", recipients, raw)
        if any(r.lower() in self._support for r in recipients):
            await self._inbox(raw)
        return "250 2.0.0 kept in the mailer sandbox"

    def _store(self, mail_from: str, recipients: list[str], raw: bytes) -> None:
        with self._engine.begin() as conn:
            store(conn, mail_from, recipients, raw, self._now())


def store(
    conn: Connection, mail_from: str, recipients: list[str], raw: bytes, now: datetime
) -> None:
    """Keep one message as the sandbox received it, with what a list of them shows."""
    headers = BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
    conn.execute(
        insert(SANDBOX).values(
            received_at=now,
            mail_from=mail_from,
            recipients=recipients,
            subject=str(headers.get("Subject", ""))[:998],
            message_id=str(headers.get("Message-ID", "")) or None,
            raw=raw,
        )
    )


async def start(
    engine: Engine,
    port: int,
    now: Callable[[], datetime],
    support: frozenset[str] = frozenset(),
    inbox: Inbox | None = None,
) -> asyncio.Server:
    """Listen on loopback only; port 0 picks a free one (read it back from the server).
    aiosmtpd is loaded here, by the daemon, not by every command that reads the sandbox."""
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = Capture(engine, now, support, inbox or _nowhere)
    return await loop.create_server(
        lambda: SMTP(handler, hostname="sandbox.mailer.local", data_size_limit=MAX_MESSAGE_BYTES),
        "127.0.0.1",
        port,
    )


async def _nowhere(raw: bytes) -> None:
    """Without an IMAP side, mail for support is only kept like any other."""


def erase_address(conn: Connection, address: str) -> int:
    """Drop every captured message that went to the address: the sandbox keeps whole
    messages, and there is nothing in one worth keeping once its reader is forgotten."""
    wanted = address.lower()
    rows = conn.execute(select(SANDBOX.c.id, SANDBOX.c.recipients)).all()
    ids = [r.id for r in rows if wanted in (a.lower() for a in r.recipients)]
    if ids:
        conn.execute(delete(SANDBOX).where(SANDBOX.c.id.in_(ids)))
    return len(ids)


def find(conn: Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, without the raw bytes."""
    columns = [c for c in SANDBOX.c if c.name != "raw"]
    query = select(*columns).order_by(SANDBOX.c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def get(conn: Connection, message_id: int) -> dict[str, Any] | None:
    """One captured message, parsed into headers, text and HTML for reading."""
    row = conn.execute(select(SANDBOX).where(SANDBOX.c.id == message_id)).mappings().one_or_none()
    if row is None:
        return None
    return {**{k: v for k, v in row.items() if k != "raw"}, **read(row["raw"])}


def read(raw: bytes) -> dict[str, Any]:
    """A message's headers (decoded), text part, HTML part and size, as a person reads them:
    the parts with plain newlines rather than the wire's CRLF."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    return {
        "headers": [(k, str(v)) for k, v in parsed.items()],
        "text": _content(text),
        "html": _content(html),
        "size": len(raw),
    }


def _content(part: MIMEPart | None) -> str | None:
    return None if part is None else str(part.get_content()).replace("\r\n", "\n")
