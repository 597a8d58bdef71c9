"""Orders and their lines in the database: a batched, set-based CSV import that can run
twice, and the look-ups a person or a model needs.

An import works a thousand orders at a time, in one transaction each: one SELECT finds the
orders already stored, one the customers (unknown addresses become leads), then one
INSERT ... RETURNING for the orders, one for the products they name and one for their lines.
PostgreSQL takes those rows by COPY (``mailer.store.bulk``) and writes a batch while the
next is read; a large import ends with fresh planner statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, func, select
from sqlalchemy.engine import Connection

from mailer.commerce import insights, order_rows, products
from mailer.commerce.order_rows import BadLine, Draft, Rejected, Rules
from mailer.core.config import InsightSettings
from mailer.core.errors import ImportFileError
from mailer.core.money import from_minor
from mailer.customers import profiles
from mailer.customers.csv_rows import read_table, shown
from mailer.store import bulk
from mailer.store.models import Customer, Order, OrderLine, OrderStatus

ORDERS: Table = Order.__table__  # type: ignore[attr-defined]
LINES: Table = OrderLine.__table__  # type: ignore[attr-defined]
CUSTOMERS: Table = Customer.__table__  # type: ignore[attr-defined]
BATCH = 1000  # orders to a transaction
ANALYZE_AFTER = 10_000  # lines added that are worth fresh statistics at once (PostgreSQL)
LEAD_SOURCE = "orders"
Progress = Callable[[int], None]


@dataclass(kw_only=True)
class ImportReport:
    added: int = 0  # orders
    unchanged: int = 0
    lines: int = 0  # lines of the orders added
    customers_added: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def rejected_lines(self) -> int:
        return sum(r.lines for r in self.rejected)


def import_csv(
    engine: Engine,
    path: Path,
    rules: Rules,
    progress: Progress | None = None,
    insight: InsightSettings | None = None,
) -> ImportReport:
    """Add every valid order of the file; report the rest by line. An order already stored
    with the same content is left as it is; with other content it is reported, unchanged.
    The insight of the customers whose orders were added is brought up to date with them,
    in the same transaction (once a refresh has fitted the models).

    On PostgreSQL a batch is written in a thread while the next one is read: checking rows
    is about half the work and the server does its part in its own process, so the two
    overlap. SQLite writes in this process, taking the GIL back after every row: there the
    thread would only wait."""
    report = ImportReport()
    source = f"import:{path.name}"[:100]
    settings = insight or InsightSettings()
    catalogued: set[str] = set()  # SKUs this import has made sure of

    def write(batch: list[Draft | Rejected]) -> None:
        drafts = [d for d in batch if isinstance(d, Draft)]
        report.rejected += [r for r in batch if isinstance(r, Rejected)]
        with engine.begin() as conn:
            add(conn, drafts, rules, source, report, settings, catalogued)
        if progress:
            progress(sum(len(d.lines) if isinstance(d, Draft) else d.lines for d in batch))

    with ExitStack() as stack:
        stream = stack.enter_context(profiles._open(path))
        overlap = engine.dialect.name == "postgresql"
        writer = stack.enter_context(ThreadPoolExecutor(1, "orders")) if overlap else None
        try:
            header, rows = read_table(stream, order_rows.order_header, "order_ref")
            lines = order_rows.parse_rows(header, rows, rules)
            written: Future[None] | None = None
            for batch in profiles._batches(order_rows.orders(lines), BATCH):
                if writer is None:
                    write(batch)
                    continue
                if written:
                    written.result()  # one batch at a time, in file order; its error stops all
                written = writer.submit(write, batch)
            if written:
                written.result()
        except ImportFileError as exc:
            raise ImportFileError(f"{shown(str(path))}: {shown(str(exc), 500)}") from None
    if report.lines >= ANALYZE_AFTER and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            bulk.analyze(conn, ORDERS, LINES, CUSTOMERS)
    return report


def add(
    conn: Connection,
    drafts: list[Draft],
    rules: Rules,
    source: str,
    report: ImportReport,
    insight: InsightSettings | None = None,
    catalogued: set[str] | None = None,
) -> None:
    """Store the orders not stored yet, in the caller's transaction, and bring the insight
    of their customers up to date; one stored before is counted unchanged when it says the
    same, and rejected (left as it was) when it says something else. ``catalogued`` holds
    the SKUs an import has already made sure of, across its batches."""
    known = set() if catalogued is None else catalogued
    touched = _add(conn, drafts, rules.now, source, report, known)
    insights.update_customers(conn, touched, rules.now, insight or InsightSettings(), rules.zone)


def _add(
    conn: Connection,
    drafts: list[Draft],
    now: datetime,
    source: str,
    report: ImportReport,
    catalogued: set[str],
) -> list[int]:
    """The customers whose orders were added. A SKU is looked for in the catalogue the
    first time the import names it, not in every batch."""
    stored = dict(
        conn.execute(
            select(ORDERS.c.order_ref, ORDERS.c.fingerprint).where(
                bulk.one_of(ORDERS.c.order_ref, [d.order_ref for d in drafts], conn.dialect.name)
            )
        ).all()
    )
    new = [d for d in drafts if d.order_ref not in stored]
    for draft in drafts:
        if draft.order_ref in stored and stored[draft.order_ref] == draft.fingerprint:
            report.unchanged += 1
        elif draft.order_ref in stored:
            report.rejected.append(_conflict(draft))
    if not new:
        return []
    customers, added = profiles.ensure(conn, {d.lines[0].email for d in new}, now, LEAD_SOURCE)
    report.customers_added += added
    ids = _insert_orders(conn, new, customers, now, source)
    named = {
        r.sku: (r.product, r.category) for d in new for r in d.lines if r.sku not in catalogued
    }
    products.add_missing(conn, named, now)
    catalogued.update(named)
    lines = [
        (ids[d.order_ref], n, r.sku, r.product, r.category, r.quantity, r.unit_price, r.unit_cost)
        for d in new
        if d.order_ref in ids
        for n, r in enumerate(d.lines, 1)
    ]
    _insert_plain(conn, LINES, _LINE_COLUMNS, lines)
    report.added += len(ids)
    report.lines += len(lines)
    return sorted({customers[d.lines[0].email] for d in new if d.order_ref in ids})


def _conflict(draft: Draft) -> Rejected:
    reason = (
        f"order {draft.order_ref} was imported before with other content; nothing of it was changed"
    )
    return Rejected(draft.order_ref, len(draft.lines), (BadLine(draft.first_line, reason),))


def _insert_orders(
    conn: Connection, new: list[Draft], customers: dict[str, int], now: datetime, source: str
) -> dict[str, int]:
    """Order ids by order id of the shop; one that another import stored meanwhile is left out."""
    heads = [d.lines[0] for d in new]
    columns: dict[str, list[Any]] = {
        "order_ref": [d.order_ref for d in new],
        "customer_id": [customers[h.email] for h in heads],
        "ordered_at": [h.ordered_at for h in heads],
        "channel": [h.channel for h in heads],
        "currency": [h.currency for h in heads],
        "status": [h.status for h in heads],
        "created_at": [now] * len(new),
        "source": [source] * len(new),
        "fingerprint": [d.fingerprint for d in new],
    }
    if conn.dialect.name == "postgresql":
        rows = zip(*columns.values(), strict=True)
        return dict(bulk.copy_insert(conn, ORDERS, list(columns), rows, ("order_ref", "id")))
    # One executemany of the driver, then the ids. Its first row took SQLite's write lock,
    # kept to the end of the transaction, and each row added got an id above all stored:
    # the ones added are the newest, whatever another import stored before.
    added = bulk.insert_columns(conn, ORDERS, columns, skip_conflicts=True)
    newest = select(ORDERS.c.order_ref, ORDERS.c.id).order_by(ORDERS.c.id.desc()).limit(added)
    return dict(conn.execute(newest).all()) if added else {}


_LINE_COLUMNS = (
    "order_id",
    "line_no",
    "sku",
    "product",
    "category",
    "quantity",
    "unit_price",
    "unit_cost",
)


def _insert_plain(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """One INSERT for many rows of plain integers and text, handed to the driver as they
    are: SQLAlchemy would build each row's parameters in Python, over a tenth of the import.
    PostgreSQL takes them by COPY."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        bulk.copy_rows(conn, table, columns, rows)
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(columns)
    marks = ", ".join([mark] * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)


