"""`mailer followups meeting`, `move` and `cancel` as a person runs them.

The command reads the system clock, so times here are far ahead or far behind it."""

from __future__ import annotations

import json

from tests.command import Mailer, add_user

# the fixtures of the `mailer` command's tests
from tests.command import mailer as mailer
from tests.command import project as project
from tests.command import with_demo as with_demo

MARIA = "maria.ivanova@example.com"


def test_a_meeting_is_scheduled_moved_and_cancelled_with_a_message_for_each(
    with_demo: Mailer,
) -> None:
    assert add_user(with_demo, "sam", "--timezone", "Asia/Manila").returncode == 0
    scheduled = with_demo(
        "followups", "meeting", MARIA, "--at", "2099-01-05 10:00", "--duration", "45m",
        "--where", "https://meet.example/maria", "--assignee", "sam", "--note", "grinder demo",
    )  # fmt: skip
    assert "meeting 1 at 2099-01-05 02:00 UTC; invitation queued" in scheduled.stdout
    moved = with_demo("followups", "move", "1", "--at", "2099-01-06 09:00", "--where", "Room 2")
    assert "meeting 1 moved to 2099-01-06 01:00 UTC; update queued" in moved.stdout
    [row] = json.loads(with_demo("followups", "list", "--json").stdout)
    assert (row["place"], row["duration_minutes"], row["sequence"]) == ("Room 2", 45, 1)
    assert "meeting 1 is cancelled" in with_demo("followups", "cancel", "1").stdout
    assert json.loads(with_demo("followups", "list", "--json").stdout) == []
    queued = json.loads(with_demo("outbox", "list", "--json").stdout)
    assert sorted(m["dedupe_key"] for m in queued) == [f"meeting:1:{n}" for n in range(3)]
    assert {m["category"] for m in queued} == {"transactional"}


BAD = {
    ("--at", "2020-01-02 09:00", "--where", "Room 2"): "a meeting cannot start in the past",
    ("--at", "3d", "--where", " "): "a meeting needs a place or a link",
    ("--at", "3d", "--where", "x", "--duration", "an hour"): "duration: 'an hour' is not",
    ("--at", "3d", "--where", "x", "--attendee", "zed"): "no staff user named 'zed'",
}


def test_a_bad_meeting_is_one_line_and_queues_nothing(with_demo: Mailer) -> None:
    for args, message in BAD.items():
        result = with_demo("followups", "meeting", MARIA, *args, check=False)
        assert result.returncode == 1 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(with_demo("outbox", "list", "--json").stdout) == []
    cancel = with_demo("followups", "cancel", "99", check=False)
    assert cancel.returncode == 1 and "no open meeting 99" in cancel.stderr
