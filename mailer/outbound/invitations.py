"""The RFC 5545 calendar event that goes with a webinar invitation, update or cancellation.

Calendar clients treat mail as an invitation when it carries an iTIP (RFC 5546) METHOD:
REQUEST puts the event in the reader's calendar and CANCEL takes it out again. Every
message about one webinar names the same UID, so an update or a cancellation finds the event
the reader already has instead of adding a second one; SEQUENCE says which version is
newer, so a client replaces its copy with a later one and ignores an older one arriving late.

Pure: the caller passes the send time, and the bytes depend on nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, Final

from icalendar import Calendar, Event, vCalAddress

PRODID: Final = "-//mailer//webinar invitations//EN"
# the iTIP methods mailer sends, and the STATUS the event has under each
STATUS_BY_METHOD: Final = {"REQUEST": "CONFIRMED", "CANCEL": "CANCELLED"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True, slots=True)
class Attendee:
    """The one reader the event is addressed to. Outlook offers Accept and Decline only when
    this address is the mailbox the invitation arrived in, so each recipient gets their own."""

    email: str
    name: str = ""


def invitation(
    calendar: Mapping[str, Any], attendee: Attendee, stamp: datetime, *, organizer_name: str = ""
) -> bytes:
    """The iCalendar object (CRLF lines, folded at 75 octets) for one recipient.

    `calendar` is a message's ``calendar`` context: uid, sequence, method (REQUEST or
    CANCEL), title, description, starts_at, ends_at, join_url, organizer (an address) and
    organizer_name (or None, and then `organizer_name` here names the organizer).
    `stamp` is the send time, written as DTSTAMP: when this copy of the event was made.

    Raises ValueError for another method or a naive time.
    """
    method = calendar["method"]
    if method not in STATUS_BY_METHOD:
        raise ValueError(f"a calendar method must be REQUEST or CANCEL, not {method!r}")
    document = Calendar()
    document.add("prodid", PRODID)
    document.add("version", "2.0")
    document.add("calscale", "GREGORIAN")
    document.add("method", method)
    document.add_component(_event(calendar, attendee, stamp, organizer_name))
    data: bytes = document.to_ical()  # untyped in icalendar
    return data


def _event(
    calendar: Mapping[str, Any], attendee: Attendee, stamp: datetime, organizer_name: str
) -> Event:
    """The one VEVENT; the join link is its location and URL, and ends its description, since
    clients show one or the other and the reader needs it wherever they look."""
    join_url = _one_line(calendar["join_url"])
    event = Event()
    event.add("uid", _one_line(calendar["uid"]))
    event.add("sequence", int(calendar["sequence"]))
    event.add("dtstamp", _utc(stamp))
    event.add("dtstart", _utc(calendar["starts_at"]))
    event.add("dtend", _utc(calendar["ends_at"]))
    event.add("summary", _one_line(calendar["title"]))
    event.add("description", _description(calendar["description"], join_url))
    event.add("location", join_url)
    if join_url.startswith(("https://", "http://")):  # a meeting's place may be a room
        event.add("url", join_url)
    name = calendar.get("organizer_name") or organizer_name
    event.add("organizer", _organizer(calendar["organizer"], name))
    event.add("attendee", _attendee(attendee))
    event.add("status", STATUS_BY_METHOD[calendar["method"]])
    event.add("transp", "OPAQUE")
    return event


def _utc(when: datetime) -> datetime:
    """Times go out in UTC ("...Z"): every client reads them the same way, with no VTIMEZONE
    to ship, and the reader's calendar shows them in the reader's own zone."""
    if when.utcoffset() is None:
        raise ValueError(f"a calendar time needs a time zone: {when!r}")
    return when.astimezone(UTC)


def _description(description: str, join_url: str) -> str:
    """The description, then the join link on its own line; no label, so no language."""
    text = _CONTROL_BUT_NEWLINE.sub(" ", description.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.strip()
    return f"{text}\n\n{join_url}" if text else join_url


def _organizer(address: str, name: str | None) -> vCalAddress:
    """The organizer, with a CN: a name from the address itself ("Name <addr>") is used when
    nothing else names them. Replies to the invitation go to this address."""
    parsed_name, email = parseaddr(address)
    return _address(email or address, name or parsed_name)


def _attendee(attendee: Attendee) -> vCalAddress:
    """A required participant whose answer is still open and is asked for (RSVP)."""
    cal_address = _address(attendee.email, attendee.name)
    cal_address.params["ROLE"] = "REQ-PARTICIPANT"
    cal_address.params["PARTSTAT"] = "NEEDS-ACTION"
    cal_address.params["RSVP"] = "TRUE"
    return cal_address


def _address(email: str, name: str | None) -> vCalAddress:
    cal_address = vCalAddress(f"mailto:{_one_line(email)}")
    if name and (cn := _one_line(name)):
        cal_address.params["CN"] = cn
    return cal_address


def _one_line(value: str) -> str:
    """Customer data (a name) stays one plain value: control characters become spaces."""
    return _CONTROL.sub(" ", value).strip()
