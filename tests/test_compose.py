"""Composing the wire bytes of a message: every header and part must parse back exactly, and
no customer data may add a header or break a line limit."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from itertools import count
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from mailer.outbound.compose import (
    Envelope,
    Part,
    compose,
    list_unsubscribe_headers,
    make_message_id,
)

SENDER = "Northwind Coffee Roasters <news@northwind.example>"
WHEN = datetime(2026, 11, 24, 14, 30, tzinfo=timezone(timedelta(hours=2)))
CALENDAR = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//mailer//EN\r\nMETHOD:REQUEST\r\n"
    b"BEGIN:VEVENT\r\nUID:webinar-1@northwind.example\r\nSUMMARY:Filter coffee\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)
TEXTS = {
    "ascii": "Hello Ana,\n\nThanks for writing to us.\n",
    "cyrillic": "Здравейте, Мария!\nБлагодарим ви за писмото. Ще отговорим до утре.\n",  # noqa: RUF001
    "indonesian": "Halo Siti,\nTerima kasih telah menghubungi kami — kami akan segera membalas.\n",
    "tagalog": "Magandang araw, José!\nSalamat sa iyong mensahe; sasagot kami bukas.\n",
    "emoji": "Happy birthday 🎂🎉 from all of us ☕ 👩‍👩‍👧\n",
    "long ascii line": "word " * 400 + "\n",
    "long unbroken line": "x" * 2500 + "\n",
    "long cyrillic line": "ж" * 1200 + "\n",
    "long line after short ones": "Hi Ana,\n\n" + "word " * 20 + "\nBye\n",
    "from and dot lines": "From here on\n.\n..two dots\nFrom \n.leading dot\n",
    "line endings mixed": "one\r\ntwo\nthree\rfour\r\n\r\nsix",
    "trailing whitespace": "tab\t\nspace \nend  ",
    "no final newline": "Short and done",
    "empty": "",
    "equals and boundary-like text": "a=b =?utf-8?b?SGk=?= --=_0000 =3D\n",
    "control characters": "bell\x07 form\x0c feed nul\x00 end\n",
}


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def envelope(**changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "from_": SENDER,
        "to_address": "ana.petrova@example.com",
        "to_name": "Ana Petrova",
        "message_id": "<m1@northwind.example>",
        "date": WHEN,
    }
    return Envelope(**{**fields, **changes})


def wire(text: str) -> str:
    """What a text part decodes to: the same text with CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def header_block(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def header_names(raw: bytes) -> list[str]:
    return [line.split(b":", 1)[0].decode() for line in header_block(raw) if line[:1] != b" "]


def leaves(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if not part.is_multipart()]


def test_headers_come_in_order_with_crlf_line_endings() -> None:
    raw = compose(
        envelope(reply_to="Support <help@northwind.example>"),
        "Your order",
        "Hi\n",
        "<p>Hi</p>\n",
        headers={"Auto-Submitted": "auto-replied", "X-Loop": "mailer@northwind.example"},
    )
    assert header_names(raw) == [
        "Date", "From", "To", "Reply-To", "Subject", "Message-ID", "MIME-Version",
        "Auto-Submitted", "X-Loop", "Content-Type",
    ]  # fmt: skip
    assert raw.count(b"\n") == raw.count(b"\r\n") and raw.count(b"\r") == raw.count(b"\r\n")
    assert raw.endswith(b"\r\n")
    message = parse(raw)
    assert message["Date"].datetime == WHEN
    assert message["From"].addresses[0].display_name == "Northwind Coffee Roasters"
    assert message["Reply-To"].addresses[0].addr_spec == "help@northwind.example"
    assert message["Message-ID"] == "<m1@northwind.example>"
    assert message["MIME-Version"] == "1.0"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Loop"] == "mailer@northwind.example"
    assert message.defects == []


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_text_and_html_become_alternative_parts_that_decode_exactly(text: str) -> None:
    html = f"<html><body><p>{text}</p></body></html>"
    message = parse(compose(envelope(), "Hi", text, html))
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = leaves(message)
    assert (plain.get_content_type(), plain.get_content_charset()) == ("text/plain", "utf-8")
    assert (rich.get_content_type(), rich.get_content_charset()) == ("text/html", "utf-8")
    assert plain.get_content() == wire(text)
    assert rich.get_content() == wire(html)
    assert all(part.defects == [] for part in message.walk())


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_text_only_message_is_one_text_part_that_decodes_exactly(text: str) -> None:
    message = parse(compose(envelope(), "Hi", text, None))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message.get_content() == wire(text)


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_every_line_fits_smtp_limits(text: str) -> None:
    raw = compose(envelope(to_name="Мария Иванова"), "Тема " * 40, text, text + "<br>")
    longest = max(map(len, raw.split(b"\r\n")))
    assert longest <= 998  # RFC 5322's hard limit
    assert longest <= 78  # email.policy.SMTP's max_line_length, which RFC 5322 prefers


@pytest.mark.parametrize(
    "text",
    [
        "From the roastery, with love\nFrom us\n",
        "From the roastery, with love — Ана\nFrom us\n",
        "a" * 75 + "From a soft line break " + "b" * 60 + "\n",
    ],
    ids=["ascii", "non-ascii", "after a soft break"],
)
def test_encoded_body_never_starts_a_line_with_from(text: str) -> None:
    """mbox writers would store such a line as ">From ", changing the text."""
    raw = compose(envelope(), "Hi", text, None)
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert not re.search(rb"(?m)^From ", body)
    assert max(map(len, body.split(b"\r\n"))) <= 76
    assert parse(raw).get_content() == wire(text)


def test_name_with_crlf_cannot_inject_a_bcc_header() -> None:
    raw = compose(envelope(to_name="Eve\r\nBcc: victim@example.com"), "Hi", "Hi\n", None)
    message = parse(raw)
    assert "Bcc" not in message
    assert "Bcc" not in header_names(raw)
    (to,) = message["To"].addresses
    assert (to.display_name, to.addr_spec) == (
        "Eve  Bcc: victim@example.com",
        "ana.petrova@example.com",
    )


def test_subject_with_newlines_stays_one_header() -> None:
    raw = compose(envelope(), "Hello\nBcc: victim@example.com\r\nX-Evil: 1", "Hi\n", None)
    message = parse(raw)
    assert message["Subject"] == "Hello Bcc: victim@example.com  X-Evil: 1"
    assert "Bcc" not in message and "X-Evil" not in message


def test_extra_header_value_with_crlf_stays_one_header() -> None:
    headers = {"In-Reply-To": "<a@example.com>\r\nBcc: victim@example.com\r\n\r\nbody"}
    raw = compose(envelope(), "Hi", "Hi\n", None, headers=headers)
    message = parse(raw)
    assert header_names(raw).count("In-Reply-To") == 1
    assert "Bcc" not in message
    assert message.get_content() == "Hi\r\n"


def test_control_characters_in_header_values_become_spaces() -> None:
    raw = compose(envelope(to_name="Ana\tPetrova\x00\x85"), "A\x1bB\u2028C\x7fD", "Hi\n", None)
    message = parse(raw)
    assert message["Subject"] == "A B C D"
    assert message["To"].addresses[0].display_name == "Ana Petrova"


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "Х-Cyrillic", "X-Ok\r\nBcc", "X\x00"])  # noqa: RUF001
def test_invalid_extra_header_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="field name"):
        compose(envelope(), "Hi", "Hi\n", None, headers={name: "value"})


