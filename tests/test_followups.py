"""Follow-ups: due times in the agent's zone, the list, and the morning digest by email."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from mailer import daemon
from mailer.core.clock import ManualClock
from mailer.core.config import Config
from mailer.core.errors import MailerError, NotFound
from mailer.customers import followups
from mailer.customers.followups import Agent, NewFollowUp, digests_due, parse_due
from mailer.outbound.outbox import OUTBOX
from mailer.outbound.smtp import SmtpTarget
from mailer.scheduling.digests import Digests
from mailer.scheduling.scheduler import Scheduler, Schedules
from mailer.staff import users
from mailer.store.models import Role
from tests.conftest import FIRING, PASSWORD
from tests.smtp_sink import Sink, listening

SOFIA, MANILA = ZoneInfo("Europe/Sofia"), ZoneInfo("Asia/Manila")
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # 12:00 in Sofia, 18:00 in Manila


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", NOW + timedelta(days=3)),
        ("1h30m", NOW + timedelta(hours=1, minutes=30)),
        ("2026-12-24 15:00", datetime(2026, 12, 24, 13, 0, tzinfo=UTC)),
        ("2026-12-24T15:00+00:00", datetime(2026, 12, 24, 15, 0, tzinfo=UTC)),
        ("2026-12-24", datetime(2026, 12, 24, 7, 0, tzinfo=UTC)),  # 09:00 in Sofia
    ],
)
def test_a_due_time_is_a_duration_from_now_or_a_time_in_the_agents_zone(
    text: str, expected: datetime
) -> None:
    assert parse_due(text, NOW, SOFIA) == expected


@pytest.mark.parametrize("text", ["soon", "3 days", "2026-13-01", ""])
def test_a_due_time_that_is_neither_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="is not a due time; write a duration"):
        parse_due(text, NOW, SOFIA)


def test_a_time_the_clocks_skip_is_refused_and_one_they_repeat_is_the_first() -> None:
    """03:30 on 28 March 2027 never shows on Sofia's clocks (03:00 becomes 04:00): taken
    as 04:30, a meeting's invitation would tell the customer another time than was meant."""
    with pytest.raises(ValueError, match=r"^'2027-03-28 03:30' is a time Europe/Sofia's clocks"):
        parse_due("2027-03-28 03:30", NOW, SOFIA)
    assert parse_due("2027-03-28 04:30", NOW, SOFIA) == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    # 03:30 on 31 October 2027 shows twice (04:00 goes back to 03:00): the first
    assert parse_due("2027-10-31 03:30", NOW, SOFIA) == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)


def _agent(name: str, zone: ZoneInfo, email: str | None = "x@example.com") -> Agent:
    return Agent(name=name, display_name=name.title(), zone=zone, email=email)


def test_a_digest_goes_after_eight_in_the_agents_zone_only_with_something_due_today() -> None:
    sofia, manila = _agent("sam", SOFIA), _agent("rio", MANILA)
    at_seven_sofia = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)  # 07:00 Sofia, 13:00 Manila
    due = {"sam": at_seven_sofia + timedelta(hours=3), "rio": at_seven_sofia}
    owed = digests_due([sofia, manila], due, at_seven_sofia, time(8))
    assert [(d.agent.name, d.day.isoformat()) for d in owed] == [("rio", "2026-12-02")]
    an_hour_later = digests_due([sofia, manila], due, at_seven_sofia + timedelta(hours=1), time(8))
    assert [d.agent.name for d in an_hour_later] == ["sam", "rio"]


def test_no_digest_without_an_address_or_with_nothing_due_before_local_midnight() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # 12:00 Sofia, 18:00 Manila
    tomorrow_in_manila = datetime(2026, 12, 2, 16, 30, tzinfo=UTC)  # 00:30 on the 3rd there
    staff = [_agent("sam", SOFIA, None), _agent("rio", MANILA), _agent("ida", SOFIA)]
    due = {"sam": now, "rio": tomorrow_in_manila, "ida": tomorrow_in_manila}
    assert [d.agent.name for d in digests_due(staff, due, now, time(8))] == ["ida"]


def test_one_digest_per_agent_and_local_day_by_its_dedupe_key() -> None:
    late_evening = datetime(2026, 12, 2, 21, 0, tzinfo=UTC)  # 23:00 Sofia, 05:00 Manila on the 3rd
    staff = [_agent("sam", SOFIA), _agent("rio", MANILA)]
    (owed,) = digests_due(staff, {"sam": NOW, "rio": NOW}, late_evening, time(8))
    assert owed.dedupe_key == "followups-digest:sam:2026-12-02"


@pytest.fixture
def agents(engine: Engine, clock: ManualClock, people: None) -> None:
    """sam in Sofia and rio in Manila, both with addresses; ada with none."""
    with engine.begin() as conn:
        for name, zone, email in (
            ("sam", "Europe/Sofia", "sam@northwind.example"),
            ("rio", "Asia/Manila", "rio@northwind.example"),
            ("ada", "", ""),
        ):
            users.add(conn, name, Role.SUPPORT, PASSWORD, clock.now(), timezone=zone, email=email)


