"""The contact log and each customer's last contact both ways.

Calls, meetings and notes are what staff log; mail and inquiries are the outbox's and the
inbox's, who tell this module when one was sent or came in (``reached``, ``heard_from``), so
``last_contacts`` always holds, per customer, the latest touch in each direction and its
channel. The throttle never reads any of this: a person's call uses up no marketing slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Table, case, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from mailer.core.errors import InvalidContact
from mailer.core.text import one_line, plain_lines
from mailer.customers import profiles
from mailer.store.models import ContactEntry, ContactKind, Direction, LastContact

CONTACTS: Table = ContactEntry.__table__  # type: ignore[attr-defined]
LAST: Table = LastContact.__table__  # type: ignore[attr-defined]
EMAIL = "email"  # the channel of mail, both ways
NOTE_MAX = 10_000
ATTENDEES_MAX = 50
LONGEST_CALL = timedelta(days=7)  # the desk and the CLI alike
KINDS = tuple(k.value for k in ContactKind)
DIRECTIONS = tuple(d.value for d in Direction)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewContact:
    """A call, meeting or note as staff describe it; checks itself when built, so a bad one
    is refused with one clear sentence before anything is written."""

    kind: str
    direction: str | None
    at: datetime
    by: str
    note: str = ""
    duration: timedelta | None = None
    outcome: str = ""
    location: str = ""
    attendees: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise InvalidContact(problem)


def _problem(entry: NewContact) -> str | None:
    if entry.kind not in KINDS:
        return f"kind {entry.kind!r} is not one of {', '.join(KINDS)}"
    if entry.kind == ContactKind.NOTE:
        if entry.direction is not None:
            return "a note has no direction: leave it out"
    elif entry.direction not in DIRECTIONS:
        ways = "in (they reached us) or out (we reached them)"
        if entry.direction:
            return f"a {entry.kind}'s direction is {ways}, not {entry.direction!r}"
        return f"a {entry.kind} needs a direction: {ways}"
    if entry.at.tzinfo is None:
        return "the time needs a zone or an offset"
    if entry.duration is not None and (
        entry.kind != ContactKind.CALL or entry.duration < timedelta()
    ):
        return "only a call has a duration, and it cannot be negative"
    if entry.duration is not None and entry.duration > LONGEST_CALL:
        return "a call lasts at most a week: a longer one is a typo"
    if not entry.by.strip() or len(entry.by) > 100:
        return "who logged it needs a name of at most 100 characters"
    return _text_problem(entry)


def _text_problem(entry: NewContact) -> str | None:
    if entry.kind == ContactKind.NOTE and not entry.note.strip():
        return "a note needs some text"
    limits = (("note", entry.note, NOTE_MAX), ("outcome", entry.outcome, 200))
    for name, text, most in (*limits, ("place or link", entry.location, 500)):
        if len(text) > most:
            return f"the {name} is longer than {most} characters"
    if len(entry.attendees) > ATTENDEES_MAX or any(len(a) > 200 for a in entry.attendees):
        return f"at most {ATTENDEES_MAX} attendees, each at most 200 characters"
    return None


def log(conn: Connection, customer_id: int, entry: NewContact, now: datetime) -> int:
    """Write one touch; one with a direction is that direction's last contact if it is the
    latest. Returns its id."""
    if entry.at > now:
        raise InvalidContact("it has not happened yet: log a contact at or before now")
    values = {
        "customer_id": customer_id,
        "kind": entry.kind,
        "direction": entry.direction,
        "at": entry.at,
        "duration_seconds": int(entry.duration.total_seconds()) if entry.duration else None,
        "outcome": one_line(entry.outcome),
        "location": one_line(entry.location),
        "attendees": [name for a in entry.attendees if (name := one_line(a))],
        "note": plain_lines(entry.note),
        "logged_by": one_line(entry.by),
        "created_at": now,
    }
    new_id = conn.execute(insert(CONTACTS).values(**values)).inserted_primary_key
    assert new_id is not None
    if entry.direction is not None:
        touch(conn, Direction(entry.direction), entry.kind, [(customer_id, entry.at)])
    return int(new_id[0])


def of_customer(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    """Every contact logged about the customer, oldest first, for a data-access request."""
    query = select(CONTACTS).where(CONTACTS.c.customer_id == customer_id)
    return [dict(r) for r in conn.execute(query.order_by(CONTACTS.c.at, CONTACTS.c.id)).mappings()]


def erase_customer(conn: Connection, customer_id: int) -> int:
    """Clear what staff wrote about the customer and who was there, keeping each contact's
    kind, direction and time for the counts and the last contact."""
    cleared = {"note": "", "outcome": "", "location": "", "attendees": []}
    result = conn.execute(
        update(CONTACTS).where(CONTACTS.c.customer_id == customer_id).values(**cleared)
    )
    return int(result.rowcount)


def reached(
    conn: Connection,
    touches: Select[tuple[int, datetime]],
    params: Mapping[str, Any],
    channel: str = EMAIL,
) -> None:
    """We reached the customers ``touches`` selects (id, when) with ``params``, e.g. those
    the server accepted mail for: one statement, so a batch's rows never pass through Python
    (per row, binding them cost a third of recording a delivered batch). It must select one
    row per customer, in id order, as ``touch`` writes them. Pass the same ``touches`` each
    time (built once, its values in ``params``): the statement made of it is kept."""
    conn.execute(_reached_statement(conn.dialect.name, touches, channel), params)


@lru_cache(maxsize=8)
def _reached_statement(
    dialect: str, touches: Select[tuple[int, datetime]], channel: str
) -> postgresql.Insert | sqlite.Insert:
    """Built once: making it took 0.6 ms of every delivered batch's write transaction."""
    names = ["customer_id", "out_at", "out_channel", "last_at"]
    at = touches.selected_columns[1]
    chosen = touches.with_only_columns(touches.selected_columns[0], at, literal(channel), at)
    return _upsert(dialect, Direction.OUT).from_select(names, chosen)