@pytest.mark.parametrize("name", ["Subject", "to", "Message-ID", "Content-Type"])
def test_extra_headers_cannot_repeat_composed_ones(name: str) -> None:
    with pytest.raises(ValueError, match="itself"):
        compose(envelope(), "Hi", "Hi\n", None, headers={name: "value"})


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("Мария Иванова", "Благодарим ви за писмото"),
        ("Siti Rahmawati", "Terima kasih — balasan akan segera datang"),
        ("José Reyes", "Maligayang kaarawan, José! 🎂"),
        ("Zoë Müller", "Grüße aus der Rösterei"),
    ],
)
def test_non_ascii_names_and_subjects_are_rfc2047_encoded(name: str, subject: str) -> None:
    raw = compose(envelope(to_name=name), subject, "Hi\n", None)
    assert all(line.isascii() for line in header_block(raw))
    assert b"=?utf-8?b?" in raw
    message = parse(raw)
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == name


def test_non_ascii_sender_name_is_encoded() -> None:
    raw = compose(envelope(from_="Кафе Northwind <news@northwind.example>"), "Hi", "Hi\n", None)
    (sender,) = parse(raw)["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Кафе Northwind", "news@northwind.example")


@pytest.mark.parametrize(
    "name", ["O'Connor, Liam", 'Ana "The Roaster" Petrova', "Back\\slash (tester)", "Dr. Who"]
)
def test_ascii_names_with_specials_are_quoted(name: str) -> None:
    raw = compose(envelope(to_name=name), "Hi", "Hi\n", None)
    assert b"=?" not in raw.split(b"\r\n\r\n")[0]
    (to,) = parse(raw)["To"].addresses
    assert (to.display_name, to.addr_spec) == (name, "ana.petrova@example.com")


