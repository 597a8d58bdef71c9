"""Customers in the database: batched CSV import, look-ups, edits by staff with the
history of every change, unsubscribing, erasure.

The import is an upsert by email, a thousand rows to a statement, so 100,000 rows take
seconds; running the same file twice changes nothing.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import cache
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine, Select, Table, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement

from mailer.core.errors import AddressTaken, ImportFileError, NotFound
from mailer.core.search import fold
from mailer.customers.csv_rows import (
    CustomerRow,
    RejectedRow,
    normalise_email,
    parse_rows,
    read_rows,
    shown,
)
from mailer.customers.edits import Change, diff, record
from mailer.hooks import events as webhooks
from mailer.hooks.events import EventType
from mailer.store import bulk
from mailer.store.models import Customer, CustomerChange, CustomerTag, ErasedAddress

BATCH = 1000
CUSTOMERS: Table = Customer.__table__  # type: ignore[attr-defined]
TAGS: Table = CustomerTag.__table__  # type: ignore[attr-defined]
ERASED: Table = ErasedAddress.__table__  # type: ignore[attr-defined]
CHANGES: Table = CustomerChange.__table__  # type: ignore[attr-defined]
# who the history names for what customers chose themselves: a link, their preferences page
CUSTOMER_ACTOR = "the customer"
ACTOR_MAX = 100  # customer_changes.actor
_IS_ERASED = select(ERASED.c.address_hash).where(ERASED.c.address_hash == bindparam("hash"))
ERASED_REASON = "erased at the customer's request"
Progress = Callable[[int], None]
SHOWN = [c for c in CUSTOMERS.c if c.name != "search_text"]  # that one is the search's own


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A stored customer as templates, the throttle and the pages see it: the table's
    columns (less the search's own) and the customer's tags, sorted."""

    id: int
    email: str
    name: str
    first_name: str
    locale: str | None
    timezone: str | None
    birth_month: int | None
    birth_day: int | None
    birth_year: int | None
    fields: dict[str, Any]
    marketing_consent: bool
    relationship_consent: bool
    unsubscribed_at: datetime | None
    suppressed_reason: str | None
    pause_until: datetime | None
    caps_override: dict[str, Any] | None
    source: str
    created_at: datetime
    updated_at: datetime
    tags: tuple[str, ...] = ()  # left empty by readers that never show them (the dry run)


_PROFILE_COLUMNS = [f.name for f in fields(Profile) if f.name != "tags"]


def load(row: RowMapping, tags: Iterable[str] = ()) -> Profile:
    """The one way a customers row becomes a Profile; columns it does not name are ignored."""
    return Profile(**{name: row[name] for name in _PROFILE_COLUMNS}, tags=tuple(tags))


@dataclass(kw_only=True)
class ImportReport:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line)


def count_rows(path: Path) -> int:
    """Data lines in the file, for a progress bar; a rough count is enough. Raises
    ImportFileError, naming the file, when it cannot be read at all."""
    with _open(path) as lines:
        return max(sum(1 for _ in lines) - 1, 0)


def import_csv(
    engine: Engine, path: Path, now: datetime, progress: Progress | None = None
) -> ImportReport:
    """Upsert every valid row of the file; report the rest. Each batch commits on its own.

    What it changes in customers already stored goes into their history as "import:FILE".
    A file that cannot be read at all (missing, a directory, not UTF-8 text, no email
    column) raises ImportFileError naming it, before anything is saved.
    """
    report = ImportReport()
    first_line: dict[str, int] = {}
    actor = f"import:{path.name}"[:ACTOR_MAX]
    with _open(path) as stream:
        try:
            for batch in _batches(parse_rows(read_rows(stream)), BATCH):
                good = _split(batch, report, first_line)
                with engine.begin() as conn:
                    _upsert(conn, _not_erased(conn, good, report), now, report, actor)
                if progress:
                    progress(len(batch))
        except ImportFileError as exc:
            raise ImportFileError(f"{shown(str(path))}: {shown(str(exc), 500)}") from None
    return report


