"""Addresses are checked as email-validator checks them, also on the fast path that spares
plain addresses its cost: the same answer, refusal or normalised address, for any text."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.fieldtypes import email_address

# characters of plain addresses, with a few of everything else that may come near them
LOCAL = st.text("aZ09.-_+'", max_size=70) | st.text("a.-_+!#$%&'*/=?^`{|}~\"(),:;<>[]\\ éя")
DOMAIN = st.text("aZ09.-", max_size=70) | st.text("aZ09.-_xn@ ф")
TOP = st.sampled_from(["com", "BG", "c", "co1", "museum", "xn--p1ai", "a" * 63, "a" * 64])


def validator_says(text: str) -> str | None:
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def mailer_says(text: str) -> str | None:
    try:
        return email_address(text)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(LOCAL, DOMAIN, TOP, st.sampled_from(["", " ", "\n"]))
def test_an_address_is_judged_as_email_validator_judges_it(
    local: str, domain: str, top: str, space: str
) -> None:
    text = f"{space}{local}@{domain}.{top}{space}"
    assert mailer_says(text) == validator_says(text.strip())  # mailer strips what it is given


@pytest.mark.parametrize(
    "text",
    [
        "Maria.Petrova+shop@Example.BG",
        "a" * 64 + "@example.com",
        "a" * 65 + "@example.com",
        "ana@" + "b" * 63 + ".com",
        "ana@" + "b" * 64 + ".com",
        "x@" + ".".join(["a" * 60] * 4) + ".com",
        "ana..b@example.com",
        ".ana@example.com",
        "ana@-example.com",
        "ana@ex--ample.com",
        "ana@xn--80ak6aa92e.com",
        "ana@example.123",
    ],
)
def test_edges_of_the_plain_shape_are_judged_alike(text: str) -> None:
    assert mailer_says(text) == validator_says(text)