def test_quoted_name_with_comma_is_written_as_one_quoted_phrase() -> None:
    raw = compose(envelope(to_name="O'Connor, Liam"), "Hi", "Hi\n", None)
    assert b'To: "O\'Connor, Liam" <ana.petrova@example.com>\r\n' in raw


def test_text_that_looks_like_an_encoded_word_reads_as_written() -> None:
    raw = compose(envelope(to_name="=?utf-8?b?SGk=?="), "=?utf-8?q?free=20money?=", "x\n", None)
    message = parse(raw)
    assert message["Subject"] == "=?utf-8?q?free=20money?="
    assert message["To"].addresses[0].display_name == "=?utf-8?b?SGk=?="


@pytest.mark.parametrize(
    "subject",
    [
        "Your December newsletter: " + "new single-origin coffees and brewing guides " * 6,
        "Декемврийски новини от печатницата: нов етиопски кафе и празнично работно време " * 3,
        "A link that cannot fold https://northwind.example/" + "a" * 300,
        "Double  spaces   stay  as   written " * 4,
        "A wide gap" + " " * 1200 + "in a subject",
    ],
)
def test_long_subject_is_folded_and_still_decodes(subject: str) -> None:
    raw = compose(envelope(), subject, "Hi\n", None)
    subject_lines = [line for line in header_block(raw) if line.startswith((b"Subject:", b" "))]
    assert len(subject_lines) > 1
    assert max(map(len, subject_lines)) <= 78
    assert parse(raw)["Subject"] == subject.strip(" ")


def test_list_unsubscribe_headers_offer_https_and_mailto_with_one_click() -> None:
    headers = list_unsubscribe_headers("https://m.example/u/tok3n", "unsubscribe@m.example")
    assert headers == {
        "List-Unsubscribe": "<https://m.example/u/tok3n>, <mailto:unsubscribe@m.example>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    message = parse(compose(envelope(), "News", "Hi\n", None, headers=headers))
    assert message["List-Unsubscribe"] == headers["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_list_unsubscribe_without_https_has_no_one_click() -> None:
    assert list_unsubscribe_headers(None, "mailto:u@m.example?subject=unsubscribe") == {
        "List-Unsubscribe": "<mailto:u@m.example?subject=unsubscribe>"
    }
    assert list_unsubscribe_headers(None, None) == {}


@pytest.mark.parametrize(
    ("https_url", "mailto"),
    [("ftp://m.example/u", None), ("https://m.example/u x", None), (None, "u@m.example>")],
)
def test_unusable_unsubscribe_targets_are_refused(
    https_url: str | None, mailto: str | None
) -> None:
    with pytest.raises(ValueError):
        list_unsubscribe_headers(https_url, mailto)


def test_calendar_invitation_is_an_alternative_and_the_ics_an_attachment() -> None:
    invitation = Part(
        content_type="text/calendar",
        data=CALENDAR,
        params={"method": "REQUEST", "charset": "utf-8"},
    )
    attachment = Part(content_type="application/ics", data=CALENDAR, filename="invite.ics")
    message = parse(
        compose(
            envelope(), "Webinar", "Join us\n", "<p>Join us</p>",
            alternatives=[invitation], attachments=[attachment],
        )
    )  # fmt: skip
    assert message.get_content_type() == "multipart/mixed"
    alternative, ics = message.iter_parts()
    assert isinstance(alternative, EmailMessage) and isinstance(ics, EmailMessage)
    assert alternative.get_content_type() == "multipart/alternative"
    types = [part.get_content_type() for part in leaves(alternative)]
    assert types == ["text/plain", "text/html", "text/calendar"]
    calendar = leaves(alternative)[2]
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_content_charset() == "utf-8"
    assert calendar.get_content() == CALENDAR.decode()
    assert calendar.get_content_disposition() is None
    assert ics.get_content_type() == "application/ics"
    assert ics.get_content_disposition() == "attachment"
    assert ics.get_filename() == "invite.ics"
    assert ics.get_content() == CALENDAR


def test_text_only_message_with_an_alternative_is_multipart_alternative() -> None:
    invitation = Part(content_type="text/calendar", data=CALENDAR, params={"method": "CANCEL"})
    message = parse(
        compose(envelope(), "Cancelled", "Cancelled\n", None, alternatives=[invitation])
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in leaves(message)] == ["text/plain", "text/calendar"]


def test_attachment_bytes_and_non_ascii_filename_round_trip() -> None:
    data = bytes(range(256)) * 20 + b"\r\nFrom x\n.\r"
    attachment = Part(
        content_type="application/octet-stream", data=data, filename="Покана за уебинар.ics"
    )
    message = parse(compose(envelope(), "Hi", "Hi\n", None, attachments=[attachment]))
    assert message.get_content_type() == "multipart/mixed"
    _, part = message.iter_parts()
    assert isinstance(part, EmailMessage)
    assert part.get_filename() == "Покана за уебинар.ics"
    assert part.get_content() == data


@pytest.mark.parametrize(
    "part",
    [
        Part(content_type="calendar", data=b"x"),
        Part(content_type="text/calendar", data=b"x", params={"bad name": "x"}),
    ],
    ids=["media type", "parameter name"],
)
def test_malformed_parts_are_refused(part: Part) -> None:
    with pytest.raises(ValueError, match="not a valid"):
        compose(envelope(), "Hi", "Hi\n", None, alternatives=[part])


def test_a_boundary_found_in_the_content_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens: Iterator[str] = iter(["taken", "fresh"])
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(tokens))
    message = parse(compose(envelope(), "Hi", "Hi\n--=_taken\n", "<p>Hi</p>\n"))
    assert message.get_boundary() == "=_fresh"
    assert leaves(message)[0].get_content() == "Hi\r\n--=_taken\r\n"


def test_message_ids_are_unique_unguessable_and_at_our_domain() -> None:
    ids = [make_message_id("northwind.example") for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"<[0-9a-f]{32}@northwind\.example>", i) for i in ids)


