"""Support reads why a message got no automatic answer in words, never a rule's name."""

from __future__ import annotations

import pytest

from mailer.inbound import autoreply, plain_words
from mailer.inbound.plain_words import Reason, decision, reason


@pytest.mark.parametrize("rule", autoreply.RULES, ids=lambda rule: rule.name)
def test_every_rule_in_the_chain_has_words(
    rule: autoreply.Rule,
) -> None:
    words = plain_words.REASONS.get(rule.name)
    assert words, f"add wording for the rule {rule.name!r} to plain_words.REASONS"


@pytest.mark.parametrize("kind", autoreply.KINDS)
def test_every_kind_of_decision_has_words(kind: str) -> None:
    assert plain_words.KINDS.get(kind), f"add wording for the kind {kind!r} to plain_words.KINDS"


def test_the_watchers_own_decisions_have_words() -> None:
    assert {"unsubscribe", "failed"} <= set(plain_words.KINDS)
    assert reason("unparseable: no From header").words == "the message could not be read well"


def test_a_repeat_says_it_was_not_answered_automatically_and_why() -> None:
    recorded = ["once-per-sender: last acknowledged 2026-01-13 12:00 UTC"]
    assert decision("repeat", recorded) == (
        "a person writing again, not answered automatically: "
        "we already answered this sender recently"
    )
    assert reason(recorded[0]) == Reason(
        "we already answered this sender recently", "last acknowledged 2026-01-13 12:00 UTC"
    )


def test_robots_mail_is_named_for_what_it_is() -> None:
    assert decision("auto-reply", ["auto-submitted: Auto-Submitted: auto-replied"]) == (
        "an out-of-office or other automatic reply"
    )
    assert decision("bounce", ["report: Content-Type: multipart/report"]).startswith("a bounce")


def test_an_acknowledged_message_and_an_undecided_one() -> None:
    assert decision("inquiry", []) == "a person's message"
    assert decision(None, []) == "not decided yet"


def test_a_reason_the_table_does_not_know_is_shown_as_recorded() -> None:
    recorded = "List-Unsubscribe request by mail for customer 7"
    assert reason(recorded) == Reason(recorded, "")
