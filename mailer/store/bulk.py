"""Many rows into PostgreSQL at once, by COPY.

A multi-row INSERT of a thousand rows holds ten thousand placeholders, which psycopg parses
in Python each time (its statement cache skips long statements), and an executemany sends
one statement per row: either way an order import spent two thirds of its time there. COPY
streams the rows as text, formatted in C, and the server parses each value by its column's
type; a temporary table then lets one INSERT ... SELECT skip conflicts and return ids.
Nothing is committed here: the rows belong to the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Table, TypeDecorator, any_, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.elements import ColumnElement

STAGE = "bulk_stage"


def copy_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Rows (values in the order of ``columns``) straight into the table."""
    with _cursor(conn) as cursor:
        _copy(cursor, table, table.name, columns, rows)


def copy_columns(conn: Connection, table: Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Rows given as columns (aligned lists) straight into the table; a JSON or datetime
    column is written as text (see ``_copy``) as a whole, not cell by cell inside each row."""
    values = [_as_text(table, name, column) for name, column in columns.items()]
    with _cursor(conn) as cursor, cursor.copy(_copy_sql(table.name, list(columns))) as copy:
        for row in zip(*values, strict=True):
            copy.write_row(row)


def insert_columns(
    conn: Connection,
    table: Table,
    columns: Mapping[str, Sequence[Any]],
    *,
    skip_conflicts: bool = False,
) -> int:
    """Rows given as columns (aligned lists) into the table by one executemany of the
    driver: each column's values converted by its type's bind processor, as SQLAlchemy
    would, but without the parameter dict SQLAlchemy builds for every row, which cost
    more than SQLite inserting it; a row that conflicts with a stored one is left out when
    ``skip_conflicts``. How many rows were added. For SQLite; PostgreSQL takes many rows by
    ``copy_rows``."""
    dialect = conn.dialect
    values = []
    for name, column in columns.items():
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        values.append(column if process is None else _converted(column, process))
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(mark for _ in columns)})"
        + (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
    )
    cursor = _cursor(conn)
    try:
        cursor.executemany(sql, zip(*values, strict=True))
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _converted(column: Sequence[Any], process: Any) -> Sequence[Any]:
    """A column's values by its bind processor; one that is the same object in every row
    (a time of import, say) converted once."""
    if column and column[-1] is column[0] and len(set(map(id, column))) == 1:
        return [process(column[0])] * len(column)
    return [process(v) for v in column]


def copy_insert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Rows into the table, each one that conflicts with a stored row left out (ON CONFLICT
    DO NOTHING); the ``returning`` columns of the rows added."""
    return _staged(conn, table, columns, rows, "DO NOTHING", returning)


def copy_upsert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    key: str,
    update: Sequence[str],
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Rows into the table, a row whose ``key`` (a unique column) is stored setting that
    row's ``update`` columns instead (ON CONFLICT (key) DO UPDATE); the ``returning``
    columns of every row written. No two rows may share a key."""
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
    return _staged(conn, table, columns, rows, f"({key}) DO UPDATE SET {sets}", returning)


def copy_with_ids(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    count: int,
) -> list[int] | None:
    """``count`` rows straight into the table under ids taken from its id sequence, the
    ids in row order; None, with nothing written, when a row's unique key was stored
    meanwhile (the caller writes them another way).

    Faster than ``copy_upsert`` for rows known to be new, and not only by the staging
    table it skips: PostgreSQL updates the table's indexes while the rows still stream
    in, so a caller that makes each row as it is read (a generator) works beside the
    server instead of before it."""
    ids = list(conn.execute(_NEXT_IDS, {"table": table.name, "count": count}).scalars())
    try:
        with conn.begin_nested(), _cursor(conn) as cursor:
            numbered = ((i, *row) for i, row in zip(ids, rows, strict=True))
            _copy(cursor, table, table.name, ["id", *columns], numbered)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        return None
    return ids


_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"
)
_UNIQUE_VIOLATION = "23505"


def _staged(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    conflict: str,
    returning: Sequence[str],
) -> list[tuple[Any, ...]]:
    """Rows copied into a temporary table, then into ``table`` by one INSERT ... SELECT
    ... ON CONFLICT ``conflict``."""
    names = ", ".join(columns)
    with _cursor(conn) as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE {STAGE} ON COMMIT DROP AS "
            f"SELECT {names} FROM {table.name} WITH NO DATA"
        )
        _copy(cursor, table, STAGE, columns, rows)
        cursor.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {STAGE} ON CONFLICT "
            + conflict
            + (f" RETURNING {', '.join(returning)}" if returning else "")
        )
        added = cursor.fetchall() if returning else []
        cursor.execute(f"DROP TABLE {STAGE}")
    return added


def analyze(conn: Connection, *tables: Table) -> None:
    """Fresh planner statistics for tables that have just grown by many rows. Until
    autovacuum gets to them (a minute or more), PostgreSQL guesses, and guessed wrong: a
    seq scan of every order line to update one customer's insight (300 ms instead of 1)."""
    conn.exec_driver_sql(f"ANALYZE {', '.join(t.name for t in tables)}")


def one_of(
    column: ColumnElement[Any], values: Collection[Any], dialect: str
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter however many
    values, so the statement stays short and cached."""
    if dialect != "postgresql":
        return column.in_(values)
    return column == any_(bindparam(None, list(values), type_=_ArrayText(column.type)))


class _ArrayText(TypeDecorator[Any]):
    """A list sent as the text of a PostgreSQL array: psycopg quotes each item of a list in
    Python (6 ms for a thousand addresses); joining them here takes a tenth of that."""

    impl = ARRAY
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str]:
        return _array_text


def _array_text(values: Iterable[Any]) -> str:
    texts = (str(v).replace("\\", "\\\\").replace('"', '\\"') for v in values if v is not None)
    return "{" + ",".join(f'"{t}"' for t in texts) + "}"


def any_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """``column IN :name``, the values given when the statement runs, so that it is built
    once and reused: an expanding ``IN`` on SQLite, ``= ANY(:name)`` (one array) on
    PostgreSQL."""
    if dialect != "postgresql":
        return column.in_(bindparam(name, expanding=True))
    return column == any_(bindparam(name, type_=ARRAY(column.type)))


def _cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]


def _copy(
    cursor: Any, table: Table, into: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    # JSON encoded here; a datetime as ISO text, which costs a tenth of psycopg's dumping
    # of an aware datetime (that was half the COPY of a batch of customers)
    found = {i: _TEXT.get(table.c[c].type._type_affinity) for i, c in enumerate(columns)}
    convert = {i: text for i, text in found.items() if text is not None}
    with cursor.copy(_copy_sql(into, columns)) as copy:
        for row in rows:
            if convert:
                row = list(row)
                for i, text in convert.items():
                    if row[i] is not None:
                        row[i] = text(row[i])
            copy.write_row(row)


_TEXT: dict[Any, Callable[[Any], str]] = {JSON: json.dumps, DateTime: datetime.isoformat}


def _as_text(table: Table, name: str, column: Sequence[Any]) -> Sequence[Any]:
    text = _TEXT.get(table.c[name].type._type_affinity)
    return column if text is None else [None if v is None else text(v) for v in column]


def _copy_sql(into: str, columns: Sequence[str]) -> str:
    return f"COPY {into} ({', '.join(columns)}) FROM STDIN"
