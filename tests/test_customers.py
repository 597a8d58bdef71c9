"""Importing and managing customers, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, select

from mailer.core.clock import ManualClock
from mailer.core.errors import ImportFileError, NotFound
from mailer.customers import profiles
from mailer.customers.csv_rows import CustomerRow
from mailer.store import db, migrate
from tests.pg import PostgresServer

CUSTOMERS = profiles.CUSTOMERS

MIXED = (
    "\ufeffemail,name,locale,timezone,birthday,tags,city\n"
    "maria@example.com,Мария Иванова,bg,Europe/Sofia,1988-03-14,newsletter;vip,София\n"
    "jose@example.com,José Reyes,tl,Asia/Manila,--02-29,newsletter,Quezon City\n"
    "not-an-address,Broken,en,UTC,,,\n"
    "MARIA@example.com,Мария Петрова,bg-BG,,,,\n"
    "zoe@example.com,Zoë Müller,en,Mars/Olympus,,,\n"
    "siti@example.com,Siti Rahmawati,id,Asia/Jakarta,31.12.1992,,\n"
)


def write(tmp_path: Path, text: str, name: str = "customers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    report = profiles.import_csv(engine, write(tmp_path, MIXED), clock.now())
    assert (report.inserted, report.updated) == (3, 0)
    assert [(r.line, r.email) for r in report.rejected] == [
        (4, "not-an-address"),
        (6, "zoe@example.com"),
    ]
    assert "Mars/Olympus" in report.rejected[1].reason
    assert report.duplicates == [(5, 2)]
    with engine.connect() as conn:
        maria = profiles.get(conn, "maria@example.com")
        jose = profiles.get(conn, "Jose@Example.com")
    assert (maria.name, maria.first_name, maria.locale) == (
        "Мария Петрова",
        "Мария",
        "bg-BG",
    )
    assert maria.timezone == "Europe/Sofia", "an empty cell keeps the value given earlier"
    assert maria.tags == ("newsletter", "vip")
    assert maria.fields == {"city": "София"}
    assert (jose.birth_month, jose.birth_day, jose.birth_year) == (2, 29, None)


def test_importing_the_same_file_twice_changes_nothing(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    path = write(tmp_path, MIXED)
    profiles.import_csv(engine, path, clock.now())
    with engine.connect() as conn:
        before = profiles.find(conn)
    report = profiles.import_csv(engine, path, clock.now())
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 3)
    with engine.connect() as conn:
        assert profiles.find(conn) == before


def test_new_tags_alone_count_the_customer_as_updated(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    """A tags cell replaces the customer's tags: a row that changes only them changed the
    customer (the report said "unchanged" while they left the newsletter's audience)."""
    profiles.import_csv(engine, write(tmp_path, MIXED), clock.now())
    retagged = "email,tags\nmaria@example.com,webinar\n"
    clock.advance(timedelta(hours=1))
    report = profiles.import_csv(engine, write(tmp_path, retagged, "b.csv"), clock.now())
    assert (report.updated, report.unchanged) == (1, 0)
    with engine.connect() as conn:
        maria = profiles.get(conn, "maria@example.com")
    assert maria.tags == ("webinar",) and maria.updated_at == clock.now()
    again = profiles.import_csv(engine, write(tmp_path, retagged, "c.csv"), clock.now())
    assert (again.updated, again.unchanged) == (0, 1)


def test_import_updates_by_email_and_never_resubscribes(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    profiles.import_csv(engine, write(tmp_path, MIXED), clock.now())
    with engine.begin() as conn:
        profiles.unsubscribe(conn, "siti@example.com", clock.now())
    update = "email,name,timezone,tags\nsiti@example.com,Siti R.,Asia/Makassar,webinar\n"
    report = profiles.import_csv(engine, write(tmp_path, update, "b.csv"), clock.now())
    assert report.updated == 1
    with engine.connect() as conn:
        siti = profiles.get(conn, "siti@example.com")
    assert (siti.name, siti.timezone, siti.tags) == (
        "Siti R.",
        "Asia/Makassar",
        ("webinar",),
    )
    assert siti.unsubscribed_at == clock.now()


@pytest.mark.parametrize("order", ["new first", "stored first"])
def test_a_batch_that_adds_a_customer_keeps_a_stored_customers_confirmed_consent(
    engine: Engine, tmp_path: Path, clock: ManualClock, order: str
) -> None:
    profiles.import_csv(engine, write(tmp_path, "email\nold@example.com\n"), clock.now())
    with engine.begin() as conn:
        old = profiles.get(conn, "old@example.com").id
        profiles.confirm_marketing(conn, old, now=clock.now(), source="web form", ip="192.0.2.7")
    lines = ["new@example.com,New,a", "old@example.com,Old,b"]
    text = "\n".join(["email,name,tags", *(lines if order == "new first" else lines[::-1])])
    report = profiles.import_csv(engine, write(tmp_path, text, "b.csv"), clock.now())
    assert (report.inserted, report.updated) == (1, 1)
    consent = (CUSTOMERS.c.consent_at, CUSTOMERS.c.consent_source, CUSTOMERS.c.consent_ip)
    with engine.connect() as conn:
        stored = {r.email: tuple(r)[1:] for r in conn.execute(select(CUSTOMERS.c.email, *consent))}
        assert stored == {
            "old@example.com": (clock.now(), "web form", "192.0.2.7"),
            "new@example.com": (None, None, None),
        }
        assert profiles.get(conn, "old@example.com").tags == ("b",)
        assert profiles.get(conn, "new@example.com").tags == ("a",)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_opt_in_confirmed_while_a_batch_changes_the_customer_is_kept(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    """The customer clicks the confirmation link while an import renames them: the import
    waits for the confirmation and keeps it (it used to write the consent it had read
    before, false, over it). SQLite has one writer, so the two cannot interleave there."""
    first = write(tmp_path, "email,name,marketing_consent\nana@example.com,Ana,no\n")
    profiles.import_csv(engine, first, clock.now())
    with engine.connect() as link:
        customer = profiles.get(link, "ana@example.com").id
        profiles.confirm_marketing(link, customer, now=clock.now(), source="link", ip=None)
        renamed = write(tmp_path, "email,name\nana@example.com,Ana Cruz\n", "b.csv")
        assert import_behind(link, engine, renamed, clock).updated == 1
    with engine.connect() as conn:
        ana = profiles.get(conn, "ana@example.com")
    assert (ana.name, ana.marketing_consent) == ("Ana Cruz", True)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_customer_added_elsewhere_while_a_batch_adds_them_is_updated_by_the_batch(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    """The web form adds a customer while an import that also names them is under way: the
    import read them as new, meets them stored when it writes, and updates them instead of
    failing (its other new customer is added all the same)."""
    with engine.connect() as form:
        rows = [CustomerRow(line=1, email="ana@example.com", name="Ana", tags=("form",))]
        profiles.upsert(form, rows, clock.now(), "the form", "web")  # not committed yet
        text = "email,name,tags\nana@example.com,Ana Cruz,vip\nben@example.com,Ben,vip\n"
        assert import_behind(form, engine, write(tmp_path, text), clock).rejected == []
    with engine.connect() as conn:
        assert [(c.email, c.name, c.tags) for c in profiles.find(conn)] == [
            ("ana@example.com", "Ana Cruz", ("vip",)),
            ("ben@example.com", "Ben", ("vip",)),
        ]


def import_behind(
    held: Connection, engine: Engine, path: Path, clock: ManualClock
) -> profiles.ImportReport:
    """Import ``path`` in another thread until it waits for what ``held`` has not committed
    yet, then commit that; the import's report."""
    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(profiles.import_csv, engine, path, clock.now())
        for _ in range(1000):  # at most 10 s for the import to reach the row
            if waiting_on_a_lock(engine):
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the import never waited for the uncommitted write")
        held.commit()
        return batch.result()


def waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return bool(conn.exec_driver_sql(query).scalar())


def test_names_with_line_breaks_are_stored_on_one_line(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    text = 'email,name\nevil@example.com,"Eve\r\nBcc: victim@example.com"\n'
    profiles.import_csv(engine, write(tmp_path, text), clock.now())
    with engine.connect() as conn:
        assert profiles.get(conn, "evil@example.com").name == "Eve Bcc: victim@example.com"


def test_a_file_that_is_not_utf8_is_refused_with_advice(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nz@example.com,Zoë\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match="not UTF-8"):
        profiles.import_csv(engine, path, clock.now())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: path.mkdir(), "a directory, not a CSV file"),
        (lambda path: None, "file not found"),
        (os.mkfifo, "not a regular file, not a CSV file"),
        (
            lambda path: path.write_bytes("email\nz@example.com\n".encode("utf-16")),
            "UTF-16 text, not UTF-8; save it as CSV UTF-8",
        ),
        (
            lambda path: path.write_bytes(b"email,name\n" + b"\x00\x01\x02" * 100),
            "not a text file (it holds NUL bytes)",
        ),
    ],
    ids=["directory", "missing", "fifo", "utf-16", "binary"],
)
def test_a_file_that_cannot_be_read_at_all_is_refused_in_one_line_before_anything_is_saved(
    engine: Engine, tmp_path: Path, clock: ManualClock, make: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "customers.csv"
    make(path)
    with pytest.raises(ImportFileError, match=re.escape(f"{path}: {message}")):
        profiles.import_csv(engine, path, clock.now())
    with engine.connect() as conn:
        assert profiles.find(conn) == []


def test_a_large_file_is_imported_in_batches_with_progress(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    lines = [f"c{i}@example.com,Customer {i},newsletter" for i in range(2500)]
    path = write(tmp_path, "email,name,tags\n" + "\n".join(lines) + "\n")
    seen: list[int] = []
    report = profiles.import_csv(engine, path, clock.now(), progress=seen.append)
    assert report.inserted == 2500
    assert seen == [1000, 1000, 500]
    with engine.connect() as conn:
        assert len(profiles.find(conn, tag="newsletter", limit=5000)) == 2500


def test_unsubscribe_is_immediate_and_idempotent(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    profiles.import_csv(engine, write(tmp_path, MIXED), clock.now())
    with engine.begin() as conn:
        first = profiles.unsubscribe(conn, "jose@example.com", clock.now())
    clock.advance(clock.now() - clock.now().replace(hour=0))
    with engine.begin() as conn:
        again = profiles.unsubscribe(conn, "jose@example.com", clock.now())
    assert first.unsubscribed_at == again.unsubscribed_at


def test_unknown_customer_is_not_found(engine: Engine) -> None:
    with (
        engine.connect() as conn,
        pytest.raises(NotFound, match=r"no customer nobody@example\.com"),
    ):
        profiles.get(conn, "nobody@example.com")


SEARCHED = (
    "email,name,first_name\n"
    "maria@example.com,Мария Иванова,Мария\n"
    "georg@example.de,Georg Weiß,Georg\n"
    "fan_club@example.com,100% Arabica,Fans\n"
    "ivan@example.bg,Иван Петров,Ваньо\n"
)


def found(engine: Engine, search: str) -> list[str]:
    with engine.connect() as conn:
        return [c.email for c in profiles.find(conn, search=search)]


def assert_search_is_contains_in_any_case_and_script(engine: Engine) -> None:
    for typed in ("Мария", "мария", "МАРИЯ", "Иванова", "ИВАНОВА", "ванов", "MARIA@EXAMPLE"):
        assert found(engine, typed) == ["maria@example.com"], typed
    assert found(engine, "ВАНЬО") == ["ivan@example.bg"]  # noqa: RUF001  a given first name
    assert found(engine, "WEISS") == found(engine, "weiß") == ["georg@example.de"]
    assert found(engine, "ИВ") == ["ivan@example.bg", "maria@example.com"]  # two letters
    assert found(engine, "%") == ["fan_club@example.com"]  # a letter, not a wildcard
    assert found(engine, "n_c") == ["fan_club@example.com"]
    assert found(engine, "a_b") == found(engine, "%%") == []
    assert found(engine, "Ива\x00нова\t") == ["maria@example.com"]  # noqa: RUF001  controls
    assert len(found(engine, "\x00")) == 4  # nothing but control characters: no filter
    assert found(engine, "Иванова Мария") == []  # one field at a time, not across them


def test_customer_search_is_contains_in_any_case_and_script_and_takes_no_wildcards(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    profiles.import_csv(engine, write(tmp_path, SEARCHED), clock.now())
    assert_search_is_contains_in_any_case_and_script(engine)


def test_customer_search_folds_case_in_a_postgresql_database_that_folds_only_ascii(
    postgres: PostgresServer, tmp_path: Path, clock: ManualClock
) -> None:
    """A database created with the "C" ctype: its lower() leaves "МАРИЯ" as it is."""
    postgres.admin("CREATE DATABASE ascii_only TEMPLATE template0 LC_CTYPE 'C' LC_COLLATE 'C'")
    engine = db.connect(postgres.url("ascii_only"))
    migrate.upgrade(engine)
    profiles.import_csv(engine, write(tmp_path, SEARCHED), clock.now())
    assert_search_is_contains_in_any_case_and_script(engine)
    engine.dispose()


def test_a_renamed_customer_and_a_new_lead_are_found_by_their_new_names(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    profiles.import_csv(engine, write(tmp_path, SEARCHED), clock.now())
    renamed = "email,name\nmaria@example.com,Мария Петрова\n"
    profiles.import_csv(engine, write(tmp_path, renamed, "b.csv"), clock.now())
    with engine.begin() as conn:
        profiles.add_lead(conn, "elena@example.bg", "Елена Димитрова", clock.now())
    assert found(engine, "ПЕТРОВА") == ["maria@example.com"]
    assert found(engine, "иванова") == []
    assert found(engine, "ДИМИТРОВА") == ["elena@example.bg"]


def test_a_refused_header_is_named_without_its_escape_sequences(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    path = write(tmp_path, "email,\x1b[8mname,\x1b[8mName\nz@example.com,a,b\n")
    with pytest.raises(ImportFileError) as refused:
        profiles.import_csv(engine, path, clock.now())
    assert str(refused.value) == f"{path}: the header repeats column(s): \\x1b[8mname"
