"""Customers in the database: batched CSV import, look-ups, unsubscribing, and when each
was last and may next be contacted.

The import is an upsert by email, a thousand rows to a statement, so 100,000 rows take
seconds; running the same file twice changes nothing.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Engine, Select, Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from mailer.core.errors import ImportFileError, NotFound
from mailer.core.search import fold
from mailer.customers.csv_rows import (
    CustomerRow,
    RejectedRow,
    normalise_email,
    parse_rows,
    read_rows,
    shown,
)
from mailer.store.models import Customer, CustomerTag

BATCH = 1000
CUSTOMERS: Table = Customer.__table__  # type: ignore[attr-defined]
TAGS: Table = CustomerTag.__table__  # type: ignore[attr-defined]
Progress = Callable[[int], None]
SHOWN = [c for c in CUSTOMERS.c if c.name != "search_text"]  # that one is the search's own


@dataclass
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

    A file that cannot be read at all (missing, a directory, not UTF-8 text, no email
    column) raises ImportFileError naming it, before anything is saved.
    """
    report = ImportReport()
    first_line: dict[str, int] = {}
    with _open(path) as stream:
        try:
            for batch in _batches(parse_rows(read_rows(stream)), BATCH):
                good = _split(batch, report, first_line)
                with engine.begin() as conn:
                    _upsert(conn, good, now, report)
                if progress:
                    progress(len(batch))
        except ImportFileError as exc:
            raise ImportFileError(f"{shown(str(path))}: {shown(str(exc), 500)}") from None
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


def _combine(earlier: CustomerRow, later: CustomerRow) -> CustomerRow:
    """Two rows for one address in a batch, as if they had been imported one after the other."""
    given = {f.name: v for f in fields(later) if (v := getattr(later, f.name)) is not None}
    given["fields"] = {**earlier.fields, **later.fields}
    return replace(earlier, **given)


def _upsert(conn: Connection, rows: list[CustomerRow], now: datetime, report: ImportReport) -> None:
    if not rows:
        return
    existing = {
        r.email: r._mapping
        for r in conn.execute(
            select(CUSTOMERS).where(CUSTOMERS.c.email.in_([r.email for r in rows]))
        )
    }
    values = []
    for row in rows:
        before = existing.get(row.email)
        after = _merge(before, row, now)
        if before is not None and _same(before, after):
            report.unchanged += 1
            continue
        values.append(after)
        if before is None:
            report.inserted += 1
        else:
            report.updated += 1
    if values:
        conn.execute(_upsert_statement(conn), values)
    _replace_tags(conn, [r for r in rows if r.tags is not None])


def _merge(old: Any, row: CustomerRow, now: datetime) -> dict[str, Any]:
    """The stored values after this row: what the row leaves empty keeps its old value."""
    base: dict[str, Any] = dict(old) if old else _new_customer(now)
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
    base.pop("id", None)
    return base


def search_text(customer: Mapping[str, Any]) -> str:
    """What customer search looks in: address, name and first name, folded (see
    mailer.core.search), one to a line so that no search runs from one into the next."""
    return "\n".join(fold(customer[k] or "") for k in ("email", "name", "first_name"))


def add_lead(conn: Connection, email: str, name: str, now: datetime) -> int:
    """A new customer who wrote to support: no consent to newsletters is implied."""
    values = {
        **_new_customer(now),
        "email": email,
        "name": name,
        "first_name": name.split()[0] if name else "",
        "marketing_consent": False,
        "relationship_consent": False,
        "source": "inquiry",
        "updated_at": now,
    }
    values["search_text"] = search_text(values)
    lead = conn.execute(insert(CUSTOMERS).values(values)).inserted_primary_key
    assert lead is not None
    return int(lead[0])


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