def heard_from(conn: Connection, customer_id: int, at: datetime, channel: str = EMAIL) -> None:
    """The customer reached us, e.g. wrote to support."""
    touch(conn, Direction.IN, channel, [(customer_id, at)])


def touch(
    conn: Connection, direction: Direction, channel: str, touches: Iterable[tuple[int, datetime]]
) -> None:
    """Upsert each customer's last contact in that direction, keeping the later one, so a
    late-recorded touch never hides a newer one. One row per customer, in id order, so two
    writers lock their rows in one order and never wait on each other in a circle."""
    latest: dict[int, datetime] = {}
    for customer_id, at in touches:
        latest[customer_id] = max(at, latest.get(customer_id, at))
    if not latest:
        return
    at_col, channel_col = f"{direction.value}_at", f"{direction.value}_channel"
    rows = [
        {"customer_id": c, at_col: at, channel_col: channel, "last_at": at}
        for c, at in sorted(latest.items())
    ]
    conn.execute(_upsert(conn.dialect.name, direction), rows)


def _upsert(dialect: str, direction: Direction) -> postgresql.Insert | sqlite.Insert:
    """The insert of a last contact that, for a customer who has one, keeps the later."""
    at_col, channel_col = f"{direction.value}_at", f"{direction.value}_channel"
    stmt = postgresql.insert(LAST) if dialect == "postgresql" else sqlite.insert(LAST)
    old, new = LAST.c[at_col], stmt.excluded[at_col]
    newer = old.is_(None) | (new > old)
    return stmt.on_conflict_do_update(
        index_elements=["customer_id"],
        set_={
            at_col: case((newer, new), else_=old),
            channel_col: case((newer, stmt.excluded[channel_col]), else_=LAST.c[channel_col]),
            "last_at": _later(LAST.c.last_at, new),
        },
    )


