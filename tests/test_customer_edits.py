"""Editing a customer: the form is checked as an import checks a row, each change is one
entry in the customer's history with who made it, and imports leave their changes there too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from mailer.core.clock import ManualClock
from mailer.core.errors import AddressTaken, InvalidInput
from mailer.customers import edits, profiles
from mailer.customers.edits import Change
from mailer.relationship import privacy
from tests.conftest import add_customers

SOFIA = ZoneInfo("Europe/Sofia")
FORM = {
    "email": "Maria@Example.bg",
    "name": "Мария Иванова",
    "first_name": "",
    "locale": "bg_BG",
    "timezone": "Europe/Sofia",
    "birthday": "--02-29",
    "marketing_consent": "on",
    "tags": "vip; newsletter",
    "pause_until": "2026-12-24T09:00",
    "caps.marketing.per_week": "1",
    "field.city": "София",
    "field.loyalty_code": "",
    "new_field_name": "Favourite Roast",
    "new_field_value": "  Yirgacheffe ",
}


def problems(form: dict[str, str]) -> dict[str, str]:
    with pytest.raises(InvalidInput) as raised:
        edits.read_form(form, SOFIA)
    return {p.where: p.message for p in raised.value.problems}


# The form, checked (pure) ------------------------------------------------------------------


def test_a_form_becomes_columns_as_an_import_would_store_them() -> None:
    values = edits.read_form(FORM, SOFIA)
    assert values == {
        "email": "maria@example.bg",
        "name": "Мария Иванова",
        "first_name": "Мария",  # filled in from the name, as an import does
        "locale": "bg-BG",
        "timezone": "Europe/Sofia",
        "birth_month": 2,
        "birth_day": 29,
        "birth_year": None,
        "marketing_consent": True,
        "relationship_consent": False,  # an unticked box
        "pause_until": datetime(2026, 12, 24, 9, 0, tzinfo=SOFIA),
        "caps_override": {"marketing": {"per_week": 1}},
        "fields": {"city": "София", "favourite_roast": "Yirgacheffe"},  # an emptied one is gone
        "tags": ("newsletter", "vip"),
    }


def test_every_bad_input_is_named_with_the_reason_an_import_gives() -> None:
    bad = {
        **FORM,
        "email": "maria@",
        "locale": "xx-QQ-zz",
        "timezone": "EST",
        "birthday": "31.02.1990",
        "pause_until": "next week",
        "caps.relationship.per_day": "-1",
        "new_field_name": "E-Mail",
    }
    found = problems(bad)
    assert sorted(found) == [
        "birthday",
        "caps.relationship.per_day",
        "email",
        "locale",
        "new_field_name",
        "pause_until",
        "timezone",
    ]
    assert "is not a valid email address" in found["email"]
    assert found["timezone"] == "'EST' is not an IANA time zone such as 'Europe/Sofia' or 'UTC'"
    assert found["birthday"].startswith("birthday '31.02.1990' is not a date")
    assert found["new_field_name"] == "'email' is a column of its own, not a custom field"
    assert problems({**FORM, "email": " "}) == {"email": "no email address"}
    assert problems({**FORM, "pause_until": "0001-01-01T00:00"}) == {
        "pause_until": "'0001-01-01T00:00' is not between the years 1900 and 2999"
    }
    too_long = problems({**FORM, "name": "Я" * 201, "tags": "vip, " + "t" * 101})
    assert too_long == {
        "name": "longer than 200 characters",  # what would not fit its column
        "tags": "a tag is longer than 100 characters",
    }


def test_empty_inputs_clear_their_values() -> None:
    values = edits.read_form({"email": "a@example.bg"}, SOFIA)
    assert values["locale"] is values["pause_until"] is values["caps_override"] is None
    assert (values["name"], values["tags"], values["fields"]) == ("", (), {})


# The diff (pure) ----------------------------------------------------------------------------


def columns(**changed: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": "maria@example.bg",
        "name": "Мария",
        "first_name": "Мария",
        "locale": "bg",
        "timezone": None,
        "birth_month": 4,
        "birth_day": 17,
        "birth_year": 1990,
        "marketing_consent": True,
        "relationship_consent": True,
        "pause_until": None,
        "caps_override": None,
        "fields": {"city": "София"},
    }
    return {**base, **changed}


def test_the_diff_names_each_changed_field_with_json_values_before_and_after() -> None:
    pause = datetime(2026, 12, 24, 9, 0, tzinfo=SOFIA)
    before = edits.record(columns(), ["vip"])
    after = edits.record(
        columns(birth_year=None, pause_until=pause, fields={"code": "ZK-1"}), ["newsletter", "vip"]
    )
    assert edits.diff(before, after) == [
        Change("birthday", "1990-04-17", "--04-17"),
        Change("pause_until", None, "2026-12-24T07:00:00+00:00"),  # kept in UTC
        Change("tags", ["vip"], ["newsletter", "vip"]),
        Change("fields.city", "София", None),
        Change("fields.code", None, "ZK-1"),
    ]


def test_the_same_instant_in_another_zone_and_unchanged_values_are_no_change() -> None:
    pause = datetime(2026, 12, 24, 7, 0, tzinfo=UTC)
    before = edits.record(columns(pause_until=pause), ["vip"])
    after = edits.record(columns(pause_until=pause.astimezone(SOFIA)), ("vip",))
    assert edits.diff(before, after) == []


# Stored, with who and when ------------------------------------------------------------------

CSV = "email,name,tags,city\nmaria@example.bg,Мария,vip,София\nivan@example.bg,Иван,,Пловдив\n"


@pytest.fixture
def maria(engine: Engine, tmp_path: Path, clock: ManualClock) -> int:
    add_customers(engine, tmp_path, CSV, clock.now())
    with engine.connect() as conn:
        return profiles.get(conn, "maria@example.bg").id


def test_an_edit_is_stored_and_each_change_recorded_with_who_and_when(
    engine: Engine, clock: ManualClock, maria: int
) -> None:
    clock.advance(timedelta(hours=1))
    with engine.begin() as conn:
        changes = profiles.edit(conn, maria, edits.read_form(FORM, SOFIA), "sam", clock.now())
        again = profiles.edit(conn, maria, edits.read_form(FORM, SOFIA), "sam", clock.now())
    with engine.connect() as conn:
        stored = profiles.get_id(conn, maria)
        logged = profiles.history(conn, maria)
        assert profiles.find(conn, search="мария иванова")[0].id == maria
    assert again == []  # saving the same form twice records nothing more
    assert stored.tags == ("newsletter", "vip") and stored.locale == "bg-BG"
    assert stored.pause_until == datetime(2026, 12, 24, 7, 0, tzinfo=UTC)
    assert {(e.actor, e.at, e.field) for e in logged} == {
        ("sam", clock.now(), c.field) for c in changes
    }
    assert [c.field for c in changes] == [
        "name",  # the first name was already Мария
        "locale",
        "timezone",
        "birthday",
        "relationship_consent",
        "pause_until",
        "caps_override",
        "tags",
        "fields.favourite_roast",
    ]


def test_another_customers_address_is_refused_by_name_and_nothing_is_saved(
    engine: Engine, clock: ManualClock, maria: int
) -> None:
    taken = {**FORM, "email": "IVAN@example.bg"}
    with engine.begin() as conn, pytest.raises(AddressTaken, match=r"customer #\d+ \(Иван\)"):
        profiles.edit(conn, maria, edits.read_form(taken, SOFIA), "sam", clock.now())
    with engine.connect() as conn:
        assert profiles.get_id(conn, maria).name == "Мария"
        assert profiles.history(conn, maria) == []


def test_an_import_records_what_it_changed_as_the_file(
    engine: Engine, tmp_path: Path, clock: ManualClock, maria: int
) -> None:
    clock.advance(timedelta(days=1))
    path = tmp_path / "spring.csv"
    path.write_text("email,name,tags,city\nmaria@example.bg,Мария,vip;newsletter,Варна\n")
    profiles.import_csv(engine, path, clock.now())
    with engine.connect() as conn:
        logged = profiles.history(conn, maria)
    assert [(e.actor, e.field, e.before, e.after) for e in logged] == [
        ("import:spring.csv", "tags", ["vip"], ["newsletter", "vip"]),
        ("import:spring.csv", "fields.city", "София", "Варна"),
    ]


def test_erasure_keeps_who_changed_what_and_when_but_not_the_values(
    engine: Engine, clock: ManualClock, maria: int
) -> None:
    with engine.begin() as conn:
        profiles.edit(conn, maria, edits.read_form(FORM, SOFIA), "sam", clock.now())
        privacy.erase(conn, "maria@example.bg", clock.now())
        logged = profiles.history(conn, maria)
    assert logged and all(e.before is None and e.after is None for e in logged)
    assert {e.actor for e in logged} == {"sam"}
