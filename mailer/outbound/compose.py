"""Turns a rendered message into the exact bytes handed to SMTP.

Building a MIME tree with `email.message.EmailMessage` costs about 1.6 ms a message, ten
times the template, and would cap a sender near 400 messages/s (measured). The messages
mailer sends have one fixed shape, so this module writes their bytes directly; the stdlib
still does the parts that are easy to get wrong (address quoting, dates, RFC 2231,
quoted-printable and base64).

Customer data never breaks a message or adds a header: every control character in a header
value becomes a space, so CR/LF cannot start a new header; non-ASCII names and subjects
become RFC 2047 encoded words; header lines fold at 78 where words allow and are refused
past 998; bodies are CRLF-normalised UTF-8 that decodes back to exactly what was given.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import encode_rfc2231, format_datetime, formataddr, parseaddr, quote
from functools import lru_cache
from types import MappingProxyType

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ":"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 2045 token
_MEDIA_TYPE = re.compile(rf"{_TOKEN.pattern}/{_TOKEN.pattern}")
_ATEXT = r"[^\x00-\x20\x7f-\U0010ffff<>()\[\],;:\\\"@]+"  # ASCII only: no SMTPUTF8
_ADDRESS = re.compile(rf"{_ATEXT}@{_ATEXT}")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_MESSAGE_ID = re.compile(rf"<{_ATEXT}@{_ATEXT}>")
_FOLD_POINT = re.compile(r"(?<! ) ")  # the first space of a run: the rest stays with the word
_URI_UNSAFE = re.compile(r"[^!-~]|[<>]")  # inside <...>: printable ASCII, no angle brackets
# Anything that would not survive every relay untouched as 7bit: non-ASCII or control bytes,
# trailing whitespace (some relays strip it), lines over 76, bare CR or LF, and "From "
# at a line start (mbox writers turn it into ">From "). Long lines are looked for from line
# starts only: tried at every byte, that branch cost ~15 us a KB of text.
_NOT_7BIT = re.compile(
    rb"[^\t\r\n -~]|[ \t](?:\r|\Z)|(?:\A|\n)[^\r\n]{77}|\r(?!\n)|(?<!\r)\n|(?:\A|\n)From "
)
_LONG_LINE = re.compile(rb"(?:\A|\n)[^\r\n]{77}")  # in CRLF text only: a bare CR starts no line
_HIGH_BYTES = bytes(range(128, 256))
# Headers compose writes itself: a second copy from `headers` would make the message ambiguous.
_COMPOSED = frozenset(
    {"date", "from", "to", "reply-to", "subject", "message-id", "mime-version"}
    | {"content-type", "content-transfer-encoding", "content-disposition"}
)
_FOLD_AT = 78
_MAX_LINE = 998
_WORD_BYTES = 42  # base64s to 56 characters: "Reply-To: =?utf-8?b?...?=" stays within 78
_LONGEST_RAW_WORD = 76
_LONGEST_RAW_NAME = 56  # quoted, after "To: ", it still fits in 78
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """An extra MIME part, such as a calendar invitation; `filename` makes it an attachment."""

    content_type: str
    data: bytes
    params: Mapping[str, str] = field(default_factory=dict)
    filename: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """Who a message is from and to, and its identity; `to_name` is customer data."""

    from_: str
    to_address: str
    to_name: str = ""
    reply_to: str | None = None
    message_id: str = ""
    date: datetime | None = None


def make_message_id(domain: str) -> str:
    """A Message-ID nobody can guess or collide with: 128 random bits at our domain."""
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"not a usable Message-ID domain: {domain!r}")
    return f"<{secrets.token_hex(16)}@{domain}>"


def list_unsubscribe_headers(web_url: str | None, mailto: str | None) -> dict[str, str]:
    """RFC 2369 List-Unsubscribe, web link first; RFC 8058 one-click only with an https URL,
    because that is the one mailbox providers POST to when the reader clicks Unsubscribe.
    A plain http link (a local installation) is listed but offers no one-click POST."""
    targets = []
    if web_url is not None:
        if not web_url.startswith(("https://", "http://")):
            raise ValueError(f"List-Unsubscribe needs an http(s) URL: {web_url!r}")
        targets.append(web_url)
    if mailto is not None:
        targets.append(mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}")
    for target in targets:
        if _URI_UNSAFE.search(target):
            raise ValueError(f"not usable in List-Unsubscribe: {target!r}")
    headers = {"List-Unsubscribe": ", ".join(f"<{t}>" for t in targets)} if targets else {}
    if web_url is not None and web_url.startswith("https://"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def compose(
    envelope: Envelope,
    subject: str,
    text: str,
    html: str | None,
    *,
    headers: Mapping[str, str] = _NO_HEADERS,
    alternatives: Sequence[Part] = (),
    attachments: Sequence[Part] = (),
) -> bytes:
    """The message in SMTP wire form (CRLF lines, ending in CRLF), ready for DATA.

    Raises ValueError for what no encoding can make safe: an unusable address, Message-ID,
    extra header name or media type, a naive date, or a header word too long for a line.
    """
    head = _envelope_headers(envelope, subject) + "MIME-Version: 1.0\r\n"
    head += "".join(_extra_header(name, value) for name, value in headers.items())
    return head.encode("ascii") + _body(text, html, alternatives, attachments)


def _envelope_headers(envelope: Envelope, subject: str) -> str:
    """Date, From, To, Reply-To, Subject and Message-ID; missing ids and dates are made here."""
    sender = _parse_mailbox(envelope.from_)[1]
    when = envelope.date or datetime.now(UTC)
    if when.utcoffset() is None:
        raise ValueError("the Date header needs an aware datetime")
    message_id = envelope.message_id or make_message_id(sender.rpartition("@")[2])
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"not a usable Message-ID: {message_id!r}")
    to_address = _checked_address(envelope.to_address)
    lines = [
        _date_line(when, when.utcoffset()),
        _own_line("From", envelope.from_),
        _fold("To", _mailbox_words(_one_line(envelope.to_name), to_address)),
    ]
    if envelope.reply_to is not None:
        lines.append(_own_line("Reply-To", envelope.reply_to))
    lines.append(_fold("Subject", _text_words(_one_line(subject))))
    lines.append(_fold("Message-ID", [message_id]))
    return "".join(lines)


def _extra_header(name: str, value: str) -> str:
    """A caller's header. Its value may be structured (List-Unsubscribe, References), so ASCII
    is folded as given; only non-ASCII text is encoded, which only unstructured fields hold."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"not a valid header field name: {name!r}")
    if name.lower() in _COMPOSED:
        raise ValueError(f"compose writes the {name} header itself")
    value = _one_line(value)
    return _fold(name, _FOLD_POINT.split(value) if value.isascii() else _encoded_words(value))


