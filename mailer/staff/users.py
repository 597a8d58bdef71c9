"""People who sign in to the web app (how many wrong passwords they may try: signins).

Passwords are kept only as argon2id hashes (argon2-cffi: the OWASP recommendation, with
parameters that can be raised later; old hashes are upgraded at the next sign-in).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mailer.core import fieldtypes
from mailer.core.errors import MailerError, NotFound
from mailer.staff import sessions
from mailer.store.models import Role, User

USERS: Table = User.__table__  # type: ignore[attr-defined]
HASHER = PasswordHasher()
MIN_PASSWORD = 10
USER_NAME = re.compile(r"[\w.@-]{1,64}")  # letters of any script, digits and . _ - @


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedIn:
    id: int
    name: str
    role: Role
    timezone: str | None = None  # the zone staff pages show times in; None: the business zone

    def may(self, *roles: Role) -> bool:
        """Admins may do everything; others what their role is listed for."""
        return self.role == Role.ADMIN or self.role in roles


def add(
    conn: Connection, name: str, role: Role, password: str, now: datetime, **details: str | None
) -> int:
    """A new account; ``details`` are display_name, timezone and email (see ``change``).
    The name is what the user types to sign in and what notes and follow-ups are by."""
    _check_name(name)
    values = {
        "name": name,
        "role": role.value,
        "password_hash": _hashed(password),
        "disabled": False,
        "created_at": now,
        **_checked(details),
    }
    try:
        new_id = conn.execute(insert(USERS).values(**values)).inserted_primary_key
    except IntegrityError:
        raise MailerError(f"there is already a user named {name!r}") from None
    assert new_id is not None
    return int(new_id[0])


def check_new(conn: Connection, name: str, **details: str | None) -> None:
    """What ``add`` would refuse but the password: asked before a person types one twice."""
    _check_name(name)
    _checked(details)
    if _exists(conn, name):
        raise MailerError(f"there is already a user named {name!r}")


def check_exists(conn: Connection, name: str) -> None:
    """Asked before a new password is typed for ``name``."""
    if not _exists(conn, name):
        raise NotFound(f"no user named {name!r}")


def _exists(conn: Connection, name: str) -> bool:
    return conn.execute(select(USERS.c.id).where(USERS.c.name == name)).first() is not None


def _check_name(name: str) -> None:
    if not USER_NAME.fullmatch(name):
        raise MailerError(
            f"user name {name!r} is not 1-64 letters, digits or . _ - @ (it is typed to sign in)"
        )


def change(conn: Connection, name: str, **details: str | None) -> None:
    """Set a user's display_name, timezone or email; "" clears one, None leaves it."""
    values = _checked(details)
    if not values:
        raise MailerError("nothing to change: give a display name, a time zone or an address")
    if not conn.execute(update(USERS).where(USERS.c.name == name).values(**values)).rowcount:
        raise NotFound(f"no user named {name!r}")


_CHECKS: dict[str, Callable[[str], str]] = {
    "display_name": str.strip,
    "timezone": lambda text: str(fieldtypes.zone(text)),
    "email": fieldtypes.email_address,
}


def _checked(details: dict[str, str | None]) -> dict[str, str | None]:
    """The details given, validated; an empty one becomes NULL."""
    values: dict[str, str | None] = {}
    for key, value in details.items():
        if value is None:
            continue
        try:
            values[key] = _CHECKS[key](value) if value.strip() else None
        except ValueError as exc:
            raise MailerError(f"{key.replace('_', ' ')}: {exc}") from None
    return values


def find(conn: Connection) -> list[dict[str, Any]]:
    query = select(
        *(USERS.c[key] for key in ("id", "name", "role", "disabled", "created_at")),
        *(USERS.c[key] for key in _CHECKS),
    )
    return [dict(row) for row in conn.execute(query.order_by(USERS.c.name)).mappings()]


def assignable(conn: Connection) -> list[str]:
    """Who may be given inquiries and follow-ups: active support and admin users, by name."""
    may = (Role.SUPPORT, Role.ADMIN)
    return [u["name"] for u in find(conn) if u["role"] in may and not u["disabled"]]


def disable(conn: Connection, name: str) -> None:
    """No more sign-ins, and every session the user has ends at once, in every process."""
    _change_and_sign_out(conn, name, disabled=True)


def set_password(conn: Connection, name: str, password: str) -> None:
    """A new password ends every session signed in with the old one (it may have leaked)."""
    _change_and_sign_out(conn, name, password_hash=_hashed(password))


def _hashed(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise MailerError(f"the password must have at least {MIN_PASSWORD} characters")
    return HASHER.hash(password)


def _change_and_sign_out(conn: Connection, name: str, **values: Any) -> None:
    found = conn.execute(
        update(USERS).where(USERS.c.name == name).values(**values).returning(USERS.c.id)
    ).scalar()
    if found is None:
        raise NotFound(f"no user named {name!r}")
    sessions.end_all(conn, found)


@functools.cache
def _decoy() -> str:
    """Any password check costs a hash: unknown names are checked against this one, so a
    wrong name takes as long as a wrong password and does not reveal who has an account.
    Made on the first sign-in, not at import, so commands that check no password do not
    pay for it."""
    return HASHER.hash("no such user, no such password")


def authenticate(conn: Connection, name: str, password: str) -> SignedIn | None:
    """The user, if the name and password match and the account is not disabled."""
    row = conn.execute(select(USERS).where(USERS.c.name == name)).mappings().first()
    try:
        HASHER.verify(row["password_hash"] if row else _decoy(), password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled"]:
        return None
    if HASHER.check_needs_rehash(row["password_hash"]):
        conn.execute(
            update(USERS).where(USERS.c.id == row["id"]).values(password_hash=HASHER.hash(password))
        )
    return _signed_in(row)


def get(conn: Connection, user_id: int) -> SignedIn | None:
    """The user a session names, unless the account was disabled since."""
    row = conn.execute(select(USERS).where(USERS.c.id == user_id)).mappings().first()
    if row is None or row["disabled"]:
        return None
    return _signed_in(row)


def _signed_in(row: Any) -> SignedIn:
    return SignedIn(
        id=int(row["id"]), name=row["name"], role=Role(row["role"]), timezone=row["timezone"]
    )


def shown_name(conn: Connection, name: str) -> str:
    """How a user signs what reaches customers: the display name when set, else the name."""
    found = conn.execute(select(USERS.c.display_name).where(USERS.c.name == name)).scalar()
    return str(found or name)
