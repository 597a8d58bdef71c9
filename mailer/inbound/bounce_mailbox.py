"""The bounce mailbox: where the return path's mail lands (``[bounces.imap]``), watched
beside support's by the same watcher. Reports about our mail change what they report;
nothing here becomes an inquiry, since nobody at the desk should answer a machine.

Whatever else reaches the return path (a person replying to it, spam) is only logged with
its Message-ID and sender, and is marked processed like every other message. A report
that changes nothing (unreadable, or about mail that is not ours) is logged with its first
bytes, so an operator can see what a server sent; it never suppresses anyone by guess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from mailer.inbound import reports
from mailer.inbound.parsing import Inbound

log = logging.getLogger("mailer.inbound.bounce_mailbox")

LOGGED_BYTES = 4096  # of a report that changed nothing: its headers and the report's start


@dataclass(frozen=True, slots=True)
class Reports:
    """The watcher's handler for the bounce mailbox."""

    policy: reports.ReportPolicy
    name = "bounce mailbox"

    def handle(self, conn: Connection, inbound: Inbound, now: datetime) -> None:
        message, about = inbound.message, _described(inbound)
        if message is None:
            _log_raw(f"{about} cannot be parsed ({'; '.join(inbound.defects)})", inbound.raw)
        elif not reports.is_report(message):
            log.info("%s: %s is not a report; not logged as an inquiry", self.name, about)
        elif (outcome := reports.record(conn, message, now, self.policy)) in reports.UNCHANGED:
            _log_raw(f"report {about}: {outcome}", inbound.raw)
        else:
            log.info("%s: report %s: %s", self.name, about, outcome)

    def failed(self, conn: Connection, raw: bytes, error: str, now: datetime) -> None:
        _log_raw("a message could not be handled, nothing changed", raw)

    def ready(self) -> None:
        """Reading reports needs nothing loaded first."""


def _described(inbound: Inbound) -> str:
    return f"{inbound.message_id or '(no Message-ID)'} from {inbound.sender or '(no sender)'}"


def _log_raw(what: str, raw: bytes) -> None:
    """One log line with the message's first bytes, escaped: a report's bytes are evidence."""
    shown = raw[:LOGGED_BYTES]
    cut = f"its first {len(shown)} of {len(raw)} bytes" if len(raw) > len(shown) else "its bytes"
    log.warning("%s: %s; %s: %r", Reports.name, what, cut, shown)
