"""Schedules fired into the outbox at the right local time, once, on SQLite and PostgreSQL.

The clock is a ManualClock moved by the tests; ``fire_due`` is what the daemon's
APScheduler jobs call, so what it queues at a given instant is what customers receive.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailer.core.config import Config
from mailer.customers import profiles
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import firing
from mailer.scheduling.fanout import RUNS
from mailer.scheduling.firing import Firing
from mailer.scheduling.schedules import Audience, BirthdaySchedule, NewsletterSchedule, Schedule
from mailer.store.models import OutboxStatus
from tests.conftest import FIRING, PEOPLE


def monthly(**changes: Any) -> NewsletterSchedule:
    values: dict[str, Any] = {
        "template": "newsletter",
        "cron": "0 9 1 * *",
        "audience": Audience(tags_any=["newsletter"]),
        "valid_for": timedelta(days=3),
        "params": {"headline": "December"},
    }
    return NewsletterSchedule(**(values | changes))


def fire(engine: Engine, at: datetime, **schedules: Schedule) -> list[firing.RunResult]:
    return firing.fire_due(engine, schedules, at, FIRING)


def known_since(engine: Engine, at: datetime, *names: str) -> None:
    """mailer has fired these schedules since ``at``: what it misses after is caught up."""
    firing.first_seen(engine, list(names), at)


def queued(engine: Engine) -> dict[str, dict[str, Any]]:
    """The outbox by recipient."""
    with engine.connect() as conn:
        rows = conn.execute(select(OUTBOX)).mappings().all()
    return {row["to_address"]: dict(row) for row in rows}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_newsletter_fires_at_nine_local_in_every_customers_zone(
    engine: Engine, people: None
) -> None:
    # 09:00 on 1 December: Auckland (UTC+13) is first, Los Angeles (UTC-8) last.
    expected = {
        "aroha@example.nz": utc(2026, 11, 30, 20),
        "jose@example.ph": utc(2026, 12, 1, 1),
        "siti@example.id": utc(2026, 12, 1, 2),
        "maria@example.bg": utc(2026, 12, 1, 7),
        "ivan@example.bg": utc(2026, 12, 1, 7),  # no zone given: the business's, Sofia
        "dana@example.com": utc(2026, 12, 1, 17),
    }
    seen: dict[str, datetime] = {}
    moment = utc(2026, 11, 30, 19)
    while moment <= utc(2026, 12, 1, 18):  # the daemon would wake at each; step by the hour
        fire(engine, moment, newsletter=monthly())
        for address, row in queued(engine).items():
            seen.setdefault(address, moment)
            assert row["due_at"] == expected[address]
        moment += timedelta(hours=1)
    assert seen == expected  # each queued in the hour it became due, not before
    rows = queued(engine)
    assert rows["ivan@example.bg"]["status"] == OutboxStatus.SKIPPED
    assert rows["ivan@example.bg"]["reason"] == "no consent for marketing"
    assert all(r["valid_until"] == r["due_at"] + timedelta(days=3) for r in rows.values())
    assert {r["dedupe_key"] for r in rows.values()} >= {"newsletter:1:2026-12-01T09:00"}


def test_a_fixed_zone_newsletter_goes_to_everybody_at_one_instant(
    engine: Engine, people: None
) -> None:
    fire(engine, utc(2026, 12, 1, 7), news=monthly(timezone="Europe/Sofia"))
    rows = queued(engine)
    assert len(rows) == 6 and {r["due_at"] for r in rows.values()} == {utc(2026, 12, 1, 7)}


def test_firing_twice_or_after_a_restart_queues_once(engine: Engine, people: None) -> None:
    known_since(engine, utc(2026, 11, 1), "newsletter")
    first = fire(engine, utc(2026, 12, 1, 20), newsletter=monthly())
    again = fire(engine, utc(2026, 12, 1, 20), newsletter=monthly())
    later = fire(engine, utc(2026, 12, 2, 9), newsletter=monthly())
    assert sum(r.queued + r.skipped for r in first) == 6
    assert again == [] and later == []
    assert len(queued(engine)) == 6


def test_a_run_interrupted_half_way_is_finished_without_duplicates(
    engine: Engine, people: None
) -> None:
    """A crash after some ranges committed leaves the run 'running'; the next fire finishes it."""
    known_since(engine, utc(2026, 11, 1), "news")
    (result,) = fire(engine, utc(2026, 12, 1, 8), news=monthly(timezone="Europe/Sofia"))
    with engine.begin() as conn:
        conn.execute(RUNS.update().values(status="running"))
        conn.execute(OUTBOX.delete().where(OUTBOX.c.to_address.in_(["jose@example.ph"])))
    (again,) = fire(engine, utc(2026, 12, 1, 9), news=monthly(timezone="Europe/Sofia"))
    assert again.run_id == result.run_id and again.queued + again.skipped == 6
    assert len(queued(engine)) == 6


@pytest.mark.parametrize(
    ("down_until", "sent"),
    [(utc(2026, 12, 3, 6), True), (utc(2026, 12, 4, 8), False)],
    ids=["inside-valid_for", "outside-valid_for"],
)
def test_after_downtime_missed_runs_are_caught_up_only_inside_valid_for(
    engine: Engine, people: None, down_until: datetime, sent: bool
) -> None:
    """Down from 30 November to ``down_until``: Sofia's 09:00 on 1 December was missed."""
    known_since(engine, utc(2026, 11, 30), "news")
    fire(engine, down_until, news=monthly(timezone="Europe/Sofia"))
    rows = queued(engine)
    assert bool(rows) is sent
    if sent:
        assert rows["maria@example.bg"]["due_at"] == utc(2026, 12, 1, 7)


