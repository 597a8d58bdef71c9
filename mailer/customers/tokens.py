"""Signed customer tokens for unsubscribe and preference links.

A token names one customer and carries an HMAC, so it cannot be forged or guessed from
another, and it never expires: an unsubscribe link in a year-old newsletter must work.
A subscription's confirmation token (double opt-in) does expire: it carries its end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from mailer.core.config import Config
from mailer.core.errors import ConfigError, Problem

SECRET_FILE = "secret.key"
# The subject our List-Unsubscribe mailto: link asks for: "unsubscribe <token>".
_CONFIRM = "confirm-subscription:"  # what a confirmation token's MAC covers before its payload
_LINK = re.compile(r"/unsubscribe/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
_MAIL_REQUEST = re.compile(r"\bunsubscribe\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", re.IGNORECASE)


def load_secret(cfg: Config) -> bytes:
    """The key from the variable `[web] secret_env` names, else one kept in the data folder."""
    configured = cfg.secret("web", "secret_env")
    if configured:
        return configured.encode()
    path = cfg.data_dir / SECRET_FILE
    try:
        return _stored_secret(path)
    except OSError as exc:
        message = f"cannot keep the link-signing key in {path}: {exc.strerror or exc}"
        raise ConfigError([Problem(cfg.where("paths", "data"), message)]) from None


def _stored_secret(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:16])


def sign(secret: bytes, customer_id: int) -> str:
    payload = _b64(str(customer_id).encode())
    return f"{payload}.{_mac(secret, payload)}"


def verify(secret: bytes, token: str) -> int | None:
    """The customer id in a valid token; None for anything forged, altered or malformed."""
    payload, _, mac = token.partition(".")
    # bytes: compare_digest refuses non-ASCII str, and a link may carry anything
    if not payload or not hmac.compare_digest(mac.encode(), _mac(secret, payload).encode()):
        return None
    try:
        return int(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None


def requested_by_mail(secret: bytes, subject: str) -> int | None:
    """The customer whose List-Unsubscribe ``mailto:`` request this subject is, if valid."""
    found = _MAIL_REQUEST.search(subject)
    return verify(secret, found.group(1)) if found else None


def customer_in_link(secret: bytes, list_unsubscribe: str) -> int | None:
    """The customer a List-Unsubscribe header's https link names, if its token is valid:
    a spam complaint returns our message, and this link says whose it was."""
    found = _LINK.search(list_unsubscribe)
    return verify(secret, found.group(1)) if found else None


def sign_confirmation(secret: bytes, customer_id: int, expires: datetime) -> str:
    """A double opt-in link's token: one customer, valid until ``expires``. Signed apart
    from unsubscribe tokens, so neither kind can be passed off as the other."""
    payload = _b64(f"{customer_id}:{int(expires.timestamp())}".encode())
    return f"{payload}.{_mac(secret, _CONFIRM + payload)}"


def read_confirmation(secret: bytes, token: str) -> tuple[int, datetime] | None:
    """(customer, expiry) of a confirmation token we signed, expired or not; None for one we
    did not sign. Expired, it still says whose it was: their page can say it expired."""
    payload, _, mac = token.partition(".")
    expected = _mac(secret, _CONFIRM + payload).encode()
    if not payload or not hmac.compare_digest(mac.encode(), expected):
        return None
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        customer, _, until = decoded.partition(b":")
        return int(customer), datetime.fromtimestamp(int(until), UTC)
    except ValueError:
        return None
