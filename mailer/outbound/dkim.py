"""DKIM: every message signed with the installation's keys, so providers can trust its From.

Keys are standard PKCS#8 PEM files (what `mailer dkim keygen` writes and OpenSSL reads),
RSA or Ed25519; the algorithm is the key's. With several selectors every message carries
one signature per key: an Ed25519 signature beside an RSA one (RFC 8463 advises both while
receivers learn Ed25519), or the old and the new key while a rotation's DNS spreads.

Signing is on the send path, so it is done here in a few passes over bytes: the message is
in the wire form ``compose`` writes (CRLF lines), the headers are canonicalized "relaxed"
and the body "simple" (RFC 6376 3.4) by this module, and the signature is made with
`cryptography` (OpenSSL) on a key parsed once per process. dkimpy, which verifiers use,
checks these signatures in the tests; its own parsing cost more than the RSA signature.
Delivery signs each message in a render worker right after composing it
(``mailer.outbound.finishing``); the worker gets the keys as PEM and parses them once, so
signing runs beside the daemon's sends rather than in its turn.
The signature covers the headers a provider judges the message by (From, To, Subject, Date,
Message-ID, List-Unsubscribe and List-Unsubscribe-Post, which RFC 8058 wants signed) and
the MIME headers, when present.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from mailer.core.errors import ConfigError, Problem

if TYPE_CHECKING:  # a render worker signs without ever loading the configuration
    from mailer.core.config import Config

Algorithm = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# signed when present, in this order; RFC 6376 requires From
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"auto-submitted",
    b"mime-version",
    b"content-type",
)
_SIGNED = frozenset(SIGNED_HEADERS)
MIN_RSA_BITS = 1024  # what RFC 8301 requires verifiers to accept at least
RSA_BITS = 2048
_WSP = re.compile(rb"[ \t]+")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_FIELD_START = re.compile(rb"\r\n(?![ \t])")  # a line break that does not fold
# a message is hashed once either way; past this size of attachments copying them to a
# render worker and back (a batch of 200 with 10 MB attachments would be 2 GB through a
# pipe) costs more than composing and signing the message in the daemon
SHIP_AT_MOST = 256 * 1024


class KeyProblem(ValueError):
    """A key that cannot sign: unreadable, of another kind, or too weak; says which."""


@dataclass(frozen=True, slots=True)
class Key:
    """One selector's key, parsed once: signing is per message, reading the PEM is not."""

    selector: str
    domain: str
    private: PrivateKey

    @property
    def algorithm(self) -> Algorithm:
        return "ed25519" if isinstance(self.private, ed25519.Ed25519PrivateKey) else "rsa"

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def public_record(self) -> str:
        """The value of the TXT record at ``dns_name`` that verifies this key."""
        public = self.private.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"

    @property
    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def signature(self, signed: bytes) -> bytes:
        if isinstance(self.private, ed25519.Ed25519PrivateKey):
            # RFC 8463: Ed25519 signs the SHA-256 hash of the data, not the data
            return self.private.sign(hashlib.sha256(signed).digest())
        return self.private.sign(signed, padding.PKCS1v15(), hashes.SHA256())


KeySpec = tuple[tuple[str, str, bytes], ...]  # (selector, domain, PEM) of each key


@dataclass(frozen=True, slots=True)
class Signer:
    """The keys every message is signed with. Pickled (to a render worker) as their PEM,
    which each process parses once (``_parsed``)."""

    keys: tuple[Key, ...]
    _spec: KeySpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = tuple((key.selector, key.domain, key.pem) for key in self.keys)
        object.__setattr__(self, "_spec", spec)

    def __reduce__(self) -> tuple[Callable[[KeySpec], Signer], tuple[KeySpec]]:
        return _parsed, (self._spec,)

    def sign(self, message: bytes, now: datetime) -> bytes:
        """The message with one DKIM-Signature per key in front of its headers."""
        wire = _wire(message)
        names, signed, body_hash = _digest(wire)
        at = int(now.timestamp())
        return b"".join(_field(key, names, signed, body_hash, at) for key in self.keys) + message


@functools.cache
def _parsed(spec: KeySpec) -> Signer:
    """The signer for these keys, parsed once in each process that is handed them."""
    return Signer(tuple(load(selector, domain, pem) for selector, domain, pem in spec))


def _wire(message: bytes) -> bytes:
    """The message as SMTP carries it, every line ending in CRLF: what ``compose`` writes
    already (counted, not copied), else converted as the SMTP client will."""
    lines = message.count(b"\n")
    if lines == message.count(b"\r\n") == message.count(b"\r"):
        return message
    return _LINE_END.sub(b"\r\n", message)


def _digest(wire: bytes) -> tuple[list[bytes], bytes, bytes]:
    """The names of the headers signed, their relaxed canonical form (RFC 6376 3.4.2), and
    the body hash under "simple" (3.4.3: trailing empty lines dropped, one CRLF kept)."""
    split = wire.find(b"\r\n\r\n")
    head, start = (wire, len(wire)) if split < 0 else (wire[: split + 2], split + 4)
    last: dict[bytes, bytes] = {}  # a verifier takes each header's last occurrence (5.4.2)
    for raw in _FIELD_START.split(head):
        name, colon, value = raw.partition(b":")
        key = name.rstrip(b" \t").lower()
        if colon and key in _SIGNED:
            last[key] = value
    names = [name for name in SIGNED_HEADERS if name in last]
    signed = b"".join(_relaxed(name, last[name]) + b"\r\n" for name in names)
    end = len(wire)
    while end - 2 >= start and wire[end - 2 : end] == b"\r\n":
        end -= 2
    body = hashlib.sha256(memoryview(wire)[start:end])
    body.update(b"\r\n")
    return names, signed, base64.b64encode(body.digest())


