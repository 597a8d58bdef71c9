"""Orders and their lines in the database: a batched, set-based CSV import that can run
twice, and the look-ups a person or a model needs.

An import works a thousand orders at a time, in one transaction each: one SELECT finds the
orders already stored, one the customers (unknown addresses become leads), then one
INSERT ... RETURNING for the orders, one for the products they name and one for their lines.
PostgreSQL takes those rows by COPY (``mailer.store.bulk``); a large file is read and
checked in a child process while the batches before are written, and a large import ends
with fresh planner statistics.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import signal
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection as Connection_
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, func, select
from sqlalchemy.engine import Connection

from mailer.commerce import insights, order_rows, products
from mailer.commerce.order_rows import BadLine, Draft, Packed, Rejected, Rules
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
READ_APART = 4 << 20  # bytes of a file read and checked in a child process (40,000 lines)
PIPE_BYTES = 1 << 20  # what the child may have sent that is not read yet (a few batches)
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

    A large file is read and checked in a child process while this one writes: checking
    rows is about half the work, and a thread would share one core with the writer (the
    GIL). The orders come over a pipe in batches, as plain values, in file order."""
    report = ImportReport()
    source = f"import:{path.name}"[:100]
    settings = insight or InsightSettings()
    catalogued: set[str] = set()  # SKUs this import has made sure of
    try:
        apart = path.stat().st_size >= READ_APART
    except OSError:  # the reader names what is wrong with the file
        apart = False
    batches = _read_apart(path, rules) if apart else _read(path, rules)
    with closing(batches):
        for batch in batches:
            packs = [o for o in batch if isinstance(o, Packed)]
            report.rejected += [r for r in batch if isinstance(r, Rejected)]
            with engine.begin() as conn:
                touched = _add(conn, packs, rules.now, source, report, catalogued)
                insights.update_customers(conn, touched, rules.now, settings, rules.zone)
            if progress:
                progress(sum(len(o.items) if isinstance(o, Packed) else o.lines for o in batch))
    split = {r.order_ref: r.began_at for r in report.rejected if r.began_at is not None}
    if split:
        with engine.begin() as conn:
            touched = _leave_out(conn, split, source, rules.now, report)
            insights.update_customers(conn, touched, rules.now, settings, rules.zone)
    if report.lines >= ANALYZE_AFTER and engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            bulk.analyze(conn, ORDERS, LINES, CUSTOMERS)
    return report


Batch = list[Packed | Rejected]


def _read(path: Path, rules: Rules) -> Generator[Batch, None, None]:
    """The file's orders, checked, a batch at a time. ImportFileError, naming the file,
    when it cannot be read at all."""
    with profiles._open(path) as stream:
        try:
            header, rows = read_table(stream, order_rows.order_header, "order_id")
            yield from profiles._batches(order_rows.packed_orders(header, rows, rules), BATCH)
        except ImportFileError as exc:
            raise ImportFileError(f"{shown(str(path))}: {shown(str(exc), 500)}") from None


def _read_apart(path: Path, rules: Rules) -> Generator[Batch, None, None]:
    """``_read`` in a forked child process, a few batches ahead of the caller. Only the
    child holds the write end of the pipe, so a child that dies, even half way through
    sending a batch, is an end of the pipe here (ImportFileError), never a wait. Its error
    is raised here; the child is stopped when the caller stops early."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    with contextlib.suppress(OSError):  # room for a few batches, where Linux allows it
        fcntl.fcntl(writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    child = context.Process(target=_reader, args=(path, rules, writer), daemon=True)
    child.start()
    writer.close()
    try:
        while True:
            try:
                item = reader.recv()
            except (EOFError, OSError):  # OSError: the end came in the middle of a batch
                child.join()
                raise ImportFileError(
                    f"{shown(str(path))}: the process reading it stopped (exit code "
                    f"{child.exitcode}); the orders before were kept, and importing the "
                    "file again adds the rest"
                ) from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        reader.close()


def _reader(path: Path, rules: Rules, writer: Connection_) -> None:
    """The child: each batch into the pipe (waiting while it is full), then None, or the
    error that stopped it. A Ctrl-C is the parent's to handle; a parent that has gone
    breaks the pipe, which ends the child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for batch in _read(path, rules):
            writer.send(batch)
        writer.send(None)
    except BrokenPipeError:  # nobody is reading any more
        return
    except Exception as exc:  # any error is the import's: raised in the parent
        with contextlib.suppress(BrokenPipeError):
            writer.send(exc if isinstance(exc, ImportFileError) else RuntimeError(repr(exc)))


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
    packs = [order_rows.packed(d) for d in drafts]
    touched = _add(conn, packs, rules.now, source, report, known)
    insights.update_customers(conn, touched, rules.now, insight or InsightSettings(), rules.zone)


