"""One customer's timeline: typed entries from every source, merged newest first, a page at
a time. Pure: the sources are read elsewhere (``history``), a page of each at most.

Entries are ordered by (time, source, id), newest first; a page ends at a ``Cursor`` (that
key), and the next page is what sorts after it. Each source is read as the entries below
a ``Bound`` the cursor sets for it, so every source reads through its (customer, time)
index and none is scanned, whatever the customer's history holds.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mailer.core.fieldtypes import whole_number


class Source(StrEnum):
    """Where an entry comes from; the order breaks ties between entries of one instant."""

    UNSUBSCRIBE = "unsubscribe"
    INQUIRY = "inquiry"
    MAIL = "mail"
    REPLY = "reply"
    CONTACT = "contact"
    FOLLOWUP = "followup"
    RSVP = "rsvp"
    EVENT = "event"


RANK = {source: rank for rank, source in enumerate(Source)}
LAST_MICROS = 10**16 - 1  # microseconds since 1970, up to the year 2286


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One touch. ``kind``: the mail's status (sent, deferred, skipped, bounced, ...),
    "inquiry", a contact's kind (call, meeting, note), "unsubscribed" or a calendar answer
    (accepted, tentative, declined) or "event" (one the shop sent, named in ``title``);
    ``direction``:
    "out" (from us), "in" (from them) or None; ``by``: who did it, where known."""

    at: datetime
    source: Source
    id: int
    kind: str
    direction: str | None = None
    channel: str | None = None
    by: str | None = None
    title: str = ""
    text: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Cursor:
        return Cursor(self.at, self.source, self.id)


@dataclass(frozen=True, slots=True, order=False)
class Cursor:
    """Where a page ended: the last entry's (time, source, id)."""

    at: datetime
    source: Source
    id: int

    def sorts_before(self, other: Cursor) -> bool:
        """True when this key is newer than ``other``: it comes earlier in the timeline."""
        mine = (self.at, RANK[self.source], self.id)
        return mine > (other.at, RANK[other.source], other.id)

    def encode(self) -> str:
        """As a link carries it: microseconds since the epoch, source and id."""
        micros = round(self.at.timestamp() * 1_000_000)
        return f"{micros}.{self.source.value}.{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """A cursor from a link; None for anything that is not one."""
        parts = text.split(".")
        if len(parts) != 3 or parts[1] not in {s.value for s in Source}:
            return None
        # larger numbers were not made here, and would not fit a date or an id column
        micros, row = whole_number(parts[0], LAST_MICROS), whole_number(parts[2])
        if micros is None or row is None:
            return None
        at = datetime.fromtimestamp(micros // 1_000_000, UTC)
        return cls(at.replace(microsecond=micros % 1_000_000), Source(parts[1]), row)


@dataclass(frozen=True, slots=True)
class Bound:
    """What of one source lies after a cursor: entries before ``at``; those at ``at`` too
    when ``inclusive``, or those at ``at`` with an id below ``below_id``."""

    at: datetime
    inclusive: bool = False
    below_id: int | None = None


def bound(cursor: Cursor | None, source: Source) -> Bound | None:
    """The part of ``source`` that sorts after ``cursor`` (None: all of it)."""
    if cursor is None:
        return None
    if RANK[source] == RANK[cursor.source]:
        return Bound(cursor.at, below_id=cursor.id)
    return Bound(cursor.at, inclusive=RANK[source] < RANK[cursor.source])


def after(entry: Entry, cursor: Cursor | None) -> bool:
    """Whether an entry belongs after the cursor, i.e. on a later page."""
    return cursor is None or cursor.sorts_before(entry.key)


@dataclass(frozen=True, slots=True)
class Page:
    entries: Sequence[Entry]
    older: Cursor | None  # where the next page starts, None when this is the last


def merge(sources: Iterable[Sequence[Entry]], size: int, cursor: Cursor | None = None) -> Page:
    """Newest first, at most ``size`` entries after ``cursor``. Each source must hold its
    entries after the cursor, and more than ``size`` of them if it has more, so that
    whether an older page exists is known without counting."""
    ordered = heapq.merge(*(_newest_first(s) for s in sources), key=_order, reverse=True)
    found = [e for e in ordered if after(e, cursor)]
    shown = found[:size]
    return Page(shown, shown[-1].key if len(found) > size else None)


def _newest_first(entries: Sequence[Entry]) -> list[Entry]:
    return sorted(entries, key=_order, reverse=True)


def _order(entry: Entry) -> tuple[datetime, int, int]:
    return (entry.at, RANK[entry.source], entry.id)