def _relaxed(name: bytes, value: bytes) -> bytes:
    """One header field canonicalized "relaxed", without its line break: the name in lower
    case, the value unfolded, runs of spaces and tabs made one space, none at its ends."""
    unfolded = value.replace(b"\r\n", b"")
    return name + b":" + _WSP.sub(b" ", unfolded).strip(b" \t")


def _field(key: Key, names: list[bytes], signed: bytes, body_hash: bytes, at: int) -> bytes:
    """One DKIM-Signature field (RFC 6376 section 5): its tags, then b= over the signed
    headers and this field itself with b= empty, canonicalized as they are."""
    algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
    tags = [
        b"v=1",
        b"a=" + algorithm,
        b"c=relaxed/simple",
        b"d=" + key.domain.encode(),
        b"s=" + key.selector.encode(),
        b"t=%d" % at,
        b"h=" + b":".join(names),
        b"bh=" + body_hash,
    ]
    value = b" " + b";\r\n\t".join(tags) + b";\r\n\tb="
    # the field's own text is hashed without its trailing line break
    signature = base64.b64encode(key.signature(signed + _relaxed(b"dkim-signature", value)))
    folded = b"\r\n\t ".join(signature[i : i + 64] for i in range(0, len(signature), 64))
    return b"DKIM-Signature:" + value + folded + b"\r\n"


def from_config(cfg: Config) -> Signer | None:
    """The configured keys, or None when no selector is named; a key that is missing,
    unreadable or unfit is a ConfigError naming the setting that points at it, so `mailer
    check` and start-up stop on it instead of sending mail that fails verification."""
    sender = cfg.settings.sender
    if not sender.dkim_selector:
        return None
    keys, problems = [], []
    for selector in sender.dkim_selector:
        where, name, read = _source(cfg, selector)
        try:
            keys.append(load(selector, signing_domain(cfg), read()))
        except OSError as exc:
            problems.append(Problem(where, f"cannot read the key {name}: {exc.strerror or exc}"))
        except KeyProblem as exc:
            problems.append(Problem(where, f"the key in {name} is {exc}"))
    if problems:
        raise ConfigError(problems)
    return Signer(tuple(keys))


def signing_domain(cfg: Config) -> str:
    """``[sender] dkim_domain``, else the From address's domain."""
    sender = cfg.settings.sender
    return sender.dkim_domain or parseaddr(sender.from_)[1].rpartition("@")[2].lower()


def key_path(cfg: Config, selector: str) -> Path:
    """Where `mailer dkim keygen` keeps a selector's key unless told otherwise."""
    return cfg.data_dir / "dkim" / f"{selector}.pem"


def _source(cfg: Config, selector: str) -> tuple[str, str, Callable[[], bytes]]:
    """The setting that points at a selector's key, the key's name, and how to read it."""
    sender = cfg.settings.sender
    if sender.dkim_key_env:
        value = cfg.secret("sender", "dkim_key_env").encode()
        return cfg.where("sender", "dkim_key_env"), f"${sender.dkim_key_env}", lambda: value
    path = cfg.resolve(sender.dkim_key_file) if sender.dkim_key_file else key_path(cfg, selector)
    key = "dkim_key_file" if sender.dkim_key_file else "dkim_selector"
    return cfg.where("sender", key), str(path), path.read_bytes


def generate(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def write_new(path: Path, private: PrivateKey) -> None:
    """Written readable by its owner only, and never over an existing key: a key that
    replaced the published one would fail every signature until DNS caught up."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def load(selector: str, domain: str, data: bytes) -> Key:
    """The key in PEM ``data``; KeyProblem says what is wrong with it."""
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyProblem("encrypted; mailer needs it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyProblem("not a PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyProblem(f"a {type(private).__name__}; DKIM signs with RSA or Ed25519 keys")
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < MIN_RSA_BITS:
        raise KeyProblem(
            f"an RSA key of {private.key_size} bits; receivers ignore signatures made with "
            f"fewer than {MIN_RSA_BITS} (RFC 8301): make one of {RSA_BITS}"
        )
    return Key(selector, domain, private)


def published_key(txt: str) -> tuple[str, str]:
    """The key type and public key in a TXT record as a DNS panel, a zone file or `dig`
    shows it (quoted strings, spaces, parentheses); no ``p=`` is a ValueError."""
    joined = "".join(part for part in txt.split('"')[1::2]) if '"' in txt else txt
    tags: dict[str, str] = {}
    for tag in joined.split(";"):
        name, _, value = tag.partition("=")
        if name.strip():
            tags[name.strip()] = "".join(value.split())
    if not tags.get("p"):
        raise ValueError("no public key (p=) in the record")
    return tags.get("k", "rsa"), tags["p"]


def zone_line(key: Key) -> str:
    """The record as a zone file line: a TXT string holds at most 255 characters, so a
    2048-bit RSA key is split into quoted strings that DNS joins again."""
    value = key.public_record
    quoted = " ".join(f'"{value[i : i + 250]}"' for i in range(0, len(value), 250))
    return f"{key.dns_name}. IN TXT ( {quoted} )"