def upsert(
    conn: Connection, rows: Sequence[CustomerRow], now: datetime, actor: str, source: str
) -> ImportReport:
    """Upsert valid rows as an import does, in the caller's transaction (the API's: one
    call, one transaction); ``source`` is where the customers it adds came from. An erased
    address is reported in ``rejected``, not stored; a row that names an address an
    earlier one named is merged into it."""
    report = ImportReport()
    good = _split(rows, report, {})
    _upsert(conn, _not_erased(conn, good, report), now, report, actor[:ACTOR_MAX], source)
    return report


def _open(path: Path) -> TextIO:
    """The file, as UTF-8 text whose stray bad bytes are kept for the row to be rejected."""
    where = shown(str(path))
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            what = "a directory" if path.is_dir() else "not a regular file"
            raise ImportFileError(f"{where}: {what}, not a CSV file")
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise ImportFileError(f"{where}: file not found") from None
    except OSError as exc:
        raise ImportFileError(f"{where}: cannot be read ({exc.strerror or exc})") from None


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _split(
    batch: Sequence[CustomerRow | RejectedRow], report: ImportReport, first_line: dict[str, int]
) -> list[CustomerRow]:
    """Valid rows, the last one winning when a file names an address twice."""
    good: dict[str, CustomerRow] = {}
    for row in batch:
        if isinstance(row, RejectedRow):
            report.rejected.append(row)
            continue
        seen = first_line.setdefault(row.email, row.line)
        if seen != row.line:
            report.duplicates.append((row.line, seen))
        earlier = good.get(row.email)
        good[row.email] = _combine(earlier, row) if earlier else row
    return list(good.values())


def _not_erased(
    conn: Connection, rows: list[CustomerRow], report: ImportReport
) -> list[CustomerRow]:
    """A file cannot bring back a customer who asked to be forgotten."""
    hashes = {address_hash(row.email): row for row in rows}
    dialect = conn.dialect.name
    query = select(ERASED.c.address_hash).where(bulk.one_of(ERASED.c.address_hash, hashes, dialect))
    erased = set(conn.execute(query).scalars())
    report.rejected += [
        RejectedRow.of(hashes[h].line, hashes[h].email, ERASED_REASON) for h in erased
    ]
    return [row for h, row in hashes.items() if h not in erased]


def _combine(earlier: CustomerRow, later: CustomerRow) -> CustomerRow:
    """Two rows for one address in a batch, as if they had been imported one after the other."""
    given = {f.name: v for f in fields(later) if (v := getattr(later, f.name)) is not None}
    given["fields"] = {**earlier.fields, **later.fields}
    return replace(earlier, **given)


def _upsert(
    conn: Connection,
    rows: list[CustomerRow],
    now: datetime,
    report: ImportReport,
    actor: str,
    source: str = "import",
) -> None:
    if not rows:
        return
    emails = [r.email for r in rows]
    query = select(CUSTOMERS).where(bulk.one_of(CUSTOMERS.c.email, emails, conn.dialect.name))
    # locked (PostgreSQL; SQLite's one writer needs none) in one order, so that an opt-in
    # confirmed meanwhile is read, not written over with the value read before it
    query = query.order_by(CUSTOMERS.c.id).with_for_update()
    existing: dict[str, Any] = {r.email: r._mapping for r in conn.execute(query)}
    old_tags = _tags_of_retagged(conn, rows, existing)
    retagged = [row for row in rows if _retags(row, existing, old_tags)]
    retagging = {row.email for row in retagged}
    values, new, changes = [], [], []
    for row in rows:
        before = existing.get(row.email)
        if before is None:
            new.append(row)
            continue
        after = _merge(before, row, now, source)
        found = _row_changes(before, after, old_tags.get(before["id"], []), row.tags)
        changes += [(before["id"], change) for change in found]
        if _same(before, after) and row.email not in retagging:
            report.unchanged += 1
            continue
        values.append(after)  # new tags alone change the customer too: counted, and dated
        report.updated += 1
    report.inserted += len(new)
    ids = {email: before["id"] for email, before in existing.items()}
    ids |= _write(conn, values) if values else {}
    added, untagged = _add(conn, new, now, source)
    ids |= added
    _replace_tags(conn, retagged, ids, untagged)
    _log(conn, changes, actor, now)


