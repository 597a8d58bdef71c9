from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from mailer.core.clock import ManualClock
from mailer.core.errors import Problem
from mailer.scheduling.schedules import (
    BirthdaySchedule,
    NewsletterSchedule,
    Schedule,
    WebinarSchedule,
    load_schedule,
    load_schedules,
)

SHIPPED = Path(__file__).resolve().parent.parent / "schedules"
TEMPLATES = {
    "newsletter",
    "birthday",
    "webinar_invite",
    "webinar_reminder",
    "webinar_cancel",
    "cart_abandoned",
}
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# Each value is written to the file as is (a TOML literal); None leaves the key out.
NEWSLETTER = {
    "kind": '"newsletter"',
    "template": '"newsletter"',
    "cron": '"0 9 1 * *"',
    "timezone": '"customer"',
}
BIRTHDAY = {"kind": '"birthday"', "template": '"birthday"'}
WEBINAR = {
    "kind": '"webinar"',
    "title": '"Spring roasting"',
    "starts_at": "2027-05-20T16:00:00+03:00",
    "duration": '"1h"',
    "join_url": '"https://meet.example/spring"',
    "organizer": '"events@northwind-roasters.example"',
    "invite_at": "2027-05-06T16:00:00+03:00",
    "reminders": '["1d", "1h"]',
    "reminder_template": '"webinar_reminder"',
}


def toml(base: dict[str, str], **changes: str | None) -> str:
    fields = {**base, **changes}
    return "".join(f"{key} = {value}\n" for key, value in fields.items() if value is not None)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_one(tmp_path: Path, text: str, now: datetime = NOW) -> tuple[Schedule | None, list[str]]:
    path = write(tmp_path, "sample", text)
    schedule, problems = load_schedule(path, TEMPLATES, ManualClock(now))
    prefix = f"{path}: "
    return schedule, [str(p).removeprefix(prefix) for p in problems]


def test_shipped_samples_load_without_problems() -> None:
    schedules, problems = load_schedules(SHIPPED, TEMPLATES, ManualClock(NOW))

    assert problems == []
    assert set(schedules) == {"newsletter", "birthdays", "webinar-spring-roasting", "cart-reminder"}
    newsletter = schedules["newsletter"]
    assert isinstance(newsletter, NewsletterSchedule)
    assert newsletter.params.keys() == {"headline", "intro"}
    assert newsletter.valid_for == timedelta(days=3)
    webinar = schedules["webinar-spring-roasting"]
    assert isinstance(webinar, WebinarSchedule)
    assert webinar.starts_at - webinar.invite_at == timedelta(weeks=2)


def test_each_kind_has_its_throttling_category() -> None:
    categories = {
        name: schedule.category
        for name, schedule in load_schedules(SHIPPED, TEMPLATES, ManualClock(NOW))[0].items()
    }

    assert categories == {
        "newsletter": "marketing",
        "birthdays": "relationship",
        "webinar-spring-roasting": "marketing",
        "cart-reminder": "marketing",
    }