def _add(
    conn: Connection,
    drafts: list[Packed],
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
    customers, added = profiles.ensure(conn, {d.head[0] for d in new}, now, LEAD_SOURCE)
    report.customers_added += added
    ids = _insert_orders(conn, new, customers, now, source)
    named = {sku: (name, group) for d in new for sku, name, group, *_ in d.items}
    named = {sku: said for sku, said in named.items() if sku not in catalogued}
    products.add_missing(conn, named, now)
    catalogued.update(named)
    lines = [
        (ids[d.order_ref], n, *item)
        for d in new
        if d.order_ref in ids
        for n, item in enumerate(d.items, 1)
    ]
    _insert_plain(conn, LINES, _LINE_COLUMNS, lines)
    report.added += len(ids)
    report.lines += len(lines)
    return sorted({customers[d.head[0]] for d in new if d.order_ref in ids})


def _leave_out(
    conn: Connection, split: dict[str, int], source: str, now: datetime, report: ImportReport
) -> list[int]:
    """Remove the first part of each order whose lines were not together, which this import
    stored before it met the rest (so the order is left out whole, and the corrected file
    imports it); returns the customers whose orders were removed. An order stored by an
    earlier import is not touched."""
    mine = (
        bulk.one_of(ORDERS.c.order_ref, list(split), conn.dialect.name)
        & (ORDERS.c.source == source)
        & (ORDERS.c.created_at == now)
    )
    found = conn.execute(
        select(ORDERS.c.id, ORDERS.c.order_ref, ORDERS.c.customer_id, func.count(LINES.c.line_no))
        .join(LINES, LINES.c.order_id == ORDERS.c.id)
        .where(mine)
        .group_by(ORDERS.c.id, ORDERS.c.order_ref, ORDERS.c.customer_id)
    ).all()
    if not found:
        return []
    ids = [row.id for row in found]
    conn.execute(LINES.delete().where(LINES.c.order_id.in_(ids)))
    conn.execute(ORDERS.delete().where(ORDERS.c.id.in_(ids)))
    for _, ref, _, lines in found:
        reason = f"order {ref} goes on after other orders; left out whole, with the rest of it"
        problems = (BadLine(split[ref], reason),)
        report.rejected.append(Rejected(order_ref=ref, lines=lines, problems=problems))
        report.added -= 1
        report.lines -= lines
    return sorted({row.customer_id for row in found})


def _conflict(draft: Packed) -> Rejected:
    reason = (
        f"order {draft.order_ref} was imported before with other content; nothing of it was changed"
    )
    return Rejected(
        order_ref=draft.order_ref,
        lines=len(draft.items),
        problems=(BadLine(draft.first_line, reason),),
    )


def _insert_orders(
    conn: Connection, new: list[Packed], customers: dict[str, int], now: datetime, source: str
) -> dict[str, int]:
    """Order ids by order id of the shop; one that another import stored meanwhile is left out."""
    emails, moments, currencies, channels, statuses = zip(*(d.head for d in new), strict=True)
    columns: dict[str, Sequence[Any]] = {
        "order_ref": [d.order_ref for d in new],
        "customer_id": [customers[e] for e in emails],
        "ordered_at": moments,
        "channel": channels,
        "currency": currencies,
        "status": statuses,
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