def _later(a: ColumnElement[Any], b: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((a.is_(None) | (b > a), b), else_=a)


def last_of(conn: Connection, customer_id: int) -> dict[str, dict[str, Any] | None]:
    """``{"out": {"at", "channel"} | None, "in": ...}``: we reached them, they reached us."""
    row = conn.execute(select(LAST).where(LAST.c.customer_id == customer_id)).mappings().first()
    return both_ways(row or {})


def both_ways(row: Any) -> dict[str, dict[str, Any] | None]:
    """A last_contacts row (or {}) as the out/in pair shown everywhere."""
    return {
        d: {"at": row[f"{d}_at"], "channel": row[f"{d}_channel"]} if row.get(f"{d}_at") else None
        for d in DIRECTIONS
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    """A customer in a list, beside their last contact both ways (see ``both_ways``)."""

    customer: profiles.Profile
    last_contact: dict[str, dict[str, Any] | None]


def browse(
    conn: Connection,
    *,
    search: str | None = None,
    tag: str | None = None,
    order: str = "",
    quiet_since: datetime | None = None,
    only: Select[Any] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Listed]:
    """Customers with their last contact both ways. ``order``: "recent"
    (latest contact first, never contacted last), "quiet" (never contacted first, then the
    longest without one), else by email; ``quiet_since`` keeps only those with no contact
    either way since then; ``search``, ``tag`` and ``only`` (a query of customer ids) keep
    only those they name."""
    where = Filter(search=search, tag=tag, only=only)
    if order not in ORDERS:
        query = _with_last(LAST.c.customer_id == profiles.CUSTOMERS.c.id, where)
        if quiet_since is not None:
            query = query.where(LAST.c.last_at.is_(None) | (LAST.c.last_at < quiet_since))
        return _shown(conn, query.order_by(profiles.CUSTOMERS.c.email).limit(limit).offset(offset))
    contacted, never = _contacted(where, order, quiet_since), _never(where)
    rows: list[Listed] = []
    for phase in (contacted, never) if order == "recent" else (never, contacted):
        found = _shown(conn, phase.limit(limit - len(rows)).offset(offset))
        rows += found
        if len(rows) >= limit:
            break
        offset = 0 if found else offset - _count(conn, phase)
    return rows


ORDERS = ("recent", "quiet")
_SUMMARY = ("out_at", "out_channel", "in_at", "in_channel", "last_at")


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    search: str | None
    tag: str | None
    only: Select[Any] | None


def _with_last(on: ColumnElement[bool], where: Filter, *, inner: bool = False) -> Any:
    """Customers beside their last contacts, filtered as ``profiles.find`` filters."""
    joined = profiles.CUSTOMERS.join(LAST, on, isouter=not inner)
    query = select(*profiles.SHOWN, *(LAST.c[k] for k in _SUMMARY)).select_from(joined)
    query = query.where(*profiles.matching(search=where.search, tag=where.tag))
    return query if where.only is None else query.where(profiles.CUSTOMERS.c.id.in_(where.only))


def _contacted(where: Filter, order: str, quiet_since: datetime | None) -> Any:
    """Those with a last contact, in its order: read along ix_last_contacts_last_at."""
    query = _with_last(LAST.c.customer_id == profiles.CUSTOMERS.c.id, where, inner=True)
    query = query.where(LAST.c.last_at.is_not(None))
    if quiet_since is not None:
        query = query.where(LAST.c.last_at < quiet_since)
    keys = (LAST.c.last_at, LAST.c.customer_id)
    return query.order_by(*(k.desc() if order == "recent" else k for k in keys))


def _never(where: Filter) -> Any:
    """Those never contacted either way, oldest customer first."""
    query = _with_last(LAST.c.customer_id == profiles.CUSTOMERS.c.id, where)
    return query.where(LAST.c.customer_id.is_(None)).order_by(profiles.CUSTOMERS.c.id)


def _count(conn: Connection, query: Any) -> int:
    """Rows a phase holds, needed only once a page reaches past its end."""
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    return int(conn.execute(counted).scalar_one())


def _shown(conn: Connection, query: Any) -> list[Listed]:
    return [
        Listed(customer=p, last_contact=both_ways(row)) for p, row in profiles.selected(conn, query)
    ]
