"""Schema migrations keep data and match the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlmodel import SQLModel

from mailer.scheduling import firing
from mailer.store import db, migrate


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
    # checked by name here, and in full by the test below.
    assert "ix_outbox_claim" in claim_index
    assert [d for d in diffs if not _not_modelled(d)] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_migrated_sqlite_database_has_each_index_as_the_models_write_it(
    engine: Engine, tmp_path: Path
) -> None:
    """Sort order and conditions included, which Alembic does not compare on SQLite: a
    rebuild of the outbox table once dropped the claim index's DESC, and every claim sorted
    the whole queue."""
    fresh = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    SQLModel.metadata.create_all(fresh)

    def indexes(of: Engine) -> dict[str, str]:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        with of.connect() as conn:
            return {
                name: " ".join(sql.replace('"', "").split())
                for name, sql in conn.execute(text(query))
            }

    migrated, modelled = indexes(engine), indexes(fresh)
    fresh.dispose()
    assert "ix_outbox_claim" in modelled
    assert {n: s for n, s in migrated.items() if n in modelled} == modelled


def _not_modelled(diff: object) -> bool:
    """What models cannot say: the claim index read back from SQLite, and the search
    indexes of migrations 0009 and 0011 (an FTS5 table and its shadow tables, GIN indexes)."""
    if not isinstance(diff, tuple) or diff[0] not in ("add_index", "remove_index", "remove_table"):
        return False
    name = str(diff[1].name)
    searches = ("inquiry_search", "ix_inquiries_search_", "ix_customers_search")
    return name == "ix_outbox_claim" or name.startswith(searches)


def test_timestamps_come_back_aware_in_utc_and_naive_ones_are_refused(engine: Engine) -> None:
    from mailer.customers.profiles import CUSTOMERS

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


def test_upgrading_to_fingerprints_keeps_inquiries_their_events_and_search(
    database_url: str,
) -> None:
    """0010 copies the inquiries table on SQLite: nothing hanging off it may be lost."""
    engine = db.connect(database_url)
    migrate.upgrade(engine, "0009")
    at = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO inquiries (message_id, sender, sender_name, subject, body_text,"
                " reply_text, attachments, defects, received_at, status, reasons, raw,"
                " raw_truncated) VALUES ('<m1@mail.example>', 'ana@example.com', 'Ана',"
                " 'Мелачка', 'Мелачката скърца', '', '[]', '[]', :t, 'new', '[]', :raw, false)"
            ),
            {"t": at, "raw": b"From: ana@example.com\r\n\r\nx\r\n"},
        )
        conn.execute(
            text(
                "INSERT INTO inquiry_events (inquiry_id, at, actor, kind, text)"
                " VALUES (1, :t, 'sam', 'note', 'called her back')"
            ),
            {"t": at},
        )
    migrate.upgrade(engine)
    from mailer.inbound import inquiries

    with engine.begin() as conn:
        assert [e.text for e in inquiries.events(conn, 1)] == ["called her back"]
        conn.execute(
            inquiries.INQUIRIES.insert().values(
                message_id="<m1@mail.example>",
                fingerprint="f" * 64,
                sender="ivan@example.com",
                subject="Друго",
                body_text="скърца ли?",
                received_at=at,
                raw=b"",
            )
        )
        found = inquiries.browse(conn, search="скърца").rows
    engine.dispose()
    assert sorted(r.sender for r in found) == ["ana@example.com", "ivan@example.com"]


def test_customers_stored_before_the_search_column_are_found_in_any_case(
    database_url: str,
) -> None:
    from mailer.customers import profiles

    engine = db.connect(database_url)
    migrate.upgrade(engine, "0009")
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customers (email, name, first_name, fields, marketing_consent,"
                " relationship_consent, source, created_at, updated_at)"
                " VALUES (:email, :name, :first, '{}', true, true, 'import', :t, :t)"
            ),
            [
                {"email": f"c{n}@example.com", "name": f"Клиент {n}", "first": "", "t": now}
                for n in range(1500)  # more than one batch of the backfill
            ]
            + [{"email": "ana@example.com", "name": "Ана Иванова", "first": "Ани", "t": now}],
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert [c.email for c in profiles.find(conn, search="ИВАНОВА")] == ["ana@example.com"]
        assert [c.email for c in profiles.find(conn, search="ани")] == ["ana@example.com"]
        assert len(profiles.find(conn, search="КЛИЕНТ 149")) == 11  # 149 and 1490-1499
    engine.dispose()