def _add(
    conn: Connection, rows: list[CustomerRow], now: datetime, source: str
) -> tuple[dict[str, int], Collection[str]]:
    """Customers for addresses that were not stored: their ids (where the database tells
    them at no cost), and the addresses of those sure to have no tags yet.

    On PostgreSQL each is made as COPY takes it, so the server stores one while the next is
    made; an address another writer added meanwhile sends them all the way of an update.
    They are added in address order, as every batch adds them, so two batches adding some
    of the same addresses wait for each other instead of deadlocking."""
    if not rows:
        return {}, ()
    rows = sorted(rows, key=lambda row: row.email)
    if conn.dialect.name == "postgresql":
        made = (_merge(None, row, now, source) for row in rows)
        first = next(made)
        columns = list(first)
        values = ([v[c] for c in columns] for v in chain([first], made))
        ids = bulk.copy_with_ids(conn, CUSTOMERS, columns, values, len(rows))
        if ids is not None:
            added = dict(zip((r.email for r in rows), ids, strict=True))
            return added, added.keys()
    return _write(conn, [_merge(None, row, now, source) for row in rows]), ()


def _retags(row: CustomerRow, existing: Mapping[str, Any], stored: Mapping[int, list[str]]) -> bool:
    """The row gives tags other than the customer's: a shop that sends its whole list again
    rewrites no tags of the customers it already had right."""
    if row.tags is None:
        return False
    before = existing.get(row.email)
    return before is None or set(stored.get(before["id"], [])) != set(row.tags)


def _row_changes(
    before: Any, after: dict[str, Any], stored_tags: list[str], given_tags: tuple[str, ...] | None
) -> list[Change]:
    """What one row changes in a stored customer; the usual answer, nothing, found cheaply."""
    tags = stored_tags if given_tags is None else list(given_tags)
    if tags == stored_tags and _same(before, after):
        return []
    return diff(record(before, stored_tags), record(after, tags))


def _tags_of_retagged(
    conn: Connection, rows: list[CustomerRow], existing: Mapping[str, Any]
) -> dict[int, list[str]]:
    """The tags stored for customers whose row gives tags, so their history can say what
    changed; one query a batch, none on a first import."""
    ids = [existing[r.email]["id"] for r in rows if r.tags is not None and r.email in existing]
    return tags_of(conn, ids) if ids else {}


def _log(conn: Connection, changes: list[tuple[int, Change]], actor: str, now: datetime) -> None:
    """The history's rows, all in one statement."""
    if changes:
        rows = [
            {"customer_id": customer_id, "at": now, "actor": actor, **asdict(change)}
            for customer_id, change in changes
        ]
        conn.execute(insert(CHANGES), rows)


def _merge(old: Any, row: CustomerRow, now: datetime, source: str) -> dict[str, Any]:
    """The stored values after this row: what the row leaves empty keeps its old value."""
    base: dict[str, Any] = dict(old) if old else {**_new_customer(now), "source": source}
    given: dict[str, Any] = {
        "email": row.email,
        "name": row.name,
        "first_name": row.first_name,
        "locale": row.locale,
        "timezone": row.timezone,
        "marketing_consent": row.marketing_consent,
        "relationship_consent": row.relationship_consent,
    }
    if row.birthday:
        b = row.birthday
        given.update(birth_month=b.month, birth_day=b.day, birth_year=b.year)
    base.update({k: v for k, v in given.items() if v is not None})
    base["fields"] = {**(base.get("fields") or {}), **row.fields}
    if not base["first_name"] and base["name"]:
        base["first_name"] = base["name"].split()[0]
    base["search_text"] = search_text(base)
    base["updated_at"] = now
    for column in ("id", *_CONSENT_RECORD):  # every row of a batch names the same columns
        base.pop(column, None)
    return base


