"""The schedule form's writes: checked like `mailer check` first, comments kept, one step."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from mailer.core.clock import ManualClock
from mailer.scheduling import occurrences, schedule_files
from mailer.scheduling.schedules import NewsletterSchedule, load_schedule
from tests.configs import ROOT

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KNOWN = schedule_files.Known(["newsletter", "birthday"], ["champions"])


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "schedules"
    folder.mkdir()
    shutil.copy(ROOT / "schedules" / "newsletter.toml", folder)
    return folder


def test_an_edit_keeps_the_files_comments_and_other_keys(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    values = {"cron": "0 10 1 * *", "audience": {"tags_any": ["vip"], "locales": []}}
    assert schedule_files.update(folder, "newsletter", values, KNOWN, NOW) == []
    text = (folder / "newsletter.toml").read_text(encoding="utf-8")
    assert 'cron = "0 10 1 * *"' in text
    assert "# When it goes out, as a crontab line" in text
    assert 'headline = "December news from Northwind Roasters"' in text  # params untouched
    path = folder / "newsletter.toml"
    schedule, problems = load_schedule(path, KNOWN.templates, ManualClock(NOW))
    assert problems == [] and isinstance(schedule, NewsletterSchedule)
    assert schedule.audience.tags_any == ["vip"]
    assert [p.name for p in folder.iterdir()] == ["newsletter.toml"]  # no temporary left


def test_a_wrong_value_writes_nothing_and_names_its_key(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    before = (folder / "newsletter.toml").read_bytes()
    values = {"cron": "0 9 1 * 1", "template": "nosuch"}
    problems = schedule_files.update(folder, "newsletter", values, KNOWN, NOW)
    assert [p.where.rpartition(": ")[2] for p in problems] == ["template", "cron"]
    assert "there is no template named 'nosuch'" in problems[0].message
    assert (folder / "newsletter.toml").read_bytes() == before
    taken = schedule_files.create(folder, "newsletter", {"kind": "newsletter"}, KNOWN, NOW)
    assert [p.message for p in taken] == ["a schedule named 'newsletter' exists already"]


def test_resuming_records_when_so_nothing_missed_is_sent(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    assert schedule_files.pause(folder, "newsletter", KNOWN, NOW) == []
    assert schedule_files.read(folder, "newsletter")["enabled"] is False  # type: ignore[index]
    assert schedule_files.resume(folder, "newsletter", KNOWN, NOW) == []
    data = schedule_files.read(folder, "newsletter")
    assert data is not None and data["enabled"] is True and data["resumed_at"] == NOW


def test_a_file_saved_with_a_byte_order_mark_is_paused_and_loses_the_mark(tmp_path: Path) -> None:
    """A Windows editor's byte order mark: the daemon reads such a file, and so must the
    form that pauses it."""
    folder = _copy(tmp_path)
    path = folder / "newsletter.toml"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert schedule_files.pause(folder, "newsletter", KNOWN, NOW) == []
    assert schedule_files.read(folder, "newsletter")["enabled"] is False  # type: ignore[index]
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_the_next_firings_count_a_local_time_once_across_zones() -> None:
    schedule = NewsletterSchedule(template="newsletter", cron="0 9 1 * *")
    zones = ["Pacific/Auckland", "Europe/Sofia"]
    found = occurrences.upcoming(schedule, zones, NOW, 3)
    assert [key for key, _ in found] == ["2026-12-01T09:00", "2027-01-01T09:00", "2027-02-01T09:00"]
    assert found[0][1] == datetime(2026, 11, 30, 20, 0, tzinfo=UTC)  # Auckland reaches it first
