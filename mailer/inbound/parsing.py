"""Raw bytes of an inbound mail -> the plain data the inquiry log stores.

Customers' mail arrives in every charset, from every client, sometimes broken. Nothing here
may raise for bad mail: the watcher has already stored the raw bytes, and a customer's
question must reach support even when a header is garbage. What could not be read well is
said in `defects`, in words a support person can follow. Pure: no I/O, no clock.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import MessageDefect
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, MIMEPart
from email.utils import parseaddr, parsedate_to_datetime, unquote

import html_to_markdown

from mailer.core.text import CONTROL, one_line
from mailer.inbound.itip import CalendarReply, calendar_reply

MAX_RAW = 25 * 1024 * 1024
# Feeding the parser in chunks keeps its peak memory near 3x a message instead of 8x.
_CHUNK = 64 * 1024
_SURROGATE = re.compile(r"[\udc80-\udcff]")
_NAME_ADDR = re.compile(r"(?P<name>[^<>]*)<(?P<address>[^<>]*@[^<>]*)>")
# Where each header field starts: a line that is no continuation of the one before.
_FIELD_START = re.compile(rb"(?m)^(?=[^ \t])")
_TRACE = re.compile(
    rb"(received|x-received|delivered-to|x-delivered-to|return-path|x-original-to|envelope-to"
    rb"|received-spf|authentication-results|arc-[a-z-]+|x-spam-[a-z-]+|x-virus-[a-z-]+"
    rb"|x-uid|status|x-status|x-keywords|content-length|lines)[ \t]*:",
    re.IGNORECASE,
)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WORD_CHARSET = re.compile(r"=\?([^?*\s]+)(?:\*[^?]*)?\?[bBqQ]\?")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_REFERENCE = re.compile(r"\[(?:#|[A-Za-z]{2,10}-)\d{1,12}\]")

# Quoted history, as the common clients write it in English, Bulgarian, Russian, German,
# French and Spanish. An attribution line may be wrapped onto a second line (Gmail does).
_ATTRIBUTION = re.compile(
    r"^\s*(?:On|На|Le|Am|El|Il)\s.{0,300}"  # noqa: RUF001
    r"(?:wrote|написа|пише|пишет|schrieb|a écrit|escribió|ha scritto)\s*:\s*$",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(
    r"^\s*-{3,}\s*(?:Original Message|Оригинално съобщение|Исходное сообщение|"
    r"Ursprüngliche Nachricht|Message d'origine)\s*-{3,}\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^\s*\*?(?:From|От|De|Von|От кого)\*?:\s", re.IGNORECASE)
_HEADER_SENT = re.compile(
    r"^\s*\*?(?:Sent|Date|Изпратено|Дата|Отправлено|Envoyé|Gesendet|Enviado)\*?:\s",
    re.IGNORECASE,
)
_BODY_KINDS = ("plain", "html")
_RULE = re.compile(r"^\s*_{10,}\s*$")

# Same conversion as the outgoing text part (templates.py), so support reads HTML-only mail
# the way customers read ours; html-to-markdown drops <script> and <style> with their content.
_TO_TEXT = html_to_markdown.ConversionOptions(
    extract_metadata=False, skip_images=True, strip_tags=["b", "strong", "em", "i"]
)


@dataclass(frozen=True, slots=True)
class Attachment:
    """What support needs to know about an attachment; its content stays in `raw`."""

    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """One inbound message as plain data; `message` is kept for the autoreply rules."""

    message: EmailMessage | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    sender: str
    sender_name: str
    subject: str
    date: datetime | None
    text: str
    reply_text: str
    attachments: tuple[Attachment, ...]
    raw: bytes
    raw_truncated: bool
    defects: tuple[str, ...]
    fingerprint: str  # of the whole message, however much of `raw` is kept
    calendar_reply: CalendarReply | None = None  # an answer to a calendar invitation


def parse(raw: bytes, *, max_raw: int = MAX_RAW) -> Inbound:
    """Parse an inbound message; never raises for bad mail, notes what was wrong instead.

    The whole message is parsed (attachment sizes need it) but only `max_raw` bytes are kept.
    """
    notes: list[str] = []
    if len(raw) > max_raw:
        notes.append(f"message is {len(raw)} bytes; raw kept up to {max_raw} bytes")
    msg = _parse_bytes(raw, notes)
    if msg is None:
        return _unparseable(raw, max_raw, notes)
    return _inbound(msg, raw, max_raw, notes)


def fingerprint(raw: bytes) -> str:
    """sha256 of the message as its sender wrote it: the trace headers that each delivery
    adds or rewrites (Received, Delivered-To, Return-Path, spam and authentication results,
    the local store's flags) are left out, and line ends made one kind. A re-delivery of a
    message has its fingerprint; another message that reuses its Message-ID has not."""
    data = raw.replace(b"\r\n", b"\n")
    head, separator, body = data.partition(b"\n\n")
    kept = [field for field in _FIELD_START.split(head) if not _TRACE.match(field)]
    return hashlib.sha256(b"".join(kept) + separator + body).hexdigest()


def subject_reference(subject: str) -> str | None:
    """The first inquiry reference in a subject, "[#1042]" or a prefixed "[NW-1042]",
    upper-cased; a reply whose client dropped In-Reply-To still finds its thread by it."""
    found = _REFERENCE.search(subject)
    return found.group(0).upper() if found else None


# Parsing ------------------------------------------------------------------------------------


def _parse_bytes(raw: bytes, notes: list[str]) -> EmailMessage | None:
    """The modern-policy message, or None if the stdlib parser itself failed (a bug there
    must not lose a customer's mail)."""
    parser = BytesFeedParser(policy=policy.default)
    try:
        for start in range(0, len(raw), _CHUNK):
            parser.feed(raw[start : start + _CHUNK])
        msg = parser.close()
    except Exception as exc:  # the stdlib promises no exceptions, but has had such bugs
        notes.append(f"message could not be parsed: {type(exc).__name__}: {exc}")
        return None
    assert isinstance(msg, EmailMessage)  # policy.default builds EmailMessage
    return msg


def _unparseable(raw: bytes, max_raw: int, notes: list[str]) -> Inbound:
    """All that is known of a message the parser gave up on: its bytes, shown as text."""
    text = _decode(raw, None, notes, "message")
    return Inbound(
        message=None,
        message_id=None,
        in_reply_to=None,
        references=(),
        sender="",
        sender_name="",
        subject="",
        date=None,
        text=text,
        reply_text=_strip_history(text),
        attachments=(),
        raw=raw[:max_raw],
        raw_truncated=len(raw) > max_raw,
        defects=tuple(dict.fromkeys(notes)),
        fingerprint=fingerprint(raw),
    )


def _inbound(msg: EmailMessage, raw: bytes, max_raw: int, notes: list[str]) -> Inbound:
    hint = _charset_hint(msg)
    sender_name, sender = _sender(msg, hint, notes)
    body, attachments = _body_and_attachments(msg, notes)
    text = _body_text(body, notes)
    references = _ids(_raw_header(msg, "References"))
    return Inbound(
        message=msg,
        message_id=_first_id(_raw_header(msg, "Message-ID")),
        in_reply_to=_first_id(_raw_header(msg, "In-Reply-To")),
        references=tuple(references),
        sender=sender,
        sender_name=sender_name,
        subject=one_line(_header_text(msg, "Subject", hint, notes)),
        date=_date(msg, notes),
        text=text,
        reply_text=_strip_history(text),
        attachments=tuple(attachments),
        raw=raw[:max_raw],
        raw_truncated=len(raw) > max_raw,
        defects=tuple(dict.fromkeys([*_part_defects(msg), *notes])),
        fingerprint=fingerprint(raw),
        calendar_reply=calendar_reply(msg, sender),
    )


# Headers ------------------------------------------------------------------------------------


def _raw_header(msg: EmailMessage, name: str) -> str | None:
    """The first such header as received, unfolded, bypassing the policy's header classes so
    that a garbage value cannot raise."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return _FOLD.sub("", str(value))
    return None


def _header_text(msg: EmailMessage, name: str, hint: str | None, notes: list[str]) -> str:
    """A header decoded for display: raw 8-bit bytes read in the likely charset, RFC 2047
    words decoded (malformed ones as leniently as the stdlib manages)."""
    value = _raw_header(msg, name)
    return "" if value is None else _decode_words(name, _eight_bit(name, value, hint, notes), notes)


def _eight_bit(name: str, value: str, hint: str | None, notes: list[str]) -> str:
    """Raw 8-bit header bytes (forbidden, but sent) reach us as surrogate escapes; they are
    usually UTF-8, else the body's charset."""
    if not _SURROGATE.search(value):
        return value
    notes.append(f"{name} header has raw 8-bit bytes")
    return _decode(value.encode("ascii", "surrogateescape"), hint, notes, f"{name} header")


def _decode_words(name: str, value: str, notes: list[str]) -> str:
    """RFC 2047 decoding via the modern policy's unstructured parser, which tolerates words
    with bad padding or unknown charsets and reports them as defects."""
    try:
        header = policy.default.header_factory("x-text", value)
    except Exception as exc:  # a parser bug must cost the decoding, not the message
        notes.append(f"{name} header could not be decoded: {type(exc).__name__}")
        return value
    notes.extend(f"{name} header: {_describe(d)}" for d in header.defects)
    notes.extend(
        f"unknown charset {label!r} in {name} header; shown with replacement characters"
        for label in _WORD_CHARSET.findall(value)
        if not _is_charset(label)
    )
    return _unsurrogate(str(header))


def _is_charset(label: str) -> bool:
    """Whether Python knows the label; the stdlib replaces words in unknown charsets silently."""
    try:
        codecs.lookup(label)
    except LookupError:
        return False
    return True


def _unsurrogate(text: str) -> str:
    """Bytes of an unknown charset come back as surrogate escapes; show them as UTF-8 with
    replacement characters instead of carrying unencodable text into the database."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _sender(msg: EmailMessage, hint: str | None, notes: list[str]) -> tuple[str, str]:
    """(display name, lower-cased address) from From; the name is decoded after the address is
    split off, so a quoted encoded word (a common client bug) is decoded too."""
    value = _raw_header(msg, "From")
    if value is None:
        return "", ""
    name, address = _split_address(_eight_bit("From", value, hint, notes))
    decoded = _decode_words("From", name, notes)
    if CONTROL.search(decoded):
        notes.append("From display name holds control characters (an encoded line break?)")
    return one_line(decoded), _unsurrogate(address).lower()


def _split_address(value: str) -> tuple[str, str]:
    """(display name, address) of one mailbox. "name <address>" is split at the last angle
    brackets, since an encoded word in the name may hold what the address grammar reads as
    a group or a second address ("=?utf-8?q?Ivan=0D=0AX-Evil:_1?= <ivan@example.com>")."""
    bracketed = _NAME_ADDR.fullmatch(value.strip())
    if bracketed is None:
        return parseaddr(value)
    return unquote(bracketed["name"].strip()), bracketed["address"].strip()


def _first_id(value: str | None) -> str | None:
    ids = _ids(value)
    return ids[0] if ids else None


def _ids(value: str | None) -> list[str]:
    """Message ids as "<...>", in header order; bare "local@domain" ids (some clients omit the
    brackets) are accepted, other garbage is not an id."""
    if value is None:
        return []
    bracketed = _MSG_ID.findall(value)
    tokens = bracketed or [t for t in value.split() if "@" in t and "<" not in t and ">" not in t]
    return [f"<{_unsurrogate(token)}>" for token in tokens]


def _date(msg: EmailMessage, notes: list[str]) -> datetime | None:
    """The Date header in UTC; a date without a zone ("-0000") is taken as UTC."""
    value = _raw_header(msg, "Date")
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        notes.append(f"Date header unreadable: {one_line(_unsurrogate(value))[:80]!r}")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# Body and attachments -----------------------------------------------------------------------


def _leaves(part: MIMEPart) -> Iterator[MIMEPart]:
    """The leaves of the MIME tree; an attached message (message/rfc822) is one leaf."""
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for child in part.iter_parts():
            yield from _leaves(child)
    else:
        yield part


def _body_kind(part: MIMEPart) -> str | None:
    """The kind of body a part may be ("plain", "html"), or None for an attachment. Named or
    disposition-attachment parts are attachments even when they are text; a multipart leaf
    (its boundary was lost) is read as plain text so the customer's words still arrive."""
    if part.get_content_maintype() == "multipart":
        return "plain"
    if (
        part.get_content_disposition() == "attachment"
        or part.get_param("filename", header="content-disposition") is not None
        or part.get_param("name") is not None
    ):
        return None
    subtype = part.get_content_subtype()
    return subtype if part.get_content_maintype() == "text" and subtype in _BODY_KINDS else None


def _body_and_attachments(
    msg: EmailMessage, notes: list[str]
) -> tuple[tuple[str, MIMEPart] | None, list[Attachment]]:
    """The (kind, part) to read as the body, first plain text else first HTML, and every
    other leaf as an attachment (HTML alternatives and further text parts excepted)."""
    bodies: list[tuple[str, MIMEPart]] = []
    attachments: list[Attachment] = []
    for part in _leaves(msg):
        kind = _body_kind(part)
        if kind is None:
            attachments.append(_attachment(part, notes))
        else:
            bodies.append((kind, part))
    bodies.sort(key=lambda body: _BODY_KINDS.index(body[0]))  # stable: order kept per kind
    return next(iter(bodies), None), attachments


def _attachment(part: MIMEPart, notes: list[str]) -> Attachment:
    return Attachment(
        filename=_filename(part, notes),
        content_type=part.get_content_type(),
        size=len(_payload(part)),
    )


def _filename(part: MIMEPart, notes: list[str]) -> str:
    """The name without any folder: some clients send the full local path."""
    try:
        name = part.get_filename() or ""
    except Exception as exc:  # RFC 2231 parameters in the wild break the stdlib now and then
        notes.append(f"attachment name unreadable: {type(exc).__name__}")
        return ""
    return one_line(_unsurrogate(re.split(r"[\\/]", name)[-1]))


def _payload(part: MIMEPart) -> bytes:
    """The decoded content; an attached message counts as its bytes.

    Decoded here rather than by `get_payload(decode=True)`, which returns a cut-short base64
    part undecoded and peaks at four times a big attachment's size in memory."""
    if part.is_multipart():
        try:
            return b"".join(p.as_bytes() for p in part.iter_parts())
        except Exception:  # re-serialising a broken attached message; its size is unknown
            return b""
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        text = part.get_payload()
        return _b64decode(text.encode("ascii", "ignore")) if isinstance(text, str) else b""
    payload = part.get_payload(decode=True)  # 8-bit bytes as received, quoted-printable undone
    return payload if isinstance(payload, bytes) else b""


def _b64decode(data: bytes) -> bytes:
    """Base64 with line breaks and stray characters skipped; a part cut short mid-quantum
    still gives the bytes that arrived."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        digits = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        if len(digits) % 4 == 1:  # a lone trailing digit carries no whole byte
            digits = digits[:-1]
        return binascii.a2b_base64(digits + b"=" * (-len(digits) % 4))


def _body_text(body: tuple[str, MIMEPart] | None, notes: list[str]) -> str:
    """The body as text in its declared charset; HTML-only mail converted to readable text."""
    if body is None:
        return ""
    kind, part = body
    text = _decode(_payload(part), part.get_content_charset(), notes, "body")
    return _html_to_text(text) if kind == "html" else text.replace("\r\n", "\n")


def _html_to_text(html: str) -> str:
    content = html_to_markdown.convert(html, _TO_TEXT).content or ""
    return "\n".join(line.rstrip() for line in content.strip().splitlines()) + "\n"


def _decode(data: bytes, charset: str | None, notes: list[str], what: str) -> str:
    """Bytes as text in `charset`; an unknown or missing label falls back to UTF-8, then to
    latin-1 (which reads any bytes), and an unknown label is noted."""
    if charset:
        try:
            return data.decode(charset, "replace")
        except (LookupError, ValueError):  # unknown label, or a codec that is not for text
            notes.append(f"unknown charset {charset!r} in {what}; read as UTF-8 or latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _charset_hint(msg: EmailMessage) -> str | None:
    """The first declared charset in the message: the best guess for raw 8-bit headers."""
    for part in _leaves(msg):
        charset = part.get_content_charset()
        if charset:
            return charset
    return None


# Defects ------------------------------------------------------------------------------------


def _part_defects(msg: EmailMessage) -> Iterable[str]:
    """The parser's defects on every MIME part, as words ("close boundary not found")."""
    for part in msg.walk():
        yield from (_describe(d) for d in part.defects)


def _describe(defect: MessageDefect) -> str:
    words = _CAMEL.sub(" ", type(defect).__name__.removesuffix("Defect")).lower()
    detail = str(defect)
    return f"{words}: {detail}" if detail else words


# Quoted history -----------------------------------------------------------------------------


def _strip_history(text: str) -> str:
    """What the sender wrote this time: quoted lines (">") dropped, and everything from the
    first quoted-history separator on ("On ... wrote:", "-----Original Message-----", an
    Outlook "From:/Sent:" block, a Bulgarian "... написа:"). The full text is kept apart."""
    lines = text.splitlines()
    cut = next((i for i in range(len(lines)) if _starts_history(lines, i)), len(lines))
    kept = [line.rstrip() for line in lines[:cut] if not line.lstrip().startswith(">")]
    while kept and (not kept[-1] or _RULE.match(kept[-1])):
        kept.pop()
    return "\n".join(kept).strip("\n")


def _starts_history(lines: list[str], i: int) -> bool:
    line = lines[i]
    following = lines[i + 1 : i + 4]
    if _ATTRIBUTION.match(line) or _ORIGINAL.match(line):
        return True
    if following and _ATTRIBUTION.match(f"{line} {following[0]}"):
        return True  # an attribution wrapped onto two lines
    return bool(_HEADER_FROM.match(line)) and any(_HEADER_SENT.match(f) for f in following)