def search_text(customer: Mapping[str, Any]) -> str:
    """What customer search looks in: address, name and first name, folded (see
    mailer.core.search), one to a line so that no search runs from one into the next."""
    return "\n".join(fold(customer[k] or "") for k in ("email", "name", "first_name"))


def add_lead(
    conn: Connection, email: str, name: str, now: datetime, locale: str | None = None
) -> int:
    """A new customer who wrote to support, in ``locale`` if it could be told: no consent to
    newsletters is implied."""
    values = _lead(email, name, now, "inquiry", erased=is_erased(conn, email))
    values["locale"] = locale
    lead = conn.execute(insert(CUSTOMERS).values(values)).inserted_primary_key
    assert lead is not None
    return int(lead[0])


def find_or_add(
    conn: Connection, email: str, name: str, locale: str | None, now: datetime, source: str
) -> int:
    """The customer with this (normalised) address; one not known yet is added as a lead in
    ``locale``, with no consent implied. A known customer is left as they are: what a
    public form says about them is not believed over what they have."""
    found = conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.email == email)).scalar()
    if found is not None:
        return int(found)
    values = _lead(email, name, now, source, erased=is_erased(conn, email)) | {"locale": locale}
    lead = conn.execute(insert(CUSTOMERS).values(values)).inserted_primary_key
    assert lead is not None
    return int(lead[0])


def confirm_marketing(
    conn: Connection, customer_id: int, *, now: datetime, source: str, ip: str | None
) -> bool:
    """The customer confirmed they want marketing mail (a double opt-in's link): consent is
    recorded with when, where and from which address, and an earlier unsubscribe ends,
    since asking again is the customer's own choice. False for an unknown customer."""
    chosen = {
        "marketing_consent": True,
        "unsubscribed_at": None,
        "consent_at": now,
        "consent_source": source[:50],
        "consent_ip": ip[:45] if ip else None,
    }
    current = (
        conn.execute(select(*(CUSTOMERS.c[k] for k in chosen)).where(CUSTOMERS.c.id == customer_id))
        .mappings()
        .first()
    )
    if current is None:
        return False
    conn.execute(
        update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id).values(**chosen, updated_at=now)
    )
    changes = [Change(k, _json(current[k]), _json(v)) for k, v in chosen.items() if current[k] != v]
    _log(conn, [(customer_id, c) for c in changes], CUSTOMER_ACTOR, now)
    return True


def _json(value: Any) -> Any:
    return _iso(value) if isinstance(value, datetime) else value


def ensure(
    conn: Connection, emails: Collection[str], now: datetime, source: str
) -> tuple[dict[str, int], int]:
    """The ids of the customers with these (normalised) addresses, each one not known yet
    added as a lead, with no consent implied; and how many were added. A few statements
    for any number of addresses (PostgreSQL takes the leads by COPY)."""
    dialect = conn.dialect.name
    query = select(CUSTOMERS.c.email, CUSTOMERS.c.id)
    ids: dict[str, int] = dict(
        conn.execute(query.where(bulk.one_of(CUSTOMERS.c.email, emails, dialect))).all()
    )
    missing = [e for e in emails if e not in ids]
    if missing:
        hashes = [address_hash(e) for e in missing]
        erased = select(ERASED.c.address_hash).where(
            bulk.one_of(ERASED.c.address_hash, hashes, dialect)
        )
        gone = set(conn.execute(erased).scalars())
        leads = [
            _lead(e, "", now, source, erased=h in gone)
            for e, h in zip(missing, hashes, strict=True)
        ]
        if dialect == "postgresql":
            rows = [tuple(lead.values()) for lead in leads]
            bulk.copy_insert(conn, CUSTOMERS, list(leads[0]), rows)
        else:
            columns = {name: [lead[name] for lead in leads] for name in leads[0]}
            bulk.insert_columns(conn, CUSTOMERS, columns, skip_conflicts=True)
        ids |= dict(
            conn.execute(query.where(bulk.one_of(CUSTOMERS.c.email, missing, dialect))).all()
        )
    return ids, len(missing)


