"""A calendar client's answer to an invitation: the iTIP (RFC 5546) METHOD:REPLY it mails
to the organizer when someone clicks Accept, Maybe or Decline.

Google Calendar puts it in a text/calendar part of a multipart/alternative and attaches it
again as invite.ics; Outlook and Exchange send a multipart/alternative whose
text/calendar part is base64; Apple Calendar attaches a text/calendar file. Any
text/calendar part or .ics attachment whose METHOD is REPLY is read; the first one with a
usable ATTENDEE wins. Pure: never raises for bad mail, just finds no reply.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, MIMEPart
from typing import Any, Final

from icalendar import Calendar

from mailer.core.text import one_line

# The answers an attendee can give (RFC 5545 §3.2.12), in the words the pages use.
ANSWERS: Final = {"ACCEPTED": "accepted", "TENTATIVE": "tentative", "DECLINED": "declined"}
MAX_CALENDAR = 1024 * 1024  # a reply is a few kilobytes; anything bigger is not one
CALENDAR_TYPES: Final = frozenset({"text/calendar", "application/ics"})
# Outlook echoes its reply's subject as the SUMMARY: "Accepted: <title>"
_OUTLOOK_PREFIX = re.compile(r"^(?:Accepted|Tentative|Declined):\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarReply:
    """Who answered which event how, and how recent the answer is: a reply to a later
    SEQUENCE of the event, or with a later DTSTAMP, is the newer answer."""

    uid: str
    attendee: str  # lower-case address
    answer: str  # accepted, tentative or declined
    sequence: int
    stamp: datetime | None  # DTSTAMP in UTC; None when the client left it out
    title: str  # the event's SUMMARY as the client echoed it, maybe ""

    def newer_than(self, sequence: int, stamp: datetime | None) -> bool:
        """Whether this answer supersedes one recorded with ``sequence`` and ``stamp``."""
        earliest = datetime.min.replace(tzinfo=UTC)
        return (self.sequence, self.stamp or earliest) > (sequence, stamp or earliest)


def calendar_reply(msg: EmailMessage, sender: str) -> CalendarReply | None:
    """The REPLY a message carries, or None. When a reply names several attendees (a
    delegate answering), the one who sent the mail is taken, else the first."""
    for part in _calendar_parts(msg):
        reply = _reply(part, sender)
        if reply is not None:
            return reply
    return None


def _calendar_parts(msg: EmailMessage) -> Iterator[MIMEPart]:
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = str(part.get_param("name") or part.get_filename() or "")
        if part.get_content_type() in CALENDAR_TYPES or filename.lower().endswith(".ics"):
            yield part


def _reply(part: MIMEPart, sender: str) -> CalendarReply | None:
    try:
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or len(payload) > MAX_CALENDAR:
            return None
        calendar = Calendar.from_ical(payload)
        if str(calendar.get("METHOD", "")).upper() != "REPLY":
            return None
        event = next(iter(calendar.walk("VEVENT")), None)
        return None if event is None else _from_event(event, sender)
    except Exception:  # icalendar raises many kinds on broken data; it is just not a reply
        return None


def _from_event(event: Any, sender: str) -> CalendarReply | None:
    uid = one_line(str(event.get("UID", "")))
    attendees = event.get("ATTENDEE", [])
    if not uid or not attendees:
        return None
    listed = attendees if isinstance(attendees, list) else [attendees]
    answered = [(_address(a), a.params.get("PARTSTAT", "").upper()) for a in listed]
    answered = [(address, partstat) for address, partstat in answered if partstat in ANSWERS]
    if not answered:
        return None
    address, partstat = next((a for a in answered if a[0] == sender), answered[0])
    return CalendarReply(
        uid=uid,
        attendee=address,
        answer=ANSWERS[partstat],
        sequence=int(event.get("SEQUENCE", 0)),
        stamp=_utc(event.decoded("DTSTAMP")) if "DTSTAMP" in event else None,
        title=_OUTLOOK_PREFIX.sub("", one_line(str(event.get("SUMMARY", ""))))[:300],
    )


def _address(attendee: Any) -> str:
    """The address of "mailto:Maria@Example.com" (any case of the scheme), lower-case."""
    value = str(attendee).strip()
    return (value[7:] if value.lower().startswith("mailto:") else value).strip().lower()


def _utc(value: Any) -> datetime | None:
    """A floating DTSTAMP (no zone, against RFC 5545) is taken as UTC."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