def test_the_dst_repeated_hour_fires_once_and_the_skipped_hour_an_hour_later(
    engine: Engine, people: None
) -> None:
    """Sofia: 03:30 happens twice on 25 October 2026 and not at all on 29 March 2026."""
    nightly = monthly(cron="30 3 * * *", timezone="Europe/Sofia", valid_for=timedelta(hours=20))
    known_since(engine, utc(2026, 1, 1), "night")
    runs = fire(engine, utc(2026, 10, 25, 12), night=nightly)
    assert [(r.occurrence, r.queued + r.skipped) for r in runs] == [("2026-10-25T03:30", 6)]
    assert queued(engine)["maria@example.bg"]["due_at"] == utc(2026, 10, 25, 0, 30)  # the first
    with engine.begin() as conn:
        conn.execute(OUTBOX.delete())
    runs = fire(engine, utc(2026, 3, 29, 12), night=nightly)
    assert [r.occurrence for r in runs] == ["2026-03-29T03:30"]
    assert queued(engine)["maria@example.bg"]["due_at"] == utc(2026, 3, 29, 1, 30)  # 04:30 EEST


def birthdays(**changes: Any) -> BirthdaySchedule:
    return BirthdaySchedule(
        **({"template": "birthday", "valid_for": timedelta(hours=12)} | changes)
    )


@pytest.mark.parametrize(
    ("at", "greeted"),
    [
        # 2027 is a common year: Мария (29 Feb) is greeted on 28 Feb with the default feb28.
        (utc(2027, 2, 28, 7), {"maria@example.bg", "ivan@example.bg"}),
        # 2028 is a leap year: on 28 Feb only the 28 Feb birthdays, Мария on the 29th.
        (utc(2028, 2, 28, 7), {"ivan@example.bg"}),
        (utc(2028, 2, 29, 7), {"maria@example.bg"}),
    ],
    ids=["common-year", "leap-year-28th", "leap-year-29th"],
)
def test_birthdays_on_29_february(
    engine: Engine, people: None, at: datetime, greeted: set[str]
) -> None:
    fire(engine, at, birthdays=birthdays())
    assert in_sofia_at(engine, at) == greeted


def in_sofia_at(engine: Engine, at: datetime) -> set[str]:
    return {a for a, r in queued(engine).items() if r["due_at"] == at}


def test_feb29_can_fall_on_the_first_of_march(engine: Engine, people: None) -> None:
    fire(engine, utc(2027, 2, 28, 7), birthdays=birthdays(feb29="mar1"))
    assert in_sofia_at(engine, utc(2027, 2, 28, 7)) == {"ivan@example.bg"}
    fire(engine, utc(2027, 3, 1, 7), birthdays=birthdays(feb29="mar1"))
    assert in_sofia_at(engine, utc(2027, 3, 1, 7)) == {"maria@example.bg"}
    assert queued(engine)["maria@example.bg"]["dedupe_key"].endswith(":2027-03-01")


def test_birthdays_follow_each_customers_own_midnight(engine: Engine, people: None) -> None:
    """At 20:00 UTC on 27 February it is 09:00 on the 28th in Auckland but 12:00 on the 27th
    in Los Angeles: Aroha (28 Feb) is greeted, and Dana (27 Feb) was at 17:00 UTC."""
    known_since(engine, utc(2027, 1, 1), "birthdays")
    results = fire(engine, utc(2027, 2, 27, 20), birthdays=birthdays())
    rows = queued(engine)
    assert set(rows) == {"aroha@example.nz", "dana@example.com"}
    assert rows["aroha@example.nz"]["due_at"] == utc(2027, 2, 27, 20)
    assert rows["dana@example.com"]["due_at"] == utc(2027, 2, 27, 17)
    assert rows["aroha@example.nz"]["category"] == "relationship"
    assert {(r.occurrence, r.zone) for r in results if r.queued} == {
        ("2027-02-28", "Pacific/Auckland"),
        ("2027-02-27", "America/Los_Angeles"),
    }