def _lead(email: str, name: str, now: datetime, source: str, *, erased: bool) -> dict[str, Any]:
    values = {
        **_new_customer(now),
        "email": email,
        "name": name,
        "first_name": name.split()[0] if name else "",
        "marketing_consent": False,
        "relationship_consent": False,
        "source": source,
        "updated_at": now,
    }
    if erased:
        values["suppressed_reason"] = ERASED_REASON
    values["search_text"] = search_text(values)
    return values


def _same(before: Any, after: dict[str, Any]) -> bool:
    return all(before[k] == v for k, v in after.items() if k != "updated_at")


def _new_customer(now: datetime) -> dict[str, Any]:
    return {
        "name": "",
        "first_name": "",
        "locale": None,
        "timezone": None,
        "birth_month": None,
        "birth_day": None,
        "birth_year": None,
        "fields": {},
        "marketing_consent": True,
        "relationship_consent": True,
        "unsubscribed_at": None,
        "suppressed_reason": None,
        "pause_until": None,
        "caps_override": None,
        "source": "import",
        "created_at": now,
    }


# what an upsert never changes in a stored customer; the consent record is the customer's own
_CONSENT_RECORD = ("consent_at", "consent_source", "consent_ip")
_KEPT = {"id", "email", "created_at", *_CONSENT_RECORD}


