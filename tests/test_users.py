"""Web app accounts: argon2 hashes, disabled accounts, and the sign-in limit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from mailer.core.clock import ManualClock
from mailer.core.errors import MailerError, NotFound
from mailer.staff import users
from mailer.staff.signins import LoginGuard
from mailer.store import db
from mailer.store.models import Role

PASSWORD = "correct horse battery"


def test_a_password_is_kept_only_as_an_argon2_hash(engine: Engine, clock: ManualClock) -> None:
    with engine.begin() as conn:
        users.add(conn, "sam", Role.SUPPORT, PASSWORD, clock.now())
        stored = conn.execute(select(users.USERS.c.password_hash)).scalar_one()
        signed_in = users.authenticate(conn, "sam", PASSWORD)
        assert users.authenticate(conn, "sam", PASSWORD + "!") is None
        assert users.authenticate(conn, "nobody", PASSWORD) is None
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert signed_in is not None and signed_in.role == Role.SUPPORT


@pytest.mark.parametrize(
    ("password", "message"), [("short", "at least 10 characters"), (PASSWORD, "already a user")]
)
def test_bad_accounts_are_refused_with_why(
    engine: Engine, clock: ManualClock, password: str, message: str
) -> None:
    with engine.begin() as conn:
        users.add(conn, "sam", Role.SUPPORT, PASSWORD, clock.now())
    with pytest.raises(MailerError, match=message), engine.begin() as conn:
        users.add(conn, "sam", Role.MARKETING, password, clock.now())


def test_a_disabled_account_cannot_sign_in_and_its_sessions_end(
    engine: Engine, clock: ManualClock
) -> None:
    with engine.begin() as conn:
        sam = users.add(conn, "sam", Role.SUPPORT, PASSWORD, clock.now())
        users.disable(conn, "sam")
        assert users.authenticate(conn, "sam", PASSWORD) is None
        assert users.get(conn, sam) is None
        with pytest.raises(NotFound):
            users.disable(conn, "nobody")


def test_admins_may_everything_others_their_role() -> None:
    support = users.SignedIn(id=1, name="sam", role=Role.SUPPORT)
    admin = users.SignedIn(id=2, name="ada", role=Role.ADMIN)
    assert support.may(Role.SUPPORT) and not support.may(Role.MARKETING) and not support.may()
    assert admin.may(Role.MARKETING) and admin.may()


def test_five_failed_sign_ins_lock_the_name_for_that_client_only(
    engine: Engine, clock: ManualClock
) -> None:
    """Five wrong passwords for sam from one address do not lock sam out everywhere."""
    guard = LoginGuard(engine=engine, attempts=5, window=timedelta(minutes=15))
    for _ in range(5):
        assert guard.attempt("sam", "203.0.113.9", clock.now())  # each fails: none forgiven
    assert not guard.attempt("SAM", "203.0.113.9", clock.now())
    assert guard.attempt("sam", "198.51.100.4", clock.now()), "sam, from his own desk"
    assert guard.attempt("other", "203.0.113.9", clock.now()), "another name from that client"
    clock.advance(timedelta(minutes=15))
    assert guard.attempt("sam", "203.0.113.9", clock.now())


def test_one_client_guessing_at_many_names_is_stopped(engine: Engine, clock: ManualClock) -> None:
    guard = LoginGuard(engine=engine, attempts=5, per_client=20)
    started = [guard.attempt(f"user{n}", "203.0.113.9", clock.now()) for n in range(30)]
    assert started.count(True) == 20
    assert not guard.attempt("sam", "203.0.113.9", clock.now())
    assert guard.attempt("sam", "198.51.100.4", clock.now())


def test_parallel_attempts_count_before_they_finish(engine: Engine, clock: ManualClock) -> None:
    """Forty wrong passwords sent at once to two web processes on one database: only the
    first five get checked at all."""
    other = db.connect(engine.url.render_as_string(hide_password=False))
    guards = [LoginGuard(engine=e, attempts=5) for e in (engine, other)]
    try:
        with ThreadPoolExecutor(8) as pool:
            started = list(
                pool.map(
                    lambda n: guards[n % 2].attempt("sam", "203.0.113.9", clock.now()), range(40)
                )
            )
    finally:
        other.dispose()
    assert started.count(True) == 5


def test_a_success_clears_the_count(engine: Engine, clock: ManualClock) -> None:
    guard = LoginGuard(engine=engine, attempts=2)
    guard.attempt("sam", "203.0.113.9", clock.now())
    guard.succeeded("sam", "203.0.113.9")
    guard.attempt("sam", "203.0.113.9", clock.now())
    assert guard.attempt("sam", "203.0.113.9", clock.now())
    assert not guard.attempt("sam", "203.0.113.9", clock.now())


def test_an_office_behind_one_address_is_not_locked_out_by_signing_in(
    engine: Engine, clock: ManualClock
) -> None:
    guard = LoginGuard(engine=engine, per_client=3)
    for n in range(10):
        assert guard.attempt(f"colleague{n}", "192.0.2.1", clock.now())
        guard.succeeded(f"colleague{n}", "192.0.2.1")


def test_a_users_zone_and_address_are_checked_and_can_be_changed_or_cleared(
    engine: Engine, clock: ManualClock
) -> None:
    with engine.begin() as conn:
        sam = users.add(conn, "sam", Role.SUPPORT, PASSWORD, clock.now(), timezone="Asia/Manila")
        with pytest.raises(MailerError, match="timezone: 'EST' is not an IANA time zone"):
            users.add(conn, "bo", Role.SUPPORT, PASSWORD, clock.now(), timezone="EST")
        with pytest.raises(MailerError, match="email: 'sam@' is not a valid email address"):
            users.change(conn, "sam", email="sam@")
        users.change(conn, "sam", display_name=" Sam I. ", email="sam@northwind.example")
        users.change(conn, "sam", timezone="")
        (row,) = users.find(conn)
        assert (row["display_name"], row["email"], row["timezone"]) == (
            "Sam I.",
            "sam@northwind.example",
            None,
        )
        users.change(conn, "sam", timezone="Europe/Sofia")
        signed_in = users.get(conn, sam)
        assert signed_in is not None and signed_in.timezone == "Europe/Sofia"
        with pytest.raises(NotFound, match="no user named 'zed'"):
            users.change(conn, "zed", email="")
        with pytest.raises(MailerError, match="nothing to change"):
            users.change(conn, "sam", email=None)
