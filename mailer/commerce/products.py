"""The product catalogue: SKUs with their names and categories, upserted from CSV or
learnt from the orders that name them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mailer.commerce.order_rows import LIMITS, BadLine
from mailer.core.errors import ImportFileError
from mailer.customers.csv_rows import RejectedRow, clean_text, normalise_header, read_rows, shown
from mailer.customers.profiles import BATCH, _batches, _open
from mailer.store import bulk
from mailer.store.models import Product

PRODUCTS: Table = Product.__table__  # type: ignore[attr-defined]
_ALIASES = {
    **dict.fromkeys(("stockcode", "stock_code", "product_id", "item", "article"), "sku"),
    **dict.fromkeys(("product", "description", "product_name", "title"), "name"),
    **dict.fromkeys(("product_category", "product_type", "type"), "category"),
}


@dataclass(kw_only=True)
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[BadLine] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line)


def _dialect(conn: Connection) -> object:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def add_missing(conn: Connection, named: Mapping[str, tuple[str, str]], now: datetime) -> None:
    """SKUs an order names, (name, category) by SKU, added when the catalogue lacks them;
    what the catalogue says already stays."""
    if not named:
        return
    if conn.dialect.name == "postgresql":
        rows = [(s, n, c, now) for s, (n, c) in named.items()]
        bulk.copy_insert(conn, PRODUCTS, ("sku", "name", "category", "updated_at"), rows)
        return
    values = [
        {"sku": s, "name": n, "category": c, "updated_at": now} for s, (n, c) in named.items()
    ]
    conn.execute(sqlite.insert(PRODUCTS).on_conflict_do_nothing(), values)


def import_csv(engine: Engine, path: Path, now: datetime) -> ImportReport:
    """Add or update products by SKU; an empty cell keeps what is stored."""
    report = ImportReport()
    with _open(path) as stream:
        try:
            for batch in _batches(_rows(read_rows(stream, _header, "sku"), report), BATCH):
                with engine.begin() as conn:
                    _upsert(conn, _combined(batch), now, report)
        except ImportFileError as exc:
            raise ImportFileError(f"{shown(str(path))}: {shown(str(exc), 500)}") from None
    return report


def _combined(batch: list[tuple[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """The batch's rows by SKU; a SKU given again takes the later row's filled cells, and
    an empty one keeps the earlier row's, as it keeps what is stored."""
    rows: dict[str, dict[str, str]] = {}
    for sku, values in batch:
        earlier = rows.get(sku, {})
        rows[sku] = {column: text or earlier.get(column, "") for column, text in values.items()}
    return rows


def _header(name: str) -> str:
    key = normalise_header(name)
    return _ALIASES.get(key, key)


def _rows(
    rows: Iterator[tuple[int, dict[str, str]] | RejectedRow], report: ImportReport
) -> Iterator[tuple[str, dict[str, str]]]:
    """(SKU, values) of each good row; a SKU named again is noted, and its later row wins."""
    first_line: dict[str, int] = {}
    for row in rows:
        if isinstance(row, RejectedRow):
            report.rejected.append(BadLine(row.line, row.reason))
            continue
        line, cells = row
        values = {c: clean_text(cells.get(c) or "") or "" for c in ("sku", "name", "category")}
        long = [c for c, n in LIMITS.items() if c in values and len(values[c]) > n]
        if not values["sku"] or long:
            reason = "no SKU" if not values["sku"] else f"{long[0]} is too long"
            report.rejected.append(BadLine(line, reason))
            continue
        seen = first_line.setdefault(values["sku"], line)
        if seen != line:
            report.duplicates.append((line, seen))
        yield values["sku"], values


def _upsert(
    conn: Connection, rows: dict[str, dict[str, str]], now: datetime, report: ImportReport
) -> None:
    stored = {
        r.sku: r for r in conn.execute(select(PRODUCTS).where(PRODUCTS.c.sku.in_(list(rows))))
    }
    values = []
    for sku, given in rows.items():
        before = stored.get(sku)
        after = {
            "sku": sku,
            "name": given["name"] or (before.name if before else ""),
            "category": given["category"] or (before.category if before else ""),
        }
        if before is not None and (before.name, before.category) == (
            after["name"],
            after["category"],
        ):
            report.unchanged += 1
            continue
        report.added += before is None
        report.updated += before is not None
        values.append({**after, "updated_at": now})
    if values:
        stmt = _dialect(conn).insert(PRODUCTS)  # type: ignore[attr-defined]
        update = {c: stmt.excluded[c] for c in ("name", "category", "updated_at")}
        conn.execute(stmt.on_conflict_do_update(index_elements=["sku"], set_=update), values)