def _write(conn: Connection, values: list[dict[str, Any]]) -> dict[str, int]:
    """Insert or update customers by address (every row with the same columns); the id of
    each address written where the database tells it at no cost (PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        stmt = sqlite.insert(CUSTOMERS)
        changes = {c.name: stmt.excluded[c.name] for c in CUSTOMERS.columns if c.name not in _KEPT}
        conn.execute(stmt.on_conflict_do_update(index_elements=["email"], set_=changes), values)
        return {}
    # COPY and one INSERT ... SELECT: an executemany sent a statement per customer
    columns = list(values[0])
    written = bulk.copy_upsert(
        conn,
        CUSTOMERS,
        columns,
        ([row[c] for c in columns] for row in values),
        key="email",
        update=[c for c in columns if c not in _KEPT],
        returning=("email", "id"),
    )
    return dict(written)


def _replace_tags(
    conn: Connection, rows: list[CustomerRow], known: Mapping[str, int], untagged: Collection[str]
) -> None:
    """The rows' tags in place of their customers' stored ones; ``known`` maps addresses
    to ids where they are known already, and ``untagged`` are addresses of customers just
    made, who have no tags to remove."""
    if not rows:
        return
    dialect = conn.dialect.name
    ids = {r.email: known[r.email] for r in rows if r.email in known}
    if missing := [r.email for r in rows if r.email not in ids]:
        query = select(CUSTOMERS.c.email, CUSTOMERS.c.id)
        ids |= dict(
            conn.execute(query.where(bulk.one_of(CUSTOMERS.c.email, missing, dialect))).all()
        )
    if tagged := [i for email, i in ids.items() if email not in untagged]:
        conn.execute(delete(TAGS).where(bulk.one_of(TAGS.c.customer_id, tagged, dialect)))
    pairs = [(ids[r.email], t) for r in rows for t in r.tags or ()]
    if not pairs:
        return
    if dialect == "postgresql":
        bulk.copy_rows(conn, TAGS, ["customer_id", "tag"], pairs)
    else:
        conn.execute(insert(TAGS), [{"customer_id": i, "tag": t} for i, t in pairs])


def get(conn: Connection, email: str) -> Profile:
    """One customer with tags, by address (any case); NotFound if there is none."""
    try:
        key = normalise_email(email)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    return _one(conn, CUSTOMERS.c.email == key, f"no customer {key}")


def get_id(conn: Connection, customer_id: int) -> Profile:
    """One customer with tags, by id, as pages and links name them; NotFound if there is none."""
    return _one(conn, CUSTOMERS.c.id == customer_id, f"no customer {customer_id}")


def languages(conn: Connection, customer_ids: Collection[int | None]) -> dict[int, str]:
    """The language of each of these customers whose profile names one, so that pages can
    mark what they wrote with it (screen readers then read it in that language)."""
    wanted = {i for i in customer_ids if i is not None}
    if not wanted:
        return {}
    query = select(CUSTOMERS.c.id, CUSTOMERS.c.locale).where(
        CUSTOMERS.c.id.in_(wanted), CUSTOMERS.c.locale.is_not(None)
    )
    return {int(row.id): str(row.locale) for row in conn.execute(query)}


def _one(conn: Connection, where: Any, missing: str) -> Profile:
    row = conn.execute(select(*SHOWN).where(where)).mappings().one_or_none()
    if row is None:
        raise NotFound(missing)
    return load(row, tags_of(conn, [row["id"]]).get(row["id"], []))


def find(
    conn: Connection,
    *,
    tag: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Profile]:
    """Customers by email, optionally only those with a tag or containing a text in their
    address or name, in any case and script (control characters in it are ignored)."""
    query = select(*SHOWN).order_by(CUSTOMERS.c.email).limit(limit).offset(offset)
    return [p for p, _ in selected(conn, query.where(*matching(tag=tag, search=search)))]


def matching(*, tag: str | None = None, search: str | None = None) -> list[ColumnElement[bool]]:
    """The conditions on customers that ``find`` and other customer lists filter by."""
    conditions: list[ColumnElement[bool]] = []
    if tag:
        tagged = select(TAGS.c.customer_id).where(TAGS.c.tag == tag.lower())
        conditions.append(CUSTOMERS.c.id.in_(tagged))
    folded = fold(search) if search else ""
    if folded:  # "%" and "_" are letters here, not wildcards
        conditions.append(CUSTOMERS.c.search_text.contains(folded, autoescape=True))
    return conditions


def selected(conn: Connection, query: Select[Any]) -> list[tuple[Profile, RowMapping]]:
    """The customers a query selects, each as a Profile beside its row, for lists that
    select more than a profile holds."""
    rows = conn.execute(query).mappings().all()
    tags = tags_of(conn, [r["id"] for r in rows])
    return [(load(row, tags.get(row["id"], [])), row) for row in rows]


def tags_of(conn: Connection, ids: list[int]) -> dict[int, list[str]]:
    """The tags of many customers in one query, each list sorted; untagged ones are absent."""
    found: dict[int, list[str]] = {}
    for customer_id, tag in conn.execute(_tags_statement(conn.dialect.name), {"ids": ids}):
        found.setdefault(customer_id, []).append(tag)
    return found


@cache
def _tags_statement(dialect: str) -> Select[Any]:
    """Built once: every claim asks for the tags of its batch's customers."""
    owned = bulk.any_of(TAGS.c.customer_id, "ids", dialect)
    return select(TAGS.c.customer_id, TAGS.c.tag).where(owned).order_by(TAGS.c.tag)


def unsubscribe(
    conn: Connection, email: str, now: datetime, actor: str = CUSTOMER_ACTOR
) -> Profile:
    """Stop all marketing and relationship mail to a customer, at once; idempotent."""
    customer = get(conn, email)
    if unsubscribe_id(conn, customer.id, now, actor):
        return replace(customer, unsubscribed_at=now, updated_at=now)
    return customer


