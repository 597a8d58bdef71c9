"""The schedule form says a crontab line in words, and never says something wrong."""

from __future__ import annotations

import pytest

from mailer.scheduling.cron_words import describe


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("0 9 1 * *", "09:00 on the 1st of every month"),
        ("30 7 * * *", "07:30 every day"),
        ("0 18 * * mon-fri", "18:00 Monday to Friday"),
        ("0 8 * * thu,MON", "08:00 every Monday and Thursday"),
        ("15 10 1,15,22 * *", "10:15 on the 1st, 15th and 22nd of every month"),
        ("0 9 11,12,13,23 * *", "09:00 on the 11th, 12th, 13th and 23rd of every month"),
        ("0 9 1 dec *", "09:00 on the 1st of December"),
        ("0 9 1 1,4,7,10 *", "09:00 on the 1st of January, April, July and October"),
    ],
)
def test_common_shapes_are_said_in_words(cron: str, words: str) -> None:
    assert describe(cron) == f"{words}, in each customer's own time zone"


def test_a_fixed_zone_is_named() -> None:
    assert describe("0 9 * * *", "Europe/Sofia") == "09:00 every day, Europe/Sofia time"


@pytest.mark.parametrize(
    "cron",
    [
        *("*/15 * * * *", "0 9-17 * * *", "0 9 1 * mon", "0 9 * dec *", "0 9 L * *", "0 9 1 *"),
        *("x", "\u00b2 9 * * *", "0 9 \u0663 * *", "0 9 * \u00b9 *"),  # digits, not ASCII ones
    ],
)
def test_unusual_lines_are_shown_as_written(cron: str) -> None:
    assert describe(cron) == f"{cron}, in each customer's own time zone"