@lru_cache(maxsize=64)
def _parse_mailbox(mailbox: str) -> tuple[str, str]:
    """Our own "Name <addr>" from config, parsed once: it is the same for every message."""
    name, address = parseaddr(mailbox)
    return _one_line(name), _checked_address(address)


@lru_cache(maxsize=16)
def _date_line(when: datetime, offset: timedelta | None) -> str:
    """The Date header: a batch's messages share one time, so it is written once for them.
    ``offset`` is in the key because equal times in two zones are equal datetimes."""
    return _fold("Date", [format_datetime(when)])


@lru_cache(maxsize=64)
def _own_line(name: str, mailbox: str) -> str:
    """From or Reply-To, our own addresses from config: the same line for every message."""
    return _fold(name, _mailbox_words(*_parse_mailbox(mailbox)))


def usable_address(address: str) -> bool:
    """One plain ASCII addr-spec, the only kind a message is addressed to: a customer's
    address must never add a second recipient or text to the header. (Non-ASCII addresses
    would need SMTPUTF8.)"""
    return _ADDRESS.fullmatch(address) is not None


def _checked_address(address: str) -> str:
    if not usable_address(address):
        raise ValueError(f"not a usable email address: {address!r}")
    return address


def _one_line(value: str) -> str:
    """Control characters (CR and LF above all) become spaces, so customer data cannot
    end a header line and start a new header."""
    return _CONTROL.sub(" ", value).strip(" ")


def _mailbox_words(name: str, address: str) -> list[str]:
    """A mailbox as foldable words. formataddr quotes ASCII names with specials
    ("O'Connor, Liam"); non-ASCII, long, or encoded-word-like names become encoded words."""
    if not name:
        return [address]
    if name.isascii() and "=?" not in name and len(name) <= _LONGEST_RAW_NAME:
        return [formataddr((name, address)).rpartition(" <")[0], f"<{address}>"]
    return [*_encoded_words(name), f"<{address}>"]


def _text_words(text: str) -> list[str]:
    """Unstructured text (a subject) as foldable words: raw when plain ASCII; encoded when it
    has non-ASCII, a word no line can hold, or text a reader would decode as an encoded word."""
    words = _FOLD_POINT.split(text)
    if text.isascii() and "=?" not in text and max(map(len, words)) <= _LONGEST_RAW_WORD:
        return words
    return _encoded_words(text)


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 base64 words of whole UTF-8 characters, each short enough for a folded line.

    Written here because `email.header.Header` takes about 40 us for one subject; readers
    join adjacent encoded words and drop the space between them, so the text is exact.
    """
    data, words, start = text.encode("utf-8"), [], 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # never split a character
            end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"=?utf-8?b?{encoded}?=")
        start = end
    return words


def _fold(name: str, words: Sequence[str]) -> str:
    """One header field with its CRLF, folded before a word that would pass column 78.

    Words are joined by single spaces and every fold is CRLF + space, so unfolding gives the
    value back exactly; a word keeps any further spaces of a run in front of it, so no line is
    only whitespace. A word never splits; a line past 998 is refused, never sent broken.
    """
    first = line = f"{name}:"
    lines = []
    for word in words:
        if line != first and len(line) + 1 + len(word) > _FOLD_AT:
            lines.append(line)
            line = ""
        line += f" {word}"
    lines.append(line)
    if max(map(len, lines)) > _MAX_LINE:
        raise ValueError(f"the {name} header has a word too long for one line")
    return "\r\n".join(lines) + "\r\n"


def _body(
    text: str, html: str | None, alternatives: Sequence[Part], attachments: Sequence[Part]
) -> bytes:
    """text, then HTML, then alternatives as multipart/alternative (a lone text part stays
    single); multipart/mixed around that only when there are attachments."""
    parts = [_text_part("plain", text)]
    if html is not None:
        parts.append(_text_part("html", html))
    parts += [_extra_part(part) for part in alternatives]
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    if attachments:
        body = _multipart("mixed", [body, *(_extra_part(part) for part in attachments)])
    return body


def _text_part(subtype: str, text: str) -> bytes:
    """A UTF-8 text part with CRLF line ends, MIME's canonical form for text."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode("utf-8")
    encoding, body = _encode_text(data)
    return _entity(f"text/{subtype}", {"charset": "utf-8"}, None, encoding, body)


