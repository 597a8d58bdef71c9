"""Lists on the command line fit a standard terminal: one line per row at 80 columns, the
widest cells cut first, times whole and their zone named once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from mailer.cli import common

REASON = "deferred: the customer had 2 marketing messages in the last 7 days (limit 2) " * 3


@pytest.fixture
def eighty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An 80-column terminal in Manila."""
    monkeypatch.setattr(common.out, "width", 80)
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Manila"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_a_list_with_long_reasons_is_one_line_per_row_at_80_columns(
    eighty: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {
            "id": n,
            "status": "deferred",
            "to_address": f"maria.ivanova.{n}@example.com",
            "due_at": datetime(2026, 12, 2, 1, 5, tzinfo=UTC),
            "reason": REASON,
        }
        for n in range(3)
    ]
    common.print_table(rows, ("id", "status", "to_address", "due_at", "reason"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 3 + 1  # header, rule, one line per row, the zone
    assert all(len(line) <= 80 for line in lines)
    assert "2026-12-02 09:05" in lines[2]  # whole, in the terminal's zone
    assert "deferred: the cust" in lines[2] and lines[2].rstrip().endswith("…")
    assert lines[-1] == "times in PST (UTC+08:00)"


def test_the_widest_columns_give_way_first_and_times_last() -> None:
    assert common.fit([2, 8, 30, 16, 60], 80, kept={3}) == [2, 8, 19, 16, 19]
    assert common.fit([2, 8, 10], 80) == [2, 8, 10]  # what fits is left alone
    # when even the short columns cannot all show, everything gives way alike
    assert common.fit([12, 12, 12, 16], 40, kept={3}) == [7, 7, 7, 7]