def test_customers_who_opted_out_of_relationship_mail_get_no_greeting(
    engine: Engine, people: None
) -> None:
    with engine.begin() as conn:
        profiles.unsubscribe(conn, "aroha@example.nz", utc(2027, 1, 1))
    fire(engine, utc(2027, 2, 27, 20), birthdays=birthdays())
    aroha = queued(engine)["aroha@example.nz"]
    assert aroha["status"] == OutboxStatus.SKIPPED and aroha["reason"] == "unsubscribed"


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        (Audience(tags_all=["newsletter", "vip"]), {"jose@example.ph"}),
        (
            Audience(tags_any=["newsletter"], exclude_tags=["vip"]),
            set(PEOPLE) - {"jose@example.ph", "nobody@example.com"},
        ),
        (Audience(locales=["bg"]), {"maria@example.bg", "ivan@example.bg"}),
        (Audience(locales=["en"]), {"aroha@example.nz", "dana@example.com", "nobody@example.com"}),
        (Audience(fields={"city": "Jakarta"}), {"siti@example.id"}),
    ],
    ids=["tags-all", "exclude", "language", "language-variants", "custom-field"],
)
def test_audiences_are_chosen_by_tags_language_and_custom_fields(
    engine: Engine, people: None, chosen: Audience, expected: set[str]
) -> None:
    fire(engine, utc(2026, 12, 1, 7), news=monthly(timezone="Europe/Sofia", audience=chosen))
    assert set(queued(engine)) == expected


def test_the_zones_in_use_include_the_business_zone_for_customers_without_one(
    engine: Engine, people: None, cfg: Config
) -> None:
    assert set(firing.customer_zones(engine, Firing.from_config(cfg).fallback_zone)) == {
        "Pacific/Auckland",
        "Europe/Sofia",
        "Asia/Jakarta",
        "Asia/Manila",
        "America/Los_Angeles",
    }


def test_an_edited_time_is_not_caught_up_before_the_edit(engine: Engine, people: None) -> None:
    """The newsletter went at 09:00 in Sofia; at noon marketing moves it to 10:00. Today's
    10:00 is past and its old version already covered the day: nothing goes twice."""
    sofia = monthly(timezone="Europe/Sofia")
    known_since(engine, utc(2026, 11, 1), "news")
    fire(engine, utc(2026, 12, 1, 7, 30), news=sofia)
    moved = monthly(timezone="Europe/Sofia", cron="0 10 1 * *")
    noon = utc(2026, 12, 1, 10)
    assert firing.fire_due(engine, {"news": moved}, noon, FIRING, edited={"news": noon}) == []
    assert len(firing.fire_due(engine, {"news": moved}, noon, FIRING)) == 1, "without the edit"


def test_a_fresh_install_does_not_send_what_was_planned_before_it(
    engine: Engine, people: None
) -> None:
    """Installed at 02:37 in Sofia on 2 December: yesterday's 09:00 newsletter and Jose's
    birthday greeting (1 December in Manila) are history, not downtime. Once mailer knows
    the schedules, a restart catches up what it missed while down."""
    news, greetings = monthly(timezone="Europe/Sofia"), birthdays(valid_for=timedelta(days=1))
    assert fire(engine, utc(2026, 12, 2, 0, 37), news=news, birthdays=greetings) == []
    assert queued(engine) == {}
    # down from 31 December until 1 January, 12:00 in Sofia: 09:00 was missed
    runs = fire(engine, utc(2027, 1, 1, 10), news=news, birthdays=greetings)
    assert {(r.schedule, r.occurrence) for r in runs if r.queued} == {("news", "2027-01-01T09:00")}


def test_a_schedule_file_added_after_its_time_starts_from_when_it_was_added(
    engine: Engine, people: None
) -> None:
    """The newsletter file is saved at noon on the 1st in Sofia: 09:00 that day is not sent,
    at that wake-up or any later one; next month's is."""
    sofia = monthly(timezone="Europe/Sofia")
    assert fire(engine, utc(2026, 12, 1, 10), news=sofia) == []
    assert fire(engine, utc(2026, 12, 2, 10), news=sofia) == []
    (run,) = fire(engine, utc(2027, 1, 1, 7), news=sofia)
    assert run.occurrence == "2027-01-01T09:00"


def test_a_dry_run_does_not_count_as_seeing_a_schedule(engine: Engine, people: None) -> None:
    """A look on Monday with a dry run must not make Thursday's first start catch up the
    newsletter of Tuesday the 1st."""
    monday = utc(2026, 11, 30)
    assert firing.first_seen(engine, ["news"], monday, record=False) == {"news": monday}
    assert fire(engine, utc(2026, 12, 3, 12), news=monthly(timezone="Europe/Sofia")) == []


def test_a_schedule_counts_from_when_it_is_first_seen_enabled(engine: Engine, people: None) -> None:
    """Prepared in November with enabled = false, switched on while mailer was down on the
    1st: the 09:00 of that morning is not sent when mailer starts again at noon."""
    fire(engine, utc(2026, 11, 20), news=monthly(timezone="Europe/Sofia", enabled=False))
    assert fire(engine, utc(2026, 12, 1, 10), news=monthly(timezone="Europe/Sofia")) == []