def _total() -> Any:
    return func.coalesce(func.sum(LINES.c.quantity * LINES.c.unit_price), 0)


def find(conn: Connection, customer_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest orders (of one customer), each with its line count and total."""
    query = (
        select(
            ORDERS.c.order_ref,
            CUSTOMERS.c.email,
            ORDERS.c.ordered_at,
            ORDERS.c.channel,
            ORDERS.c.status,
            ORDERS.c.currency,
            func.count(LINES.c.line_no).label("lines"),
            _total().label("total"),
        )
        .join(CUSTOMERS, CUSTOMERS.c.id == ORDERS.c.customer_id)
        .outerjoin(LINES, LINES.c.order_id == ORDERS.c.id)
        .group_by(ORDERS.c.id, CUSTOMERS.c.email)
        .order_by(ORDERS.c.ordered_at.desc(), ORDERS.c.id.desc())
        .limit(limit)
    )
    if customer_id is not None:
        query = query.where(ORDERS.c.customer_id == customer_id)
    found = [dict(row) for row in conn.execute(query).mappings()]
    return [{**row, "total": from_minor(int(row["total"]), row["currency"])} for row in found]


def summary(conn: Connection, customer_id: int) -> dict[str, Any]:
    """How many orders, the first and the last, and what they came to in each currency
    (returns subtract; cancelled orders count for nothing)."""
    mine = ORDERS.c.customer_id == customer_id
    when = select(func.count(), func.min(ORDERS.c.ordered_at), func.max(ORDERS.c.ordered_at))
    count, first, last = conn.execute(when.where(mine)).one()
    totals = (
        select(ORDERS.c.currency, _total())
        .join(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(mine, ORDERS.c.status != OrderStatus.CANCELLED)
        .group_by(ORDERS.c.currency)
        .order_by(ORDERS.c.currency)
    )
    amounts = {cur: from_minor(int(total), cur) for cur, total in conn.execute(totals)}
    return {"count": count, "first_at": first, "last_at": last, "totals": amounts}


def reasons(rejected: Iterable[Rejected]) -> Sequence[tuple[int, str, str]]:
    """(line, order id, reason) for every bad line, in file order."""
    found = [(bad.line, r.order_ref, bad.reason) for r in rejected for bad in r.problems]
    return sorted(found)
