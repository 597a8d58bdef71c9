"""The throttle decision, over plain data and fixed instants: no clock, no database."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer.core.config import ThrottleSettings
from mailer.outbound.throttle import (
    SENT,
    Caps,
    Contact,
    CustomerState,
    Decision,
    Rules,
    decide,
    next_allowed,
)

SOFIA = ZoneInfo("Europe/Sofia")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
NIGHT = (time(21, 0), time(8, 0))
NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
BOUNCED = "hard bounce: 550 5.1.1 user unknown"


def utc(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(zone: ZoneInfo, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=zone)


def rules(
    min_gap: timedelta = timedelta(0),
    quiet: tuple[time, time] | None = None,
    **caps: Caps,
) -> Rules:
    return Rules(min_gap=min_gap, quiet_hours=quiet, caps=caps)


def customer(zone: ZoneInfo = SOFIA, history: Sequence[Contact] = (), **kw: Any) -> CustomerState:
    return CustomerState(zone=zone, history=history, **kw)


def sent(category: str, *moments: datetime) -> list[Contact]:
    return [Contact(moment, category) for moment in moments]


def marketing(
    now: datetime,
    state: CustomerState,
    throttle: Rules,
    valid_until: datetime | None = None,
) -> Decision:
    return decide("marketing", now, valid_until, state, throttle)


# Nothing holding back


def test_a_customer_nothing_holds_back_is_sent_to_at_once() -> None:
    assert marketing(NOW, customer(), rules()) == Decision(
        action="send", at=None, reason="sent", rule=None
    )


def test_the_default_business_rules_let_a_fresh_customer_hear_from_us_at_midday() -> None:
    throttle = Rules.from_settings(ThrottleSettings())
    assert marketing(local(SOFIA, 1, 15, 12), customer(), throttle) == SENT


# Bars: never sent, never deferred


@pytest.mark.parametrize("category", ["marketing", "relationship"])
def test_an_unsubscribed_customer_gets_no_marketing_or_relationship_mail(category: str) -> None:
    decision = decide(category, NOW, None, customer(unsubscribed_at=NOW), rules())
    assert decision == Decision(action="skip", at=None, reason="unsubscribed", rule="unsubscribed")


def test_consent_is_per_category_and_missing_consent_means_consented() -> None:
    state = customer(marketing_consent=False)
    assert marketing(NOW, state, rules()) == Decision(
        action="skip", at=None, reason="no consent for marketing", rule="consent"
    )
    assert decide("relationship", NOW, None, state, rules()) == SENT


@pytest.mark.parametrize("category", ["transactional", "relationship", "marketing"])
def test_a_suppressed_address_gets_nothing_at_all(category: str) -> None:
    decision = decide(category, NOW, None, customer(suppressed_reason=BOUNCED), rules())
    assert decision == Decision(
        action="skip", at=None, reason=f"suppressed: {BOUNCED}", rule="suppressed"
    )


def test_suppression_is_named_before_unsubscribe_and_consent() -> None:
    state = customer(suppressed_reason=BOUNCED, unsubscribed_at=NOW, marketing_consent=False)
    assert marketing(NOW, state, rules()).rule == "suppressed"


def test_a_cap_of_zero_skips_instead_of_deferring_forever() -> None:
    decision = marketing(NOW, customer(), rules(marketing=Caps(per_day=3, per_week=0)))
    assert decision == Decision(
        action="skip", at=None, reason="marketing cap 0 per week", rule="cap:marketing:per_week"
    )


def test_a_per_customer_cap_of_zero_is_a_quiet_opt_out_of_one_category() -> None:
    state = customer(caps_override={"relationship": Caps(per_30d=0)})
    throttle = rules(relationship=Caps(per_week=1))
    assert decide("relationship", NOW, None, state, throttle).action == "skip"
    assert marketing(NOW, state, throttle) == SENT


def test_a_skip_is_a_skip_even_when_the_message_is_also_stale() -> None:
    decision = marketing(
        NOW, customer(unsubscribed_at=NOW), rules(), valid_until=NOW - timedelta(1)
    )
    assert decision.action == "skip"


# Transactional mail


def test_transactional_mail_ignores_every_rule_but_suppression() -> None:
    state = customer(
        history=sent("marketing", NOW - timedelta(minutes=5)),
        unsubscribed_at=NOW,
        marketing_consent=False,
        relationship_consent=False,
        pause_until=NOW + timedelta(days=30),
        caps_override={"transactional": Caps(per_day=0)},
    )
    throttle = rules(timedelta(hours=20), (time(0), time(23, 59)), transactional=Caps(per_day=0))
    assert decide("transactional", NOW, None, state, throttle) == SENT


def test_transactional_contacts_count_towards_neither_min_gap_nor_caps() -> None:
    state = customer(history=sent("transactional", NOW, NOW - timedelta(hours=1)))
    throttle = rules(timedelta(hours=20), marketing=Caps(per_day=1))
    assert marketing(NOW, state, throttle) == SENT


# Pause


def test_a_paused_customer_is_deferred_to_the_end_of_the_pause() -> None:
    decision = marketing(NOW, customer(pause_until=utc(12, 1)), rules())
    assert decision == Decision(
        action="defer", at=utc(12, 1), reason="paused until 2026-12-01 00:00 UTC", rule="pause"
    )


@pytest.mark.parametrize("until", [NOW, NOW - timedelta(days=2)])
def test_a_pause_that_has_ended_holds_nothing_back(until: datetime) -> None:
    assert marketing(NOW, customer(pause_until=until), rules()) == SENT


def test_a_pause_given_in_local_time_is_reported_in_utc() -> None:
    decision = marketing(NOW, customer(pause_until=local(SOFIA, 1, 20, 9, 30)), rules())
    assert decision.at == utc(1, 20, 7, 30)
    assert decision.at.tzinfo is UTC
    assert decision.reason == "paused until 2026-01-20 07:30 UTC"


# min_gap


@pytest.mark.parametrize(
    ("earlier", "now_sending"),
    [
        ("marketing", "marketing"),
        ("relationship", "marketing"),
        ("marketing", "relationship"),
        ("relationship", "relationship"),
    ],
)
def test_min_gap_spans_marketing_and_relationship(earlier: str, now_sending: str) -> None:
    state = customer(history=sent(earlier, NOW - timedelta(hours=10)))
    decision = decide(now_sending, NOW, None, state, rules(timedelta(hours=20)))
    assert decision == Decision(
        action="defer", at=NOW + timedelta(hours=10), reason="min_gap 20h", rule="min_gap"
    )


def test_min_gap_counts_from_the_latest_contact() -> None:
    history = sent("marketing", NOW - timedelta(hours=30), NOW - timedelta(hours=2))
    decision = marketing(NOW, customer(history=history), rules(timedelta(hours=20)))
    assert decision.at == NOW + timedelta(hours=18)


def test_min_gap_is_met_exactly_when_the_gap_has_passed() -> None:
    state = customer(history=sent("relationship", NOW - timedelta(hours=20)))
    assert marketing(NOW, state, rules(timedelta(hours=20))) == SENT


def test_a_reservation_made_earlier_in_the_batch_holds_back_the_next_message() -> None:
    state = customer(history=sent("relationship", NOW))
    decision = marketing(NOW, state, rules(timedelta(hours=20)))
    assert decision.at == NOW + timedelta(hours=20)


def test_a_contact_reserved_for_later_holds_back_an_earlier_message_too() -> None:
    state = customer(history=sent("marketing", NOW + timedelta(hours=5)))
    decision = marketing(NOW, state, rules(timedelta(hours=20)))
    assert decision.at == NOW + timedelta(hours=25)


def test_min_gap_is_written_the_way_config_writes_durations() -> None:
    state = customer(history=sent("marketing", NOW))
    assert marketing(NOW, state, rules(timedelta(hours=1, minutes=30))).reason == "min_gap 1h30m"


# Rolling caps


def test_a_daily_cap_releases_exactly_one_day_after_the_contact_that_filled_it() -> None:
    state = customer(history=sent("marketing", utc(1, 15, 9, 30)))
    decision = marketing(utc(1, 15, 20), state, rules(marketing=Caps(per_day=1)))
    assert decision == Decision(
        action="defer",
        at=utc(1, 16, 9, 30),
        reason="marketing cap 1 per day",
        rule="cap:marketing:per_day",
    )


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(1, 16, 9, 30) - timedelta(seconds=1), utc(1, 16, 9, 30)),
        (utc(1, 16, 9, 30), None),
        (utc(1, 16, 9, 31), None),
    ],
)
def test_a_contact_leaves_the_rolling_window_at_exactly_one_window_old(
    now: datetime, expected: datetime | None
) -> None:
    state = customer(history=sent("marketing", utc(1, 15, 9, 30)))
    assert marketing(now, state, rules(marketing=Caps(per_day=1))).at == expected


def test_a_weekly_cap_waits_for_the_oldest_of_the_contacts_filling_the_window() -> None:
    history = sent("marketing", utc(1, 1, 10), utc(1, 5, 10), utc(1, 6, 10))
    decision = marketing(
        utc(1, 7, 12), customer(history=history), rules(marketing=Caps(per_week=2))
    )
    assert decision.at == utc(1, 12, 10)
    assert decision.reason == "marketing cap 2 per week"


def test_a_thirty_day_cap_releases_thirty_days_after_the_oldest_counted_contact() -> None:
    days = [utc(12, 20, year=2025)] + [utc(1, day, 12) for day in (1, 3, 5, 7, 9, 11)]
    state = customer(history=sent("marketing", *days))
    decision = marketing(utc(1, 20), state, rules(marketing=Caps(per_30d=6)))
    assert decision.at == utc(1, 31, 12)
    assert decision.rule == "cap:marketing:per_30d"
    assert decision.reason == "marketing cap 6 per 30 days"


def test_every_full_window_is_named_and_the_latest_release_wins() -> None:
    history = sent("marketing", utc(1, 5, 10), utc(1, 7, 9))
    throttle = rules(marketing=Caps(per_day=1, per_week=2, per_30d=10))
    decision = marketing(utc(1, 7, 12), customer(history=history), throttle)
    assert decision == Decision(
        action="defer",
        at=utc(1, 12, 10),
        reason="marketing cap 1 per day; marketing cap 2 per week",
        rule="cap:marketing:per_day",
    )


def test_caps_count_only_contacts_of_the_same_category() -> None:
    state = customer(history=sent("relationship", NOW - timedelta(hours=1)))
    throttle = rules(marketing=Caps(per_day=1), relationship=Caps(per_day=1))
    assert marketing(NOW, state, throttle) == SENT
    assert decide("relationship", NOW, None, state, throttle).rule == "cap:relationship:per_day"


def test_a_category_without_caps_is_uncapped() -> None:
    state = customer(history=sent("relationship", *(NOW - timedelta(hours=h) for h in range(5))))
    assert decide("relationship", NOW, None, state, rules(marketing=Caps(per_day=1))) == SENT


def test_a_reservation_for_later_fills_the_window_it_falls_in() -> None:
    state = customer(history=sent("marketing", NOW + timedelta(hours=3)))
    decision = marketing(NOW, state, rules(marketing=Caps(per_day=1)))
    assert decision.at == NOW + timedelta(hours=27)


# Per-customer cap overrides


def test_a_stricter_override_defers_what_the_business_caps_allow() -> None:
    state = customer(
        history=sent("marketing", NOW - timedelta(days=2)),
        caps_override={"marketing": Caps(per_week=1)},
    )
    decision = marketing(NOW, state, rules(marketing=Caps(per_week=2)))
    assert decision == Decision(
        action="defer",
        at=NOW + timedelta(days=5),
        reason="marketing cap 1 per week",
        rule="cap:marketing:per_week",
    )


def test_a_looser_override_sends_what_the_business_caps_hold_back() -> None:
    state = customer(
        history=sent("marketing", NOW - timedelta(days=2)),
        caps_override={"marketing": Caps(per_week=3)},
    )
    assert marketing(NOW, state, rules(marketing=Caps(per_week=1))) == SENT


def test_an_override_replaces_every_cap_of_its_category_not_only_the_ones_it_sets() -> None:
    state = customer(
        history=sent("marketing", NOW - timedelta(hours=2)),
        caps_override={"marketing": Caps(per_week=5)},
    )
    assert marketing(NOW, state, rules(marketing=Caps(per_day=1, per_week=2))) == SENT


def test_an_override_for_one_category_leaves_the_other_alone() -> None:
    state = customer(
        history=sent("marketing", NOW - timedelta(hours=2)),
        caps_override={"relationship": Caps(per_week=5)},
    )
    assert marketing(NOW, state, rules(marketing=Caps(per_day=1))).action == "defer"


# Quiet hours across midnight, around the world


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        ("Pacific/Auckland", (1, 15, 23, 0), (1, 16, 8, 0)),
        ("Pacific/Auckland", (1, 16, 3, 0), (1, 16, 8, 0)),
        ("Europe/Sofia", (1, 15, 22, 0), (1, 16, 8, 0)),
        ("Asia/Jakarta", (1, 15, 21, 0), (1, 16, 8, 0)),
        ("Asia/Manila", (1, 16, 2, 0), (1, 16, 8, 0)),
        ("America/Los_Angeles", (1, 15, 22, 0), (1, 16, 8, 0)),
        ("America/Los_Angeles", (1, 16, 7, 59), (1, 16, 8, 0)),
    ],
)
def test_quiet_hours_end_at_the_customers_local_morning(
    zone: str, now: tuple[int, int, int, int], expected: tuple[int, int, int, int]
) -> None:
    where = ZoneInfo(zone)
    decision = marketing(local(where, *now), customer(where), rules(quiet=NIGHT))
    assert decision == Decision(
        action="defer",
        at=local(where, *expected),
        reason=f"quiet hours 21:00-08:00 in {zone}",
        rule="quiet_hours",
    )
    assert decision.at is not None
    assert decision.at.tzinfo is UTC


@pytest.mark.parametrize(
    "zone", ["Pacific/Auckland", "Europe/Sofia", "Asia/Jakarta", "Asia/Manila", "UTC"]
)
@pytest.mark.parametrize(("hour", "minute"), [(8, 0), (12, 0), (20, 59)])
def test_outside_quiet_hours_mail_goes_at_once(zone: str, hour: int, minute: int) -> None:
    where = ZoneInfo(zone)
    assert marketing(local(where, 1, 15, hour, minute), customer(where), rules(quiet=NIGHT)) == SENT


def test_quiet_hours_start_on_the_minute() -> None:
    decision = marketing(local(SOFIA, 1, 15, 21), customer(), rules(quiet=NIGHT))
    assert decision.at == local(SOFIA, 1, 16, 8)


def test_quiet_hours_within_one_day_end_the_same_day() -> None:
    lunch = (time(12), time(14))
    assert marketing(local(SOFIA, 1, 15, 13), customer(), rules(quiet=lunch)).at == local(
        SOFIA, 1, 15, 14
    )
    assert marketing(local(SOFIA, 1, 15, 14), customer(), rules(quiet=lunch)) == SENT


def test_quiet_hours_that_start_and_end_together_are_no_quiet_hours() -> None:
    assert marketing(local(SOFIA, 1, 15, 9), customer(), rules(quiet=(time(9), time(9)))) == SENT


def test_quiet_hours_follow_the_customers_zone_not_the_servers() -> None:
    now = utc(1, 15, 20)  # 22:00 in Sofia, 12:00 in Los Angeles
    assert marketing(now, customer(SOFIA), rules(quiet=NIGHT)).action == "defer"
    assert marketing(now, customer(LOS_ANGELES), rules(quiet=NIGHT)) == SENT


# Quiet hours across daylight saving time


@pytest.mark.parametrize(
    ("zone", "now", "expected"),
    [
        # Sofia springs forward 2026-03-29 03:00 EET -> 04:00 EEST: 08:00 is 05:00 UTC.
        ("Europe/Sofia", utc(3, 28, 20), utc(3, 29, 5)),
        # Sofia falls back 2026-10-25 04:00 EEST -> 03:00 EET: 08:00 is 06:00 UTC.
        ("Europe/Sofia", utc(10, 24, 19), utc(10, 25, 6)),
        # Los Angeles springs forward 2026-03-08 02:00 PST -> 03:00 PDT.
        ("America/Los_Angeles", utc(3, 8, 6), utc(3, 8, 15)),
        # Los Angeles falls back 2026-11-01 02:00 PDT -> 01:00 PST.
        ("America/Los_Angeles", utc(11, 1, 5), utc(11, 1, 16)),
        # Auckland springs forward 2026-09-27 02:00 NZST -> 03:00 NZDT.
        ("Pacific/Auckland", utc(9, 26, 10), utc(9, 26, 19)),
    ],
)
def test_quiet_hours_over_a_clock_change_end_at_local_morning(
    zone: str, now: datetime, expected: datetime
) -> None:
    assert marketing(now, customer(ZoneInfo(zone)), rules(quiet=NIGHT)).at == expected


@pytest.mark.parametrize(
    ("zone", "quiet", "now", "expected"),
    [
        # 03:30 never happens in Sofia on 2026-03-29: quiet ends as the clock jumps to 04:00.
        ("Europe/Sofia", (time(23), time(3, 30)), utc(3, 28, 22), utc(3, 29, 1)),
        # 02:30 never happens in Los Angeles on 2026-03-08: the clock jumps to 03:00 PDT.
        ("America/Los_Angeles", (time(22), time(2, 30)), utc(3, 8, 7), utc(3, 8, 10)),
    ],
)
def test_quiet_hours_ending_in_a_skipped_hour_end_when_the_clock_jumps(
    zone: str, quiet: tuple[time, time], now: datetime, expected: datetime
) -> None:
    assert marketing(now, customer(ZoneInfo(zone)), rules(quiet=quiet)).at == expected


@pytest.mark.parametrize(
    ("zone", "quiet", "now", "expected"),
    [
        # 03:30 happens twice in Sofia on 2026-10-25; from midnight, the first one counts.
        ("Europe/Sofia", (time(23), time(3, 30)), utc(10, 24, 21), utc(10, 25, 0, 30)),
        # At 03:10 the second time round the clock is quiet again, until the second 03:30.
        ("Europe/Sofia", (time(23), time(3, 30)), utc(10, 25, 1, 10), utc(10, 25, 1, 30)),
        # 01:30 happens twice in Los Angeles on 2026-11-01: the first is 01:30 PDT.
        ("America/Los_Angeles", (time(22), time(1, 30)), utc(11, 1, 6), utc(11, 1, 8, 30)),
    ],
)
def test_quiet_hours_ending_in_a_repeated_hour_end_at_the_next_reading(
    zone: str, quiet: tuple[time, time], now: datetime, expected: datetime
) -> None:
    assert marketing(now, customer(ZoneInfo(zone)), rules(quiet=quiet)).at == expected


def test_quiet_hours_starting_in_a_skipped_hour_begin_when_the_clock_jumps_past_the_start() -> None:
    early = (time(3, 30), time(6))
    assert marketing(utc(3, 29, 0, 59), customer(), rules(quiet=early)) == SENT  # 02:59 EET
    assert marketing(utc(3, 29, 1), customer(), rules(quiet=early)).at == utc(3, 29, 3)


def test_a_skipped_calendar_day_still_gives_the_next_local_morning() -> None:
    # Samoa skipped 2011-12-30: 29 December 23:59:59 (-10) was followed by 31 December 00:00.
    apia = customer(ZoneInfo("Pacific/Apia"))
    decision = marketing(utc(12, 30, 7, year=2011), apia, rules(quiet=NIGHT))
    assert decision.at == datetime(2011, 12, 31, 8, tzinfo=ZoneInfo("Pacific/Apia"))


# Several rules at once


def test_quiet_hours_outlast_a_cap_that_releases_during_the_night() -> None:
    state = customer(history=sent("marketing", utc(1, 15)))  # released 02:00 Sofia time
    decision = marketing(utc(1, 15, 20), state, rules(quiet=NIGHT, marketing=Caps(per_day=1)))
    assert decision == Decision(
        action="defer",
        at=utc(1, 16, 6),
        reason="marketing cap 1 per day; quiet hours 21:00-08:00 in Europe/Sofia",
        rule="cap:marketing:per_day",
    )


def test_a_cap_releasing_into_quiet_hours_waits_for_the_morning() -> None:
    state = customer(history=sent("marketing", utc(1, 14, 20, 30)))  # released 22:30 Sofia time
    decision = marketing(utc(1, 15, 10), state, rules(quiet=NIGHT, marketing=Caps(per_day=1)))
    assert decision.at == utc(1, 16, 6)
    assert decision.reason == "marketing cap 1 per day; quiet hours 21:00-08:00 in Europe/Sofia"


def test_a_cap_still_full_at_the_end_of_quiet_hours_holds_on_past_the_morning() -> None:
    state = customer(history=sent("marketing", utc(1, 9, 7)))  # released 09:00 Sofia time
    decision = marketing(utc(1, 15, 20), state, rules(quiet=NIGHT, marketing=Caps(per_week=1)))
    assert decision.at == utc(1, 16, 7)
    assert decision.reason == "marketing cap 1 per week; quiet hours 21:00-08:00 in Europe/Sofia"


def test_rules_are_reapplied_until_none_of_them_moves_the_time() -> None:
    # min_gap to 22:00 Sofia time, quiet hours to 08:00, then a reservation at 07:30
    # sets min_gap again, to 09:30.
    history = sent("relationship", utc(1, 15, 18), utc(1, 16, 5, 30))
    decision = marketing(
        utc(1, 15, 18, 30), customer(history=history), rules(timedelta(hours=2), NIGHT)
    )
    assert decision == Decision(
        action="defer",
        at=utc(1, 16, 7, 30),
        reason="min_gap 2h; quiet hours 21:00-08:00 in Europe/Sofia",
        rule="min_gap",
    )


def test_a_pause_ending_at_night_waits_for_the_morning() -> None:
    decision = marketing(NOW, customer(pause_until=utc(1, 15, 20)), rules(quiet=NIGHT))
    assert decision.at == utc(1, 16, 6)
    assert decision.rule == "pause"


def test_every_rule_that_held_the_message_back_is_named_pause_first() -> None:
    state = customer(history=sent("marketing", utc(1, 15, 19)), pause_until=utc(1, 15, 21))
    throttle = rules(timedelta(hours=20), NIGHT, marketing=Caps(per_week=1))
    decision = marketing(utc(1, 15, 20), state, throttle)
    assert decision == Decision(
        action="defer",
        at=utc(1, 23, 6),  # the cap releases at 21:00 Sofia time: quiet until the morning
        reason="paused until 2026-01-15 21:00 UTC; min_gap 20h; marketing cap 1 per week; "
        "quiet hours 21:00-08:00 in Europe/Sofia",
        rule="pause",
    )


# Validity


def test_a_message_whose_earliest_slot_is_past_its_validity_expires() -> None:
    state = customer(history=sent("marketing", utc(1, 15, 9, 30)))
    decision = marketing(utc(1, 15, 20), state, rules(marketing=Caps(per_day=1)), utc(1, 16))
    assert decision == Decision(
        action="expire",
        at=utc(1, 16, 9, 30),
        reason="marketing cap 1 per day; "
        "earliest 2026-01-16 09:30 UTC is after valid_until 2026-01-16 00:00 UTC",
        rule="cap:marketing:per_day",
    )


def test_a_slot_exactly_at_the_end_of_validity_is_still_taken() -> None:
    state = customer(history=sent("marketing", utc(1, 15, 9, 30)))
    decision = marketing(utc(1, 15, 20), state, rules(marketing=Caps(per_day=1)), utc(1, 16, 9, 30))
    assert decision.action == "defer"


@pytest.mark.parametrize("category", ["marketing", "transactional"])
def test_a_message_claimed_after_its_validity_expires_even_with_nothing_holding_it(
    category: str,
) -> None:
    decision = decide(category, NOW, NOW - timedelta(seconds=1), customer(), rules())
    assert decision == Decision(
        action="expire",
        at=NOW,
        reason="now 2026-01-15 10:00 UTC is after valid_until 2026-01-15 09:59:59 UTC",
        rule="valid_until",
    )


def test_a_message_within_its_validity_is_sent() -> None:
    assert marketing(NOW, customer(), rules(), valid_until=NOW) == SENT


# next_allowed


def test_next_allowed_is_now_when_nothing_holds_back() -> None:
    assert next_allowed("marketing", local(SOFIA, 1, 15, 12), customer(), rules()) == utc(1, 15, 10)


def test_next_allowed_is_the_deferral_time_and_ignores_validity() -> None:
    state = customer(pause_until=utc(6, 1))
    assert next_allowed("marketing", NOW, state, rules(quiet=NIGHT)) == utc(6, 1, 5)


@pytest.mark.parametrize(
    "state",
    [
        customer(unsubscribed_at=NOW),
        customer(marketing_consent=False),
        customer(suppressed_reason=BOUNCED),
        customer(caps_override={"marketing": Caps(per_day=0)}),
    ],
    ids=["unsubscribed", "no consent", "suppressed", "cap of zero"],
)
def test_next_allowed_is_never_for_a_barred_customer(state: CustomerState) -> None:
    assert next_allowed("marketing", NOW, state, rules()) is None


def test_next_allowed_for_transactional_mail_is_now_even_at_night() -> None:
    night = local(SOFIA, 1, 15, 23)
    assert next_allowed("transactional", night, customer(), rules(quiet=NIGHT)) == night


# Building and validating


def test_rules_come_from_the_throttle_settings() -> None:
    assert Rules.from_settings(ThrottleSettings()) == Rules(
        min_gap=timedelta(hours=20),
        quiet_hours=(time(21), time(8)),
        caps={"marketing": Caps(1, 2, 6), "relationship": Caps(per_week=1)},
    )


def test_rules_without_quiet_hours_or_caps_come_from_settings_too() -> None:
    settings = ThrottleSettings.model_validate({"quiet_hours": "", "caps": {}})
    assert Rules.from_settings(settings) == rules(timedelta(hours=20))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Contact(datetime(2026, 1, 15, 10), "marketing"),
        lambda: customer(pause_until=datetime(2026, 1, 15, 10)),
        lambda: Caps(per_week=-1),
        lambda: marketing(datetime(2026, 1, 15, 10), customer(), rules()),
        lambda: marketing(NOW, customer(), rules(), valid_until=datetime(2026, 1, 16)),
    ],
    ids=["naive contact", "naive pause", "negative cap", "naive now", "naive valid_until"],
)
def test_naive_times_and_negative_caps_are_refused(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


# Properties, checked against a brute-force search over a ten-minute grid. Every instant in
# these cases (contacts, gaps, pauses, quiet hours, clock changes) falls on the grid, so the
# first grid instant every rule allows is the earliest instant at all.

STEP = timedelta(minutes=10)
GRID_ZONES = ["Pacific/Auckland", "Europe/Sofia", "Asia/Jakarta", "Asia/Manila", "UTC"]
GRID_ZONES += ["America/Los_Angeles"]
CLOCK_CHANGE_WEEKS = [utc(3, 5), utc(3, 26), utc(4, 2), utc(9, 24), utc(10, 22), utc(10, 29)]
QUIET_CHOICES = [None, NIGHT, (time(12), time(14)), (time(23), time(3)), (time(1), time(3, 30))]


def random_case(seed: int) -> tuple[datetime, CustomerState, Rules]:
    rng = random.Random(seed)
    now = rng.choice(CLOCK_CHANGE_WEEKS) + STEP * rng.randrange(6 * 144)
    categories = ["marketing", "relationship", "transactional"]
    ages = [STEP * rng.randrange(35 * 144) for _ in range(rng.randrange(9))]
    history = [Contact(now - age, rng.choice(categories)) for age in ages]
    state = customer(
        ZoneInfo(rng.choice(GRID_ZONES)),
        history,
        pause_until=rng.choice([None, now + STEP * rng.randrange(-50, 300)]),
    )
    caps = Caps(rng.choice([None, 1, 2]), rng.choice([None, 2, 3]), rng.choice([None, 4, 6]))
    throttle = rules(STEP * rng.randrange(150), rng.choice(QUIET_CHOICES), marketing=caps)
    return now, state, throttle


def allowed_by_brute_force(moment: datetime, state: CustomerState, throttle: Rules) -> bool:
    """Each rule checked the obvious way, for contacts that all lie at or before ``moment``."""
    if state.pause_until is not None and moment < state.pause_until:
        return False
    throttled = [c.at for c in state.history if c.category != "transactional"]
    if any(moment - at < throttle.min_gap for at in throttled):
        return False
    caps = throttle.caps["marketing"]
    same = [c.at for c in state.history if c.category == "marketing"]
    for limit, days in ((caps.per_day, 1), (caps.per_week, 7), (caps.per_30d, 30)):
        recent = [at for at in same if moment - timedelta(days=days) < at <= moment]
        if limit is not None and len(recent) >= limit:
            return False
    return throttle.quiet_hours is None or not quiet_by_brute_force(moment, state, throttle)


def quiet_by_brute_force(moment: datetime, state: CustomerState, throttle: Rules) -> bool:
    assert throttle.quiet_hours is not None
    start, end = throttle.quiet_hours
    wall = moment.astimezone(state.zone).time()
    return start <= wall < end if start < end else not end <= wall < start


def first_allowed_by_brute_force(now: datetime, state: CustomerState, throttle: Rules) -> datetime:
    moment = now
    while not allowed_by_brute_force(moment, state, throttle):
        moment += STEP
    return moment


@pytest.mark.parametrize("seed", range(250))
def test_the_decision_is_the_earliest_instant_every_rule_allows(seed: int) -> None:
    now, state, throttle = random_case(seed)
    expected = first_allowed_by_brute_force(now, state, throttle)
    decision = marketing(now, state, throttle)
    assert decision.action == ("send" if expected == now else "defer")
    assert (decision.at or now) == expected
    assert next_allowed("marketing", now, state, throttle) == expected


@pytest.mark.parametrize("seed", range(60))
def test_asking_again_before_the_deferred_time_gives_the_same_time(seed: int) -> None:
    now, state, throttle = random_case(seed)
    settled = next_allowed("marketing", now, state, throttle)
    assert settled is not None
    later = now + (settled - now) * random.Random(seed).random()
    assert next_allowed("marketing", later, state, throttle) == settled
