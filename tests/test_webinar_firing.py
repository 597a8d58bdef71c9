"""A webinar from invitation to reminders, update and cancellation, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mailer.core import jsonvalues
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import firing, webinars
from mailer.scheduling.schedules import Audience, WebinarSchedule
from mailer.store.models import OutboxStatus
from tests.conftest import FIRING

STARTS = datetime(2027, 5, 20, 13, 0, tzinfo=UTC)  # 16:00 in Sofia
INVITE = STARTS - timedelta(days=14)


def webinar(**changes: Any) -> WebinarSchedule:
    values: dict[str, Any] = {
        "template": "webinar_invite",
        "reminder_template": "webinar_reminder",
        "title": "Spring roasting",
        "starts_at": STARTS,
        "duration": timedelta(minutes=90),
        "join_url": "https://meet.example/spring",
        "organizer": "events@northwind-roasters.example",
        "organizer_name": "Northwind Events",
        "invite_at": INVITE,
        "reminders": [timedelta(days=1), timedelta(hours=1)],
        "valid_for": timedelta(hours=6),
        "priority": 15,
        "audience": Audience(tags_any=["newsletter"]),
    }
    return WebinarSchedule(**(values | changes))


def fire(engine: Engine, at: datetime, schedule: WebinarSchedule) -> list[firing.RunResult]:
    return firing.fire_due(engine, {"spring": schedule}, at, FIRING)


def rows(engine: Engine, step: str | None = None) -> dict[str, dict[str, Any]]:
    """Outbox rows by recipient, of one step ("invite", "reminder-1d", ...) if given."""
    with engine.connect() as conn:
        found = conn.execute(select(OUTBOX)).mappings().all()
    return {
        r["to_address"]: dict(r, context=jsonvalues.decode(r["context"]))
        for r in found
        if step is None or r["dedupe_key"].endswith(f":{step}")
    }


def mark_sent(engine: Engine, *addresses: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            OUTBOX.update()
            .where(OUTBOX.c.to_address.in_(addresses), OUTBOX.c.status == OutboxStatus.QUEUED)
            .values(status=OutboxStatus.SENT)
        )


@pytest.mark.usefixtures("people")
def test_invitations_go_at_invite_at_with_the_event_and_never_before(engine: Engine) -> None:
    assert fire(engine, INVITE - timedelta(minutes=1), webinar()) == []
    (run,) = fire(engine, INVITE + timedelta(minutes=1), webinar())
    invites = rows(engine, "invite")
    assert run.occurrence == "invite" and run.queued == 5 and run.skipped == 1  # ivan: no consent
    maria = invites["maria@example.bg"]
    assert maria["template"] == "webinar_invite" and maria["priority"] == 15
    assert maria["due_at"] == INVITE and maria["category"] == "marketing"
    calendar = maria["context"]["calendar"]
    assert calendar["method"] == "REQUEST" and calendar["sequence"] == 0
    assert calendar["uid"] == "webinar-spring@northwind-roasters.example"
    assert calendar["starts_at"] == STARTS and calendar["ends_at"] == STARTS + timedelta(minutes=90)
    assert maria["context"]["webinar"]["changed"] is False


@pytest.mark.usefixtures("people")
def test_reminders_go_only_to_those_invited(engine: Engine) -> None:
    fire(engine, INVITE, webinar())
    mark_sent(engine, "maria@example.bg", "siti@example.id")  # the others still waiting
    (run,) = fire(engine, STARTS - timedelta(days=1), webinar())
    reminders = rows(engine, "reminder-1d")
    assert run.occurrence == "reminder-1d"
    assert set(reminders) == {"maria@example.bg", "siti@example.id"}
    assert reminders["siti@example.id"]["template"] == "webinar_reminder"
    assert "calendar" not in reminders["siti@example.id"]["context"]
    assert reminders["siti@example.id"]["valid_until"] <= STARTS


@pytest.mark.usefixtures("people")
def test_a_new_time_sends_an_update_with_a_higher_sequence_to_the_invited(
    engine: Engine,
) -> None:
    fire(engine, INVITE, webinar())
    mark_sent(engine, "maria@example.bg")
    later = webinar(starts_at=STARTS + timedelta(hours=2))
    (run,) = fire(engine, INVITE + timedelta(days=1), later)
    assert run.occurrence == "update-1"
    updates = rows(engine, "update-1")
    # sent and still-waiting invitations both get the update; the waiting ones are withdrawn
    assert set(updates) == {
        r for r, v in rows(engine, "invite").items() if v["reason"] != "no consent for marketing"
    }
    maria = updates["maria@example.bg"]["context"]
    assert maria["calendar"]["sequence"] == 1 and maria["calendar"]["method"] == "REQUEST"
    assert maria["calendar"]["starts_at"] == STARTS + timedelta(hours=2)
    assert maria["webinar"]["changed"] is True
    siti_invite = rows(engine, "invite")["siti@example.id"]
    assert siti_invite["status"] == OutboxStatus.SKIPPED
    assert siti_invite["reason"] == "superseded by update-1"
    assert fire(engine, INVITE + timedelta(days=2), later) == [], "one update per change"


@pytest.mark.usefixtures("people")
def test_cancelling_sends_method_cancel_to_the_invited_and_withdraws_the_rest(
    engine: Engine,
) -> None:
    fire(engine, INVITE, webinar())
    mark_sent(engine, "maria@example.bg")
    (run,) = fire(engine, INVITE + timedelta(days=1), webinar(cancelled=True))
    cancels = rows(engine, "cancel")
    assert run.occurrence == "cancel" and set(cancels) == {"maria@example.bg"}
    calendar = cancels["maria@example.bg"]["context"]["calendar"]
    assert calendar["method"] == "CANCEL" and calendar["sequence"] == 1
    assert cancels["maria@example.bg"]["template"] == "webinar_cancel"
    waiting = rows(engine, "invite")["siti@example.id"]
    assert (waiting["status"], waiting["reason"]) == (OutboxStatus.SKIPPED, "webinar cancelled")
    assert fire(engine, STARTS - timedelta(days=1), webinar(cancelled=True)) == []


@pytest.mark.usefixtures("people")
def test_nothing_is_sent_once_the_webinar_has_started(engine: Engine) -> None:
    """Down from before the invitation until after the start: nothing is caught up."""
    firing.first_seen(engine, ["spring"], INVITE - timedelta(days=1))
    late = webinar(valid_for=timedelta(days=30))
    assert fire(engine, STARTS + timedelta(minutes=1), late) == []
    assert fire(engine, STARTS - timedelta(minutes=30), late)
    assert all(r["valid_until"] <= STARTS for r in rows(engine).values())


@pytest.mark.usefixtures("people")
def test_a_webinar_moved_after_its_reminder_gets_the_reminder_again_for_the_new_time(
    engine: Engine,
) -> None:
    fire(engine, INVITE, webinar())
    mark_sent(engine, "maria@example.bg")
    fire(engine, STARTS - timedelta(days=1), webinar())
    mark_sent(engine, "maria@example.bg")
    later = webinar(starts_at=STARTS + timedelta(days=2))
    fire(engine, STARTS - timedelta(hours=20), later)  # the update goes out
    mark_sent(engine, "maria@example.bg")
    (run,) = fire(engine, STARTS + timedelta(days=1), later)
    assert run.occurrence == "reminder-1d@1"
    reminder = rows(engine, "reminder-1d@1")["maria@example.bg"]
    assert reminder["context"]["webinar"]["starts_at"] == STARTS + timedelta(days=2)


@pytest.mark.usefixtures("people")
def test_a_dry_run_shows_the_update_but_keeps_nothing(engine: Engine) -> None:
    fire(engine, INVITE, webinar())
    later = webinar(starts_at=STARTS + timedelta(hours=2))
    moment = INVITE + timedelta(days=1)
    zones = firing.customer_zones(engine, FIRING.fallback_zone)
    plans = firing.due_plans(engine, "spring", later, moment, FIRING, zones, dry_run=True)
    assert [p.occurrence.key for p in plans] == ["update-1"]
    with engine.connect() as conn:
        assert conn.execute(select(webinars.WEBINAR_EVENTS.c.sequence)).scalar_one() == 0
    (run,) = fire(engine, moment, later)
    assert run.occurrence == "update-1"
