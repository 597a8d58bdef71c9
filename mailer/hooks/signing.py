"""Signatures as the Standard Webhooks specification makes them, so a receiver can use any
of its libraries: HMAC-SHA256 over ``id.timestamp.body``, sent as ``v1,<base64>``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_MARK = "whsec_"
SECRET_BYTES = 32  # 256 bits, as long as the HMAC-SHA256 key can use


def new_secret() -> str:
    """A signing secret as the specification serialises one: ``whsec_`` and base64."""
    return SECRET_MARK + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_MARK))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value for one delivery attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers the specification names; the id is the same on every attempt, so a
    receiver can drop a delivery it already handled."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(secret: str, given: dict[str, str], body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver checks: one of the space-separated ``v1`` signatures matches, compared
    in constant time, and the timestamp is within ``tolerance`` seconds of its clock."""
    timestamp = int(given["webhook-timestamp"])
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, given["webhook-id"], timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in given["webhook-signature"].split())