def _add(engine: Engine, clock: ManualClock, email: str, due: str, assignee: str | None) -> int:
    with engine.begin() as conn:
        due_at = followups.due_for(conn, due, assignee, clock.now(), SOFIA)
        new = NewFollowUp(
            customer_id=followups.customer_id(conn, email),
            due_at=due_at,
            note=f"call {email}",
            created_by="t",
            assignee=assignee,
        )
        return followups.add(conn, new, clock.now())


def test_follow_ups_are_listed_soonest_first_snoozed_and_done(
    engine: Engine, clock: ManualClock, agents: None
) -> None:
    later = _add(engine, clock, "maria@example.bg", "3d", "sam")
    sooner = _add(engine, clock, "Jose@Example.ph", "2026-11-25 10:00", "rio")  # Manila time
    with engine.begin() as conn:
        rows = followups.find(conn)
        assert [r["id"] for r in rows] == [sooner, later]
        assert rows[0]["due_at"] == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
        clock.advance(timedelta(days=2))
        assert followups.overdue_count(conn, "rio", clock.now()) == 1
        followups.snooze(conn, sooner, timedelta(days=1), clock.now())
        assert followups.overdue_count(conn, "rio", clock.now()) == 0
        followups.reassign(conn, sooner, "sam")
        followups.done(conn, later, "sam", clock.now())
        (left,) = followups.find(conn, assignee="sam")
        assert (left["id"], left["snoozed"]) == (sooner, 1)
        with pytest.raises(NotFound, match=f"no open follow-up {later}"):
            followups.done(conn, later, "sam", clock.now())


def test_unknown_customer_assignee_or_due_is_one_clear_error(
    engine: Engine, clock: ManualClock, agents: None
) -> None:
    with pytest.raises(NotFound, match=r"no customer with the address 'who@example\.com'"):
        _add(engine, clock, "who@example.com", "3d", None)
    with pytest.raises(NotFound, match="no staff user named 'zed'"):
        _add(engine, clock, "maria@example.bg", "3d", "zed")
    with pytest.raises(MailerError, match="due: 'tomorrow' is not a due time"):
        _add(engine, clock, "maria@example.bg", "tomorrow", None)


async def test_each_agent_gets_one_digest_at_eight_in_their_own_zone(
    engine: Engine, cfg: Config, clock: ManualClock, agents: None
) -> None:
    clock.set(datetime(2026, 12, 2, 0, 0, tzinfo=UTC))  # 02:00 Sofia, 08:00 Manila
    _add(engine, clock, "maria@example.bg", "2026-12-01 16:00", "sam")  # overdue in Sofia
    _add(engine, clock, "jose@example.ph", "2026-12-02 15:00", "rio")  # today in Manila
    _add(engine, clock, "siti@example.id", "2026-12-05", "rio")  # upcoming: not in it
    _add(engine, clock, "aroha@example.nz", "1h", "ada")  # no address: no digest
    digests = Digests.from_config(cfg, engine)
    sink = Sink()
    async with listening(sink) as port:
        delivery = daemon.build_delivery(
            cfg, engine, clock, SmtpTarget(host="127.0.0.1", port=port)
        )
        assert digests.tick(clock.now()) == 1  # rio's morning; sam's is six hours away
        assert digests.tick(clock.now() + timedelta(seconds=30)) == 0
        clock.advance(timedelta(hours=6))  # 08:00 in Sofia
        assert digests.tick(clock.now()) == 1
        clock.advance(timedelta(hours=3))  # a restart later that day sends nothing again
        assert Digests.from_config(cfg, engine).tick(clock.now()) == 0
        await delivery.deliver_due()
    by_recipient = {r.rcpt_tos[0]: r.message for r in sink.received}
    assert sorted(by_recipient) == ["rio@northwind.example", "sam@northwind.example"]
    rio = by_recipient["rio@northwind.example"]
    assert rio["Subject"] == "Your follow-ups for 2026-12-02: 0 overdue, 1 due today"
    text = rio.get_body(("plain",))
    assert text is not None
    assert "2026-12-02 15:00" in text.get_content() and "siti@" not in text.get_content()
    sam = by_recipient["sam@northwind.example"]
    assert sam["Subject"] == "Your follow-ups for 2026-12-02: 1 overdue, 0 due today"


async def test_the_daemons_clockwork_queues_the_digest_and_wakes_delivery(
    engine: Engine, cfg: Config, clock: ManualClock, agents: None, tmp_path: Path
) -> None:
    clock.set(datetime(2026, 12, 2, 6, 0, tzinfo=UTC))  # 08:00 in Sofia
    _add(engine, clock, "maria@example.bg", "1h", "sam")
    woken = asyncio.Event()
    nothing = Schedules(directory=tmp_path / "no-schedules", template_names=list, clock=clock)
    clockwork = Scheduler(
        schedules=nothing,
        engine=engine,
        clock=clock,
        firing=FIRING,
        on_queued=woken.set,
        digests=Digests.from_config(cfg, engine),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(clockwork.run(stop, asyncio.Event()))
    try:
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    with engine.connect() as conn:
        keys = conn.execute(select(OUTBOX.c.dedupe_key)).scalars().all()
    assert keys == ["followups-digest:sam:2026-12-02"]
