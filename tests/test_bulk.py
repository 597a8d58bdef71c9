"""Set-based helpers of mailer.store.bulk, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from mailer.customers.profiles import CUSTOMERS, ERASED
from mailer.store import bulk

ODD = ['a","b', "back\\slash", 'quote"', "comma,brace}{", "NULL", "", " space ", "Мария"]


def test_one_of_matches_each_value_as_given_however_it_is_spelled(engine: Engine) -> None:
    dialect, column = engine.dialect.name, ERASED.c.address_hash
    erased_at = datetime(2026, 12, 3, tzinfo=UTC)
    with engine.begin() as conn:
        rows = [{"address_hash": v, "erased_at": erased_at} for v in [*ODD, "a", "b"]]
        conn.execute(ERASED.insert(), rows)
        query = select(column).where(bulk.one_of(column, [*ODD, None, "absent"], dialect))
        assert sorted(conn.execute(query).scalars()) == sorted(ODD)
        assert conn.execute(select(column).where(bulk.one_of(column, [], dialect))).all() == []
        ids = select(CUSTOMERS.c.id).where(bulk.one_of(CUSTOMERS.c.id, [1, 2], dialect))
        assert conn.execute(ids).all() == []