def unsubscribe_id(
    conn: Connection, customer_id: int, now: datetime, actor: str = CUSTOMER_ACTOR
) -> bool:
    """By id, as a signed token names it; False when already unsubscribed (or unknown).
    The history keeps it, so an unsubscribe undone later still shows it happened."""
    result = conn.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id, CUSTOMERS.c.unsubscribed_at.is_(None))
        .values(unsubscribed_at=now, updated_at=now)
    )
    if result.rowcount:
        _log(conn, [(customer_id, Change("unsubscribed_at", None, _iso(now)))], actor, now)
        webhooks.record(
            conn, EventType.CUSTOMER_UNSUBSCRIBED, _unsubscribed(conn, customer_id), now
        )
    return bool(result.rowcount)


def _unsubscribed(conn: Connection, customer_id: int) -> Iterator[dict[str, Any]]:
    """What a ``customer.unsubscribed`` webhook says, read only when some endpoint wants it."""
    row = conn.execute(
        select(CUSTOMERS.c.email, CUSTOMERS.c.unsubscribed_at).where(CUSTOMERS.c.id == customer_id)
    ).one()
    yield {"customer_id": customer_id, "email": row.email, "unsubscribed_at": row.unsubscribed_at}


def resubscribe_id(conn: Connection, customer_id: int, now: datetime) -> bool:
    """Undo an unsubscribe the customer made themselves: their consents were never touched,
    so they get what they chose before. False when not unsubscribed (or unknown)."""
    before = conn.execute(
        select(CUSTOMERS.c.unsubscribed_at).where(CUSTOMERS.c.id == customer_id)
    ).scalar()
    result = conn.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id, CUSTOMERS.c.unsubscribed_at.is_not(None))
        .values(unsubscribed_at=None, updated_at=now)
    )
    if result.rowcount and before is not None:
        undone = Change("unsubscribed_at", _iso(before), None)
        _log(conn, [(customer_id, undone)], CUSTOMER_ACTOR, now)
    return bool(result.rowcount)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def suppress(
    conn: Connection, emails: Collection[str], reason: str, now: datetime, actor: str = "bounces"
) -> int:
    """Stop all mail, transactional too, to addresses that cannot receive it (a hard bounce);
    the first reason is kept, so a later report does not hide when it began. The history
    keeps when and why, for the customer's timeline and the deliverability figures.

    A report may name an address as SMTP carried it, an international domain in its ASCII
    form (xn--...) and in any case: each is looked up under the key customers are kept by."""
    keys = {_key_or_itself(email) for email in emails}
    suppressed = (
        conn.execute(
            update(CUSTOMERS)
            .where(CUSTOMERS.c.email.in_(sorted(keys)), CUSTOMERS.c.suppressed_reason.is_(None))
            .values(suppressed_reason=reason, updated_at=now)
            .returning(CUSTOMERS.c.id)
        )
        .scalars()
        .all()
    )
    _log(conn, [(id_, Change("suppressed_reason", None, reason)) for id_ in suppressed], actor, now)
    return len(suppressed)


def _key_or_itself(email: str) -> str:
    """The customer key for an address; an address no customer could have is looked up as
    it is (and finds nobody)."""
    try:
        return normalise_email(email)
    except ValueError:
        return email


def set_preferences(
    conn: Connection,
    customer_id: int,
    *,
    marketing_consent: bool,
    relationship_consent: bool,
    pause_until: datetime | None,
    now: datetime,
) -> None:
    """What the customer chose on their preferences page: consent per category and a pause,
    kept in the history as the customer's own change."""
    chosen = {
        "marketing_consent": marketing_consent,
        "relationship_consent": relationship_consent,
        "pause_until": pause_until,
    }
    current = (
        conn.execute(select(*(CUSTOMERS.c[k] for k in chosen)).where(CUSTOMERS.c.id == customer_id))
        .mappings()
        .first()
    )
    if current is None:
        return
    changes = diff(record(dict(current), ()), record(chosen, ()))
    if not changes:
        return
    conn.execute(
        update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id).values(**chosen, updated_at=now)
    )
    _log(conn, [(customer_id, c) for c in changes], CUSTOMER_ACTOR, now)