def _upsert_statement(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT (email) DO UPDATE, in the connected database's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(CUSTOMERS)
    keep = {"id", "email", "created_at"}
    changes = {c.name: stmt.excluded[c.name] for c in CUSTOMERS.columns if c.name not in keep}
    return stmt.on_conflict_do_update(index_elements=["email"], set_=changes)


def _replace_tags(conn: Connection, rows: list[CustomerRow]) -> None:
    if not rows:
        return
    emails = [r.email for r in rows]
    query = select(CUSTOMERS.c.email, CUSTOMERS.c.id).where(CUSTOMERS.c.email.in_(emails))
    ids = {email: customer_id for email, customer_id in conn.execute(query)}
    conn.execute(delete(TAGS).where(TAGS.c.customer_id.in_(ids.values())))
    pairs = [{"customer_id": ids[r.email], "tag": t} for r in rows for t in r.tags or ()]
    if pairs:
        conn.execute(insert(TAGS), pairs)


def get(conn: Connection, email: str) -> dict[str, Any]:
    """One customer with tags, by address (any case); NotFound if there is none."""
    try:
        key = normalise_email(email)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    return _one(conn, CUSTOMERS.c.email == key, f"no customer {key}")


def get_id(conn: Connection, customer_id: int) -> dict[str, Any]:
    """One customer with tags, by id, as pages and links name them; NotFound if there is none."""
    return _one(conn, CUSTOMERS.c.id == customer_id, f"no customer {customer_id}")


def _one(conn: Connection, where: Any, missing: str) -> dict[str, Any]:
    row = conn.execute(select(*SHOWN).where(where)).one_or_none()
    if row is None:
        raise NotFound(missing)
    customer = dict(row._mapping)
    customer["tags"] = tags_of(conn, [customer["id"]]).get(customer["id"], [])
    return customer


def find(
    conn: Connection,
    *,
    tag: str | None = None,
    search: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Customers by email, optionally only those with a tag or containing a text in their
    address or name, in any case and script (control characters in it are ignored)."""
    query = select(*SHOWN).order_by(CUSTOMERS.c.email).limit(limit).offset(offset)
    return with_tags(conn, query.where(*matching(tag=tag, search=search)))


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


def with_tags(conn: Connection, query: Select[Any]) -> list[dict[str, Any]]:
    """The customers a query selects, each with its tags."""
    rows = [dict(r._mapping) for r in conn.execute(query)]
    tags = tags_of(conn, [r["id"] for r in rows])
    for row in rows:
        row["tags"] = tags.get(row["id"], [])
    return rows


def tags_of(conn: Connection, ids: list[int]) -> dict[int, list[str]]:
    """The tags of many customers in one query, each list sorted; untagged ones are absent."""
    found: dict[int, list[str]] = {}
    query = select(TAGS.c.customer_id, TAGS.c.tag).where(TAGS.c.customer_id.in_(ids))
    for customer_id, tag in conn.execute(query.order_by(TAGS.c.tag)):
        found.setdefault(customer_id, []).append(tag)
    return found


def unsubscribe(conn: Connection, email: str, now: datetime) -> dict[str, Any]:
    """Stop all marketing and relationship mail to a customer, at once; idempotent."""
    customer = get(conn, email)
    if unsubscribe_id(conn, customer["id"], now):
        customer.update(unsubscribed_at=now, updated_at=now)
    return customer


def unsubscribe_id(conn: Connection, customer_id: int, now: datetime) -> bool:
    """By id, as a signed token names it; False when already unsubscribed (or unknown)."""
    result = conn.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id, CUSTOMERS.c.unsubscribed_at.is_(None))
        .values(unsubscribed_at=now, updated_at=now)
    )
    return bool(result.rowcount)


def suppress(conn: Connection, emails: Collection[str], reason: str, now: datetime) -> int:
    """Stop all mail, transactional too, to addresses that cannot receive it (a hard bounce);
    the first reason is kept, so a later report does not hide when it began."""
    result = conn.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.email.in_(sorted(set(emails))), CUSTOMERS.c.suppressed_reason.is_(None))
        .values(suppressed_reason=reason, updated_at=now)
    )
    return int(result.rowcount)


def set_preferences(
    conn: Connection,
    customer_id: int,
    *,
    marketing_consent: bool,
    relationship_consent: bool,
    pause_until: datetime | None,
    now: datetime,
) -> None:
    """What the customer chose on their preferences page: consent per category and a pause."""
    conn.execute(
        update(CUSTOMERS)
        .where(CUSTOMERS.c.id == customer_id)
        .values(
            marketing_consent=marketing_consent,
            relationship_consent=relationship_consent,
            pause_until=pause_until,
            updated_at=now,
        )
    )
