"""VERP: each message returns to an address of its own, so a bounce names it exactly.

A bounce often garbles or omits the failed address (forwarders, aliases, servers that
report only "user unknown"), but it always goes to the envelope sender. So the envelope
sender carries the message's outbox id, ``bounces+m42-3f9c0d1a2b@example.com``, with a
signature over the id: a forged bounce cannot suppress a customer by guessing ids.
Local parts may be lower-cased on the way back, so everything in them is lower case.
"""

from __future__ import annotations

import hashlib
import hmac
import re

SIGNATURE_HEX = 10  # 40 bits: a forger would need about a trillion guesses per message
_TAG = re.compile(r"\+m(\d{1,18})-([0-9a-f]{" + str(SIGNATURE_HEX) + r"})@")


def address(secret: bytes, return_path: str, outbox_id: int) -> str:
    """The envelope sender for one message: ``return_path`` with +m<ID>-<SIGNATURE>."""
    local, _, domain = return_path.rpartition("@")
    return f"{local}+m{outbox_id}-{_signature(secret, outbox_id)}@{domain}"


def message_id(secret: bytes, return_path: str, text: str) -> int | None:
    """The outbox id an address made by ``address`` carries, if ``text`` holds one for
    this return path with a valid signature; case is ignored, as MTAs may change it."""
    local, _, domain = return_path.lower().rpartition("@")
    lowered = text.lower()
    for found in _TAG.finditer(lowered):
        ours = lowered[: found.start()].endswith(local) and lowered[found.end() :].startswith(
            domain
        )
        outbox_id = int(found.group(1))
        if ours and hmac.compare_digest(found.group(2), _signature(secret, outbox_id)):
            return outbox_id
    return None


def _signature(secret: bytes, outbox_id: int) -> str:
    digest = hmac.new(secret, b"verp:%d" % outbox_id, hashlib.sha256).hexdigest()
    return digest[:SIGNATURE_HEX]