def _extra_part(part: Part) -> bytes:
    """A caller's part: its bytes are kept exactly, as 7bit when safe, else base64."""
    if not _MEDIA_TYPE.fullmatch(part.content_type):
        raise ValueError(f"not a valid media type: {part.content_type!r}")
    if _is_7bit(part.data):
        return _entity(part.content_type, part.params, part.filename, "7bit", part.data)
    return _entity(part.content_type, part.params, part.filename, "base64", _base64(part.data))


def _entity(
    media_type: str, params: Mapping[str, str], filename: str | None, encoding: str, body: bytes
) -> bytes:
    """A part's headers and body; the body is empty or ends with CRLF."""
    head = _fold("Content-Type", _with_params(media_type, params))
    head += f"Content-Transfer-Encoding: {encoding}\r\n"
    if filename is not None:
        head += _fold("Content-Disposition", _with_params("attachment", {"filename": filename}))
    return f"{head}\r\n".encode("ascii") + body


def _with_params(value: str, params: Mapping[str, str]) -> list[str]:
    """`value; k=v; ...` as foldable words. Values are quoted when not tokens and RFC 2231
    encoded when not ASCII (a filename in the customer's language)."""
    words = [value]
    for name, raw in params.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"not a valid parameter name: {name!r}")
        param = _one_line(raw)
        if not param.isascii():
            words.append(f"{name}*={encode_rfc2231(param, 'utf-8')}")
        elif _TOKEN.fullmatch(param):
            words.append(f"{name}={param}")
        else:
            words.append(f'{name}="{quote(param)}"')
    return [f"{word};" for word in words[:-1]] + words[-1:]


def _multipart(subtype: str, parts: Sequence[bytes]) -> bytes:
    """A multipart entity. Each part's body ends with CRLF (or is empty), and the CRLF written
    before each delimiter belongs to the delimiter, so no part gains or loses a line end."""
    boundary = _boundary(parts)
    delimiter = f"--{boundary}".encode("ascii")
    head = _fold("Content-Type", [f"multipart/{subtype};", f'boundary="{boundary}"'])
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return f"{head}\r\n".encode("ascii") + body + delimiter + b"--\r\n"


def _boundary(parts: Sequence[bytes]) -> str:
    """A random boundary that appears in no part. "=_" cannot occur in quoted-printable or
    base64, so only 7bit content is ever at risk, and that is checked too."""
    while True:
        boundary = f"=_{secrets.token_hex(12)}"
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary


def _encode_text(data: bytes) -> tuple[str, bytes]:
    """7bit when already safe on any relay; quoted-printable while it stays readable (mostly
    ASCII text and HTML, which spam filters read as is); base64 for mostly non-ASCII text."""
    if _is_7bit(data):
        return "7bit", data
    if 6 * (len(data) - len(data.translate(None, _HIGH_BYTES))) <= len(data):
        encoded = _quoted_printable(data)
        if b"From " not in encoded:
            return "quoted-printable", encoded
        encoded = b"\n".join(_escape_from(line) for line in encoded.split(b"\n"))
        if not _LONG_LINE.search(encoded):  # unless "=46" pushed a line past 76
            return "quoted-printable", encoded
    return "base64", _base64(data)


def _is_7bit(data: bytes) -> bool:
    """Safe to send as it is; it must end with CRLF, or the line end SMTP adds would be
    read as part of the content."""
    return not data or (data.endswith(b"\r\n") and data.isascii() and not _NOT_7BIT.search(data))


def _quoted_printable(data: bytes) -> bytes:
    """binascii copies the hard line end it sees first into its soft breaks, so text without
    any gets CRLF here; text without a final line end ends in a soft break, which adds none."""
    encoded = binascii.b2a_qp(data, istext=True)
    if b"\n" not in data:
        encoded = encoded.replace(b"\n", b"\r\n")
    return encoded if data.endswith(b"\r\n") else encoded + b"=\r\n"


def _escape_from(line: bytes) -> bytes:
    """Writes a leading "From " as "=46rom ", which mbox writers leave alone, not ">From "."""
    return b"=46" + line[1:] if line.startswith(b"From ") else line


def _base64(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")