def edit(
    conn: Connection, customer_id: int, values: Mapping[str, Any], actor: str, now: datetime
) -> list[Change]:
    """Set a customer's editable columns and tags (as ``edits.read_form`` gives them) and
    record each change with who made it; nothing is written when nothing changed.

    Raises NotFound for an unknown customer, AddressTaken when the new address is another
    customer's or was erased.
    """
    customer = get_id(conn, customer_id)
    columns = {k: v for k, v in values.items() if k != "tags"}
    if columns["email"] != customer.email:
        _check_address(conn, columns["email"])
    current = {name: getattr(customer, name) for name in _PROFILE_COLUMNS}
    changes = diff(record(current, customer.tags), record(columns, values["tags"]))
    if not changes:
        return []
    columns["search_text"] = search_text(columns)
    conn.execute(
        update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id).values(**columns, updated_at=now)
    )
    if tuple(values["tags"]) != customer.tags:
        conn.execute(delete(TAGS).where(TAGS.c.customer_id == customer_id))
        if values["tags"]:
            conn.execute(
                insert(TAGS), [{"customer_id": customer_id, "tag": t} for t in values["tags"]]
            )
    _log(conn, [(customer_id, c) for c in changes], actor, now)
    return changes


def _check_address(conn: Connection, email: str) -> None:
    query = select(CUSTOMERS.c.id, CUSTOMERS.c.name).where(CUSTOMERS.c.email == email)
    other = conn.execute(query).first()
    if other is not None:
        who = f" ({other.name})" if other.name else ""
        raise AddressTaken(f"{email} is already the address of customer #{other.id}{who}")
    if is_erased(conn, email):
        raise AddressTaken(f"{email} belonged to a customer who asked to be forgotten")


@dataclass(frozen=True, slots=True, kw_only=True)
class Logged:
    """One entry of a customer's history."""

    at: datetime
    actor: str
    field: str
    before: Any
    after: Any


def history(conn: Connection, customer_id: int, limit: int = 200) -> list[Logged]:
    """The customer's recorded changes, newest first; one edit's in the order of its form."""
    query = (
        select(CHANGES.c.at, CHANGES.c.actor, CHANGES.c.field, CHANGES.c.before, CHANGES.c.after)
        .where(CHANGES.c.customer_id == customer_id)
        .order_by(CHANGES.c.at.desc(), CHANGES.c.id)
        .limit(limit)
    )
    return [Logged(**row) for row in conn.execute(query).mappings()]


def address_hash(email: str) -> str:
    """What is kept of an erased address: SHA-256 of its normalised form, enough to refuse
    it again and not enough to read it back."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def is_erased(conn: Connection, email: str) -> bool:
    return conn.execute(_IS_ERASED, {"hash": address_hash(email)}).first() is not None


def erase(conn: Connection, customer: Profile, now: datetime) -> None:
    """Forget who the customer is while keeping the row that throttling, dedupe and counts
    need: the address becomes a hash on the erased list, every personal field and the values
    in its history are cleared, and all mail to the row stays barred for good."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    hashed = {"address_hash": address_hash(customer.email), "erased_at": now}
    conn.execute(dialect.insert(ERASED).values(hashed).on_conflict_do_nothing())
    conn.execute(delete(TAGS).where(TAGS.c.customer_id == customer.id))
    forget = update(CHANGES).where(CHANGES.c.customer_id == customer.id)
    conn.execute(forget.values(before=None, after=None))  # who changed what, and when, stay
    conn.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer.id)
        .values(
            email=f"erased-{customer.id}@erased.invalid",
            name="",
            first_name="",
            birth_month=None,
            birth_day=None,
            birth_year=None,
            fields={},
            search_text="",
            marketing_consent=False,
            relationship_consent=False,
            consent_ip=None,  # the address they confirmed from says where they were
            unsubscribed_at=customer.unsubscribed_at or now,
            suppressed_reason=ERASED_REASON,
            updated_at=now,
        )
    )
