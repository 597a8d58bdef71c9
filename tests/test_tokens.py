"""Unsubscribe tokens: one per customer, unforgeable, never expiring."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailer.customers import tokens
from tests.configs import shipped_config

SECRET = b"k" * 32


def test_a_token_names_its_customer() -> None:
    assert tokens.verify(SECRET, tokens.sign(SECRET, 42)) == 42


@pytest.mark.parametrize(
    "token",
    [
        "",
        "NDI",  # the payload alone
        "NDI.",
        "NDM." + tokens.sign(SECRET, 42).split(".")[1],  # another id, 42's signature
        tokens.sign(b"another key" * 3, 42),
        tokens.sign(SECRET, 42)[:-1] + "A",
        "!!!.@@@",
        "abc.\u00e9",  # non-ASCII in a link: refused, not an error
    ],
)
def test_forged_altered_or_malformed_tokens_name_nobody(token: str) -> None:
    assert tokens.verify(SECRET, token) is None


@pytest.mark.parametrize(
    "subject", ["unsubscribe {t}", "Unsubscribe {t}", "Re: UNSUBSCRIBE {t}", "unsubscribe  {t} "]
)
def test_a_mailto_request_subject_names_the_customer(subject: str) -> None:
    token = tokens.sign(SECRET, 7)
    assert tokens.requested_by_mail(SECRET, subject.format(t=token)) == 7


@pytest.mark.parametrize(
    "subject", ["unsubscribe", "please unsubscribe me", "unsubscribe NDI.forged", "Order 1042"]
)
def test_other_subjects_are_no_unsubscribe_request(subject: str) -> None:
    assert tokens.requested_by_mail(SECRET, subject) is None


def test_without_a_configured_key_one_is_made_once_and_kept_private(tmp_path: Path) -> None:
    cfg = shipped_config(tmp_path, {})
    first = tokens.load_secret(cfg)
    assert tokens.load_secret(cfg) == first and len(first) >= 32
    mode = (cfg.data_dir / tokens.SECRET_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_key_from_the_environment_wins(tmp_path: Path) -> None:
    cfg = shipped_config(
        tmp_path, {"MAILER_WEB__SECRET_ENV": "MAILER_KEY", "MAILER_KEY": "from-the-vault"}
    )
    assert tokens.load_secret(cfg) == b"from-the-vault"
    assert not (cfg.data_dir / tokens.SECRET_FILE).exists()
