"""Schema migrations keep data and match the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlmodel import SQLModel

from mailer import db, firing, migrate


def test_upgrading_a_populated_database_keeps_its_customers(database_url: str) -> None:
    engine = db.connect(database_url)
    migrate.upgrade(engine, "0001")
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (email, name, first_name, fields, marketing_consent,"
                " relationship_consent, source, created_at, updated_at)"
                " VALUES ('ana@example.com', 'Ана', 'Ана', '{\"city\": \"Варна\"}', true, true,"
                " 'import', :t, :t)"
            ),
            {"t": created},
        )
        conn.execute(text("INSERT INTO customer_tags VALUES (1, 'vip')"))
    migrate.upgrade(engine)
    assert migrate.is_up_to_date(engine)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT name, fields FROM customers")).one()
        tag = conn.execute(text("SELECT tag FROM customer_tags")).scalar_one()
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0
    assert row.name == "Ана" and "Варна" in str(row.fields)
    assert tag == "vip"
    engine.dispose()


def test_upgrading_keeps_catching_up_schedules_that_ran_before(database_url: str) -> None:
    """A schedule with runs was known by its first run: the restart after the upgrade still
    catches up what it missed, instead of counting the schedule as new."""
    engine = db.connect(database_url)
    migrate.upgrade(engine, "0009")
    first = datetime(2026, 11, 1, 7, 0, 5, tzinfo=UTC)
    with engine.begin() as conn:
        for day, started in (
            ("2026-11-01T09:00", first),
            ("2026-11-02T09:00", first.replace(day=2)),
        ):
            conn.execute(
                text(
                    "INSERT INTO schedule_runs (schedule, occurrence, zone, kind, planned_at,"
                    " started_at, status, queued, skipped)"
                    " VALUES ('news', :o, '', 'newsletter', :t, :t, 'done', 1, 0)"
                ),
                {"o": day, "t": started},
            )
    migrate.upgrade(engine)
    assert firing.first_seen(engine, ["news", "new"], datetime(2026, 12, 1, tzinfo=UTC)) == {
        "news": first,
        "new": datetime(2026, 12, 1, tzinfo=UTC),
    }
    engine.dispose()


def test_upgrading_twice_is_harmless(engine: Engine) -> None:
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_models_and_migrations_describe_the_same_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, SQLModel.metadata)
        claim_index = [idx["name"] for idx in inspect(conn).get_indexes("outbox")]
    # Alembic cannot compare an index on "priority DESC" when reading SQLite back; it is
    # checked by name here instead.
    assert "ix_outbox_claim" in claim_index
    assert [d for d in diffs if not _not_modelled(d)] == []


def _not_modelled(diff: object) -> bool:
    """What models cannot say: the claim index read back from SQLite, and the search
    indexes of migration 0009 (an FTS5 table and its shadow tables, GIN indexes)."""
    if not isinstance(diff, tuple) or diff[0] not in ("add_index", "remove_index", "remove_table"):
        return False
    name = str(diff[1].name)
    return name == "ix_outbox_claim" or name.startswith(("inquiry_search", "ix_inquiries_search_"))


def test_timestamps_come_back_aware_in_utc_and_naive_ones_are_refused(engine: Engine) -> None:
    from mailer.customers import CUSTOMERS

    sofia_noon = datetime.fromisoformat("2026-06-01T12:00:00+03:00")
    with engine.begin() as conn:
        conn.execute(
            CUSTOMERS.insert().values(
                email="t@example.com",
                name="",
                first_name="",
                fields={},
                marketing_consent=True,
                relationship_consent=True,
                source="test",
                created_at=sofia_noon,
                updated_at=sofia_noon,
            )
        )
    with engine.connect() as conn:
        stored = conn.execute(CUSTOMERS.select()).one().created_at
    assert stored == sofia_noon and stored.tzinfo == UTC
    with engine.begin() as conn, pytest.raises(Exception, match="naive datetime"):
        conn.execute(CUSTOMERS.update().values(pause_until=datetime(2026, 1, 1)))