@pytest.mark.parametrize("domain", ["", "north wind.example", "a@b", "-bad.example"])
def test_unusable_message_id_domains_are_refused(domain: str) -> None:
    with pytest.raises(ValueError):
        make_message_id(domain)


def test_missing_message_id_and_date_are_made_from_the_sender() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    message = parse(compose(envelope(message_id="", date=None), "Hi", "Hi\n", None))
    assert re.fullmatch(r"<[0-9a-f]{32}@northwind\.example>", message["Message-ID"])
    assert before <= message["Date"].datetime <= datetime.now(UTC)


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        compose(envelope(date=datetime(2026, 11, 24, 12)), "Hi", "Hi\n", None)


@pytest.mark.parametrize(
    "address",
    ["a@b.example>, c@d.example", "no-at-sign", "a b@c.example", "ä@example.com", "a@b\r\nBcc: c"],
)
def test_unusable_recipient_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="address"):
        compose(envelope(to_address=address), "Hi", "Hi\n", None)


def test_malformed_message_id_is_refused() -> None:
    with pytest.raises(ValueError, match="Message-ID"):
        compose(envelope(message_id="<a@b>\r\nBcc: c@d"), "Hi", "Hi\n", None)


def test_extra_header_word_too_long_for_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        compose(envelope(), "Hi", "Hi\n", None, headers={"References": "<" + "a" * 1000 + ">"})


class _Inbox:
    """An aiosmtpd handler that keeps what each DATA delivered."""

    def __init__(self) -> None:
        self.envelopes: list[SmtpEnvelope] = []

    async def handle_DATA(self, server: SMTP, session: object, envelope: SmtpEnvelope) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 queued"


async def test_composed_message_is_accepted_verbatim_by_a_real_smtp_server() -> None:
    inbox, ids = _Inbox(), count()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="sink.test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = compose(
        envelope(to_name="Мария, O'Connor", message_id=f"<wire{next(ids)}@northwind.example>"),
        "Покана: уебинар 🎉",
        TEXTS["from and dot lines"] + TEXTS["cyrillic"],
        "<p>.</p>\n" + TEXTS["long unbroken line"],
        headers=list_unsubscribe_headers("https://m.example/u/t", "u@m.example"),
        attachments=[Part(content_type="application/ics", data=CALENDAR, filename="invite.ics")],
    )
    try:
        await aiosmtplib.send(
            raw,
            sender="news@northwind.example",
            recipients=["ana.petrova@example.com"],
            hostname="127.0.0.1",
            port=port,
        )
    finally:
        server.close()
        await server.wait_closed()
    (received,) = inbox.envelopes
    assert received.content == raw
    assert received.rcpt_tos == ["ana.petrova@example.com"]


def test_a_plain_http_unsubscribe_link_is_listed_without_one_click() -> None:
    headers = list_unsubscribe_headers("http://127.0.0.1:8025/unsubscribe/t", None)
    assert headers == {"List-Unsubscribe": "<http://127.0.0.1:8025/unsubscribe/t>"}
