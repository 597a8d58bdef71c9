"""The daemon's clockwork: files reloaded without a restart, one trigger per zone, catch-up."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from mailer.core.clock import ManualClock
from mailer.outbound.outbox import OUTBOX
from mailer.scheduling import firing
from mailer.scheduling.scheduler import Scheduler, Schedules
from tests.configs import ROOT
from tests.conftest import FIRING, PEOPLE

TEMPLATES = ["birthday", "newsletter", "webinar_cancel", "webinar_invite", "webinar_reminder"]
NEWSLETTER = """\
kind = "newsletter"
template = "newsletter"
cron = "0 9 1 * *"
valid_for = "3d"
[audience]
tags_any = ["newsletter"]
[params]
headline = "{headline}"
"""
EVENT_SECONDS = 10.0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "schedules").mkdir()
    return tmp_path / "schedules"


@pytest.fixture
def files(folder: Path) -> Schedules:
    clock = ManualClock(datetime(2026, 11, 24, 12, tzinfo=UTC))
    return Schedules(directory=folder, template_names=lambda: TEMPLATES, clock=clock)


def write(path: Path, text: str, mtime: float) -> None:
    """Write and set the modification time: a quick edit can share the same second."""
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))


def test_an_edited_file_is_reloaded(files: Schedules, folder: Path) -> None:
    write(folder / "news.toml", NEWSLETTER.format(headline="November"), 1_000)
    assert files.reload() == [] and files.loaded["news"].params == {"headline": "November"}
    assert not files.changed()
    write(folder / "news.toml", NEWSLETTER.format(headline="December"), 2_000)
    assert files.changed()
    files.reload()
    assert files.loaded["news"].params == {"headline": "December"}


def test_a_broken_file_is_reported_and_its_last_good_version_keeps_running(
    files: Schedules, folder: Path
) -> None:
    write(folder / "news.toml", NEWSLETTER.format(headline="November"), 1_000)
    files.reload()
    write(folder / "news.toml", NEWSLETTER.replace("0 9 1 * *", "0 9 31 2 *"), 2_000)
    (problem,) = files.reload()
    assert problem.where.endswith("news.toml: cron") and "never fires" in problem.message
    assert files.loaded["news"].params == {"headline": "November"}
    assert files.problems == {"news": [problem]}


def test_a_new_broken_file_runs_nothing_and_a_removed_file_stops(
    files: Schedules, folder: Path
) -> None:
    write(folder / "news.toml", NEWSLETTER.format(headline="November"), 1_000)
    write(folder / "typo.toml", 'kind = "newsleter"\n', 1_000)
    assert len(files.reload()) == 1 and set(files.loaded) == {"news"}
    (folder / "news.toml").unlink()
    assert files.changed()
    files.reload()
    assert files.loaded == {}


@pytest.fixture
def shipped(engine: Engine, people: None) -> Iterator[Scheduler]:
    clock = ManualClock(datetime(2026, 12, 1, 7, 30, tzinfo=UTC))  # 09:30 in Sofia
    templates = sorted(p.name for p in (ROOT / "templates").iterdir() if p.name[0] != "_")
    files = Schedules(directory=ROOT / "schedules", template_names=lambda: templates, clock=clock)
    yield Scheduler(schedules=files, engine=engine, clock=clock, firing=FIRING)


def test_one_trigger_per_zone_in_use_each_at_local_time(shipped: Scheduler) -> None:
    shipped.schedules.reload()
    zones = sorted({z for row in PEOPLE.values() if (z := row.split(",")[2])} | {"Europe/Sofia"})
    triggers = shipped.triggers(zones)
    assert {t for t in triggers if t.startswith("newsletter@")} == {
        f"newsletter@{zone}" for zone in zones
    }
    assert set(triggers) >= {"birthdays@Asia/Manila", "webinar-spring-roasting@next"}
    after = datetime(2026, 11, 24, 12, tzinfo=UTC)
    for zone in zones:
        fire = triggers[f"newsletter@{zone}"].get_next_fire_time(None, after)
        assert fire is not None
        local = fire.astimezone(ZoneInfo(zone))
        assert (local.day, local.hour, local.minute) == (1, 9, 0)


async def test_the_daemons_clockwork_catches_up_at_start_and_reloads_on_request(
    shipped: Scheduler, engine: Engine
) -> None:
    """mailer ran in November and was down over 09:00 on 1 December: at 09:30 in Sofia the
    newsletter is due for Sofia and the zones east of it; Los Angeles is not. The reload
    event is what SIGHUP sets."""
    firing.first_seen(engine, ["newsletter"], datetime(2026, 11, 30, tzinfo=UTC))
    stop, reload = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(shipped.run(stop, reload))
    due = {"aroha@example.nz", "jose@example.ph", "siti@example.id", "maria@example.bg"}
    due.add("ivan@example.bg")  # written as skipped (no marketing consent): still a row
    try:
        for _ in range(int(EVENT_SECONDS / 0.05)):  # bounded: the first firing runs in a thread
            if _recipients(engine) == due and shipped.next_runs():
                break
            await asyncio.sleep(0.05)
        first = _recipients(engine)
        assert first == due, "Los Angeles (dana) is not due yet"
        assert "newsletter@America/Los_Angeles" in shipped.next_runs()
        reload.set()
        for _ in range(int(EVENT_SECONDS / 0.05)):
            if not reload.is_set():
                break
            await asyncio.sleep(0.05)
        assert not reload.is_set(), "the reload request was taken"
        assert _recipients(engine) == first, "reloading sends nothing twice"
    finally:
        stop.set()
        await asyncio.wait_for(running, EVENT_SECONDS)


def _recipients(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(OUTBOX.c.to_address)).scalars())


def test_an_edit_is_remembered_with_its_time_the_first_load_is_not(
    files: Schedules, folder: Path
) -> None:
    write(folder / "news.toml", NEWSLETTER.format(headline="November"), 1_000)
    files.reload()
    assert files.edited == {}
    write(folder / "news.toml", NEWSLETTER.format(headline="December"), 2_000)
    files.reload()
    assert files.edited == {"news": files.clock.now()}