def test_a_schedule_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Windows editors begin UTF-8 files with one, which TOML does not allow."""
    birthday, problems = load_one(tmp_path, "\ufeff" + toml(BIRTHDAY))
    assert problems == [] and isinstance(birthday, BirthdaySchedule)


def test_omitted_keys_take_their_documented_defaults(tmp_path: Path) -> None:
    birthday, problems = load_one(tmp_path, toml(BIRTHDAY))

    assert problems == []
    assert isinstance(birthday, BirthdaySchedule)
    assert (birthday.send_at, birthday.feb29) == (time(9, 0), "feb28")
    assert (birthday.valid_for, birthday.priority, birthday.enabled) == (timedelta(days=1), 0, True)
    assert birthday.audience.tags_any == [] and birthday.params == {}


def test_webinar_template_defaults_to_the_invite(tmp_path: Path) -> None:
    webinar, _ = load_one(tmp_path, toml(WEBINAR))

    assert isinstance(webinar, WebinarSchedule)
    assert webinar.template == "webinar_invite"


def test_misspelt_key_is_reported_with_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = toml(NEWSLETTER, crn='"0 9 * * *"', audience='{ tag_any = ["news"] }')
    write(Path("schedules"), "newsletter", text)

    schedules, problems = load_schedules(Path("schedules"), TEMPLATES, ManualClock(NOW))

    assert schedules == {}
    assert set(map(str, problems)) == {
        "schedules/newsletter.toml: crn: is not a known key (did you mean 'cron'?)",
        "schedules/newsletter.toml: audience.tag_any: "
        "is not a known key (did you mean 'tags_any'?)",
    }


def test_key_of_another_kind_is_unknown_here(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(BIRTHDAY, cron='"0 9 * * *"'))

    assert problems == ["cron: is not a known key"]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ('"61 9 * * *"', "'61 9 * * *' is not a crontab line such as '0 9 1 * *'"),
        ('"0 9 1 *"', "Wrong number of fields; got 4, expected 5"),
        ('"0 9 * * 1"', "write weekdays as names (mon, tue, ... sun)"),
        ('"0 9 30 2 *"', "never fires"),
    ],
)
def test_bad_cron_is_reported_on_the_cron_key(tmp_path: Path, cron: str, expected: str) -> None:
    schedule, problems = load_one(tmp_path, toml(NEWSLETTER, cron=cron))

    assert schedule is None
    assert len(problems) == 1
    assert problems[0].startswith("cron: ") and expected in problems[0]


def test_weekday_names_are_accepted_in_cron(tmp_path: Path) -> None:
    schedule, problems = load_one(tmp_path, toml(NEWSLETTER, cron='"30 8 * * mon-fri"'))

    assert problems == []
    assert isinstance(schedule, NewsletterSchedule) and schedule.cron == "30 8 * * mon-fri"


def test_fixed_iana_zone_is_kept_and_bad_zone_is_reported(tmp_path: Path) -> None:
    fixed, _ = load_one(tmp_path, toml(NEWSLETTER, timezone='"Europe/Sofia"'))
    _, problems = load_one(tmp_path, toml(NEWSLETTER, timezone='"Mars/Olympus"'))

    assert isinstance(fixed, NewsletterSchedule) and str(fixed.timezone) == "Europe/Sofia"
    assert problems == [
        "timezone: 'Mars/Olympus' is not a known IANA time zone; "
        "or write 'customer' for each customer's own zone"
    ]


def test_a_priority_out_of_range_is_reported_before_any_run(tmp_path: Path) -> None:
    """A priority no column holds (99999999999999999999999) failed every run, not the check."""
    _, problems = load_one(tmp_path, toml(NEWSLETTER, priority="99999999999999999999999"))
    assert problems == ["priority: Input should be less than or equal to 1000"]


def test_missing_template_is_reported(tmp_path: Path) -> None:
    text = toml(WEBINAR, template='"webinar_invitation"', reminder_template='"reminder"')

    schedule, problems = load_one(tmp_path, text)

    assert schedule is None
    assert problems == [
        "template: there is no template named 'webinar_invitation'",
        "reminder_template: there is no template named 'reminder'",
    ]


def test_default_invite_and_cancel_templates_must_exist_too(tmp_path: Path) -> None:
    path = write(tmp_path, "webinar", toml(WEBINAR))

    _, problems = load_schedule(path, {"webinar_reminder"}, ManualClock(NOW))

    assert problems == [
        Problem(f"{path}: template", "there is no template named 'webinar_invite'"),
        Problem(f"{path}: cancel_template", "there is no template named 'webinar_cancel'"),
    ]


def test_missing_or_unknown_kind_is_reported(tmp_path: Path) -> None:
    _, missing = load_one(tmp_path, toml(NEWSLETTER, kind=None))
    _, unknown = load_one(tmp_path, toml(NEWSLETTER, kind='"digest"'))

    kinds = (
        'write kind = "newsletter", "birthday", "webinar", "reorder", "winback", "after_purchase"'
        ' or "event"'
    )
    assert missing == [f"kind: is required; {kinds}"]
    assert unknown == [f"kind: 'digest' is not a kind of schedule; {kinds}"]


def test_required_keys_are_reported_as_missing(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(WEBINAR, title=None, join_url=None))

    assert problems == ["title: is required", "join_url: is required"]


def test_naive_starts_at_is_reported(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(WEBINAR, starts_at="2027-05-20T16:00:00"))

    assert problems == [
        "starts_at: 2027-05-20T16:00:00 has no UTC offset; "
        "write one, e.g. 2027-05-20T16:00:00+03:00"
    ]


def test_invite_after_start_is_reported(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(WEBINAR, invite_at="2027-05-20T14:00:00Z"))

    assert problems == ["invite_at: must be before starts_at (2027-05-20T16:00:00+03:00)"]


def test_reminder_that_would_precede_the_invite_is_reported(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(WEBINAR, reminders='["3w"]'))

    assert problems == ["reminders: the 21d reminder falls before invite_at"]


def test_reminders_need_a_reminder_template(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(WEBINAR, reminder_template=None))

    assert problems == ["reminders: reminders need a reminder_template to send"]


def test_zero_reminder_is_reported_by_position(tmp_path: Path) -> None:
    _, problems = load_one(tmp_path, toml(WEBINAR, reminders='["1d", "0s"]'))

    assert problems == ["reminders.1: must be longer than zero, e.g. '1h' or '3d'"]


def test_bad_join_url_and_organizer_are_reported(tmp_path: Path) -> None:
    text = toml(WEBINAR, join_url='"javascript:alert(1)"', organizer='"events at example"')

    _, problems = load_one(tmp_path, text)

    assert len(problems) == 2
    assert problems[0].startswith("join_url: 'javascript:alert(1)' is not a web link")
    assert problems[1].startswith("organizer: 'events at example' is not a valid email address")


@pytest.mark.parametrize("moment", ["9999-12-31T23:00:00+00:00", "0001-01-01T00:00:00+01:00"])
def test_a_webinar_time_past_the_calendar_is_reported_not_a_crash(
    tmp_path: Path, moment: str
) -> None:
    """Its reminders and end would be computed past year 9999 (or before year 1)."""
    _, problems = load_one(tmp_path, toml(WEBINAR, starts_at=moment))
    assert problems == [
        f"starts_at: {datetime.fromisoformat(moment).isoformat()} is not"
        " between the years 1900 and 2999"
    ]


def test_past_webinar_is_reported(tmp_path: Path) -> None:
    after_start = datetime(2027, 5, 20, 13, 0, 1, tzinfo=UTC)

    schedule, problems = load_one(tmp_path, toml(WEBINAR), now=after_start)

    assert schedule is None
    assert problems == [
        "starts_at: the webinar has already started (2027-05-20T16:00:00+03:00); "
        "nothing more is sent, remove the file"
    ]


def test_cancelled_past_webinar_is_not_a_problem(tmp_path: Path) -> None:
    after_start = datetime(2027, 6, 1, tzinfo=UTC)

    schedule, problems = load_one(tmp_path, toml(WEBINAR, cancelled="true"), now=after_start)

    assert problems == []
    assert isinstance(schedule, WebinarSchedule) and schedule.cancelled


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = 'kind = "newsletter"\ntemplate = "newsletter"\ncron "0 9 1 * *"\n'

    schedule, problems = load_one(tmp_path, text)

    assert schedule is None
    assert len(problems) == 1
    assert problems[0].startswith("not valid TOML: ") and "line 3" in problems[0]


def test_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('kind = "birthday"\ntemplate = "caf\xe9"\n'.encode("latin-1"))

    _, problems = load_schedule(path, TEMPLATES, ManualClock(NOW))

    assert len(problems) == 1 and problems[0].message.startswith("cannot be read: ")


def test_several_problems_across_two_files_are_all_reported_at_once(tmp_path: Path) -> None:
    news = toml(NEWSLETTER, cron='"bad"', valid_for='"3 days"', priority='"hi"')
    write(tmp_path, "a-news", news)
    write(tmp_path, "b-webinar", toml(WEBINAR, starts_at="2027-05-20T16:00:00", template='"x"'))

    schedules, problems = load_schedules(tmp_path, TEMPLATES, ManualClock(NOW))

    assert schedules == {}
    news_file, webinar_file = tmp_path / "a-news.toml", tmp_path / "b-webinar.toml"
    assert [p.where for p in problems] == [
        f"{news_file}: valid_for",
        f"{news_file}: priority",
        f"{news_file}: cron",
        f"{webinar_file}: template",
        f"{webinar_file}: starts_at",
    ]


def test_broken_file_does_not_stop_the_good_ones_loading(tmp_path: Path) -> None:
    write(tmp_path, "birthdays", toml(BIRTHDAY))
    write(tmp_path, "broken", "kind = \n")
    write(tmp_path, "newsletter", toml(NEWSLETTER))

    schedules, problems = load_schedules(tmp_path, TEMPLATES, ManualClock(NOW))

    assert set(schedules) == {"birthdays", "newsletter"}
    assert [p.where for p in problems] == [str(tmp_path / "broken.toml")]


def test_file_name_must_be_usable_as_a_schedule_name(tmp_path: Path) -> None:
    write(tmp_path, "spring webinar!", toml(BIRTHDAY))
    write(tmp_path, ".#birthdays", "editor lock file, not TOML")

    schedules, problems = load_schedules(tmp_path, TEMPLATES, ManualClock(NOW))

    assert schedules == {}
    assert problems == [
        Problem(
            str(tmp_path / "spring webinar!.toml"),
            "name the file with letters, digits, '-' and '_' only",
        )
    ]


def test_missing_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    schedules, problems = load_schedules(tmp_path / "nowhere", TEMPLATES, ManualClock(NOW))

    assert schedules == {}
    assert problems == [Problem(str(tmp_path / "nowhere"), "is not a directory of schedule files")]


def test_loaded_schedules_cannot_be_changed_in_place(tmp_path: Path) -> None:
    schedule, _ = load_one(tmp_path, toml(BIRTHDAY))

    with pytest.raises(ValueError, match="frozen"):
        schedule.priority = 5  # type: ignore[union-attr, misc]
