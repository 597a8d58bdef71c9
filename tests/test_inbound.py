"""Inbound parsing over realistic mail: every charset, broken MIME, HTML-only, huge messages."""

from __future__ import annotations

import base64
import os
import time
import tracemalloc
from datetime import UTC, datetime
from email.feedparser import BytesFeedParser
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailer.inbound.parsing import Attachment, parse, subject_reference

MAIL = Path(__file__).parent / "mail" / "inbound"
MB = 1024 * 1024

MARIA = "Мария Петрова"
BG_SUBJECT = "Въпрос за поръчка № 10482"
BG_LINE = "все още не е пристигнала. Може ли да проверите къде е?"  # noqa: RUF001
RU_NAME = "Иван Сидоров"
RU_SUBJECT = "Доставка в Москву"
RU_LINE = "Подскажите, пожалуйста, можно ли заказать доставку в Москву?"
BG_REPLY = "Благодаря, пратката пристигна днес."


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def headers(*lines: str, body: str = "Hello.\n") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


# Charsets -------------------------------------------------------------------------------------


def test_bulgarian_windows_1251_mail_is_read_in_its_charset() -> None:
    inbound = parse(mail("bg_windows1251.eml"))

    assert inbound.sender == "maria.petrova@abv.bg"
    assert inbound.sender_name == MARIA
    assert inbound.subject == BG_SUBJECT
    assert BG_LINE in inbound.text
    assert inbound.defects == ()


def test_russian_koi8_r_mail_is_read_in_its_charset() -> None:
    inbound = parse(mail("ru_koi8r.eml"))

    assert inbound.sender_name == RU_NAME
    assert inbound.subject == RU_SUBJECT
    assert RU_LINE in inbound.text


def test_french_latin1_mail_decodes_encoded_word_subject_and_quoted_printable_body() -> None:
    inbound = parse(mail("fr_latin1.eml"))

    assert inbound.subject == "Problème de livraison à Lyon"
    assert inbound.sender_name == "Hélène Dupré"
    assert "la boîte de tisane à la mélisse était abîmée." in inbound.text


def test_utf8_emoji_survives_in_subject_and_body() -> None:
    inbound = parse(mail("utf8_emoji.eml"))

    assert inbound.subject == "Love the tea 🍵 — reorder?"
    assert "amazing 🌼🍵" in inbound.text
    assert inbound.date == datetime(2026, 1, 15, 13, 0, tzinfo=UTC)


def test_unknown_charset_in_encoded_word_subject_is_replaced_and_noted() -> None:
    inbound = parse(headers("From: a@b.example", "Subject: =?x-unknown?q?caf=E9?= order"))

    assert inbound.subject == "caf\ufffd order"
    assert any("x-unknown" in defect for defect in inbound.defects)


@pytest.mark.parametrize(
    "subject",
    [
        "=?utf-8?B?0JzQsNGA0LjRjw?=",  # base64 without padding
        "=?utf-8?q?unterminated word",
        "=?utf-8?x?bogus-encoding?=",
        "=??B?SGVsbG8=?=",
    ],
)
def test_malformed_encoded_word_subject_gives_some_text(subject: str) -> None:
    inbound = parse(headers(f"Subject: {subject}"))

    assert inbound.subject
    assert "\n" not in inbound.subject


def test_subject_is_one_line_without_control_characters() -> None:
    inbound = parse(headers("Subject: Order\r\n  status\x07 please\x1b[31m"))

    assert inbound.subject == "Order status please [31m"


def test_quoted_encoded_word_display_name_is_decoded() -> None:
    raw = headers('From: "=?utf-8?q?Ren=C3=A9e_Ma=C3=AFa?=" <Renee@Example.COM>')

    inbound = parse(raw)

    assert (inbound.sender_name, inbound.sender) == ("Renée Maïa", "renee@example.com")


def test_an_encoded_line_break_in_the_display_name_keeps_the_address_and_notes_the_defect() -> None:
    raw = headers("From: =?utf-8?q?Ivan=0D=0AX-Evil:_1?= <Ivan@Example.com>")

    inbound = parse(raw)

    assert (inbound.sender_name, inbound.sender) == ("Ivan X-Evil: 1", "ivan@example.com")
    assert any("From display name holds control characters" in d for d in inbound.defects)


# HTML and attachments -------------------------------------------------------------------------


def test_html_only_mail_gets_readable_text_and_no_script() -> None:
    inbound = parse(mail("html_only.eml"))

    assert "Could you tell me when order #5521 ships?" in inbound.text
    assert "https://shop.example/o/5521" in inbound.text
    assert "Regards," in inbound.text
    for leaked in ("alert", "document.cookie", "evil.example", "<script", "color: #333"):
        assert leaked not in inbound.text


def test_plain_part_is_preferred_over_html_alternative() -> None:
    inbound = parse(mail("gmail_reply.eml"))

    assert inbound.text.startswith("Yes please, gift wrap both boxes.\n\nOn Thu, Jan 22")
    assert "<div" not in inbound.text


def test_pdf_attachment_is_recorded_by_name_type_and_decoded_size() -> None:
    inbound = parse(mail("pdf_attachment.eml"))

    assert inbound.attachments == (
        Attachment(filename="invoice-2026-0042.pdf", content_type="application/pdf", size=2113),
    )
    assert inbound.text.startswith("Hello,\n\nPlease correct the company name")
    assert "JVBERi0" not in inbound.text  # the base64 of "%PDF-" never shows as text


def test_attachment_name_keeps_no_folder_path() -> None:
    raw = headers(
        "Content-Type: multipart/mixed; boundary=b",
        body="--b\r\nContent-Type: text/plain\r\n\r\nSee file.\r\n--b\r\n"
        'Content-Type: image/png\r\nContent-Disposition: attachment; filename="/home/x/'
        'photo.png"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b--\r\n',
    )

    (attachment,) = parse(raw).attachments

    assert attachment == Attachment(filename="photo.png", content_type="image/png", size=8)


# Broken mail ----------------------------------------------------------------------------------


def test_broken_mime_still_gives_text_attachments_and_defects() -> None:
    inbound = parse(mail("broken_mime.eml"))

    assert inbound.subject == "Поръчка не е получена"  # noqa: RUF001  raw 8-bit UTF-8 header
    assert inbound.text == "Здравейте, поръчката ми не е получена."  # noqa: RUF001
    assert inbound.attachments == (
        Attachment(filename="notes.bin", content_type="application/octet-stream", size=72),
    )
    assert "close boundary not found" in inbound.defects
    assert "Subject header has raw 8-bit bytes" in inbound.defects
    assert any("unknown charset 'x-unknown' in body" in d for d in inbound.defects)


def test_multipart_without_boundary_is_read_as_text() -> None:
    inbound = parse(headers("Content-Type: multipart/mixed", body="Where is my parcel?\r\n"))

    assert "Where is my parcel?" in inbound.text
    assert any("boundary" in defect for defect in inbound.defects)


def test_truncated_base64_part_is_decoded_as_far_as_it_goes() -> None:
    text = base64.b64encode(b"Parcel 77 arrived damaged, please call me.").decode()
    raw = headers(
        "Content-Type: multipart/mixed; boundary=b",
        body=f"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{text[:-7]}",
    )

    inbound = parse(raw)

    assert inbound.text.startswith("Parcel 77 arrived damaged")
    assert inbound.defects


def test_missing_message_id_date_and_from_leave_empty_values() -> None:
    inbound = parse(mail("missing_headers.eml"))

    assert (inbound.message_id, inbound.date, inbound.sender, inbound.sender_name) == (
        None,
        None,
        "",
        "",
    )
    assert inbound.subject == "hello?"
    assert inbound.text.startswith("Is anyone there?")


def test_garbage_message_id_and_date_become_none_and_the_date_is_noted() -> None:
    inbound = parse(headers("Message-ID: <not an id>", "Date: sometime last week"))

    assert (inbound.message_id, inbound.date) == (None, None)
    assert any(defect.startswith("Date header unreadable") for defect in inbound.defects)


def test_date_without_zone_is_taken_as_utc() -> None:
    inbound = parse(headers("Date: Sat, 24 Jan 2026 03:14:15 -0000"))

    assert inbound.date == datetime(2026, 1, 24, 3, 14, 15, tzinfo=UTC)


def test_message_id_without_brackets_is_normalised() -> None:
    inbound = parse(headers("Message-ID: 12345.67@webform.example", "In-Reply-To: junk"))

    assert (inbound.message_id, inbound.in_reply_to) == ("<12345.67@webform.example>", None)


def test_thread_headers_give_ids_oldest_first() -> None:
    inbound = parse(mail("outlook_reply.eml"))

    assert inbound.in_reply_to == "<ack.1042.20260120@bilki-roza.example>"
    assert inbound.references == ("<inq.1042@abv.bg>", "<ack.1042.20260120@bilki-roza.example>")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe" * 500,
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x",
        b"Subject: =?\r\nContent-Type: text/plain; charset=base64\r\n\r\n\xff\xfe",
        b": no name\r\n\tfolded\r\nContent-Type: /\r\n\r\nbody",
        b"Content-Type: message/rfc822\r\n\r\nFrom: x\r\n",
    ],
)
def test_garbage_never_raises(raw: bytes) -> None:
    inbound = parse(raw)

    assert inbound.raw == raw
    assert isinstance(inbound.text, str)


def test_parser_crash_still_gives_raw_and_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: BytesFeedParser, data: bytes) -> None:
        raise IndexError("stdlib bug")

    monkeypatch.setattr(BytesFeedParser, "feed", crash)

    inbound = parse(headers("Subject: hi", body="Still readable."))

    assert inbound.message is None
    assert inbound.raw_truncated is False
    assert "Still readable." in inbound.text
    assert inbound.defects == ("message could not be parsed: IndexError: stdlib bug",)


def test_message_is_kept_for_the_autoreply_rules() -> None:
    inbound = parse(mail("bg_windows1251.eml"))

    assert isinstance(inbound.message, EmailMessage)
    assert inbound.message["X-Mailer"] == "AbvMail 3.0"


# Quoted history -------------------------------------------------------------------------------


def test_outlook_original_message_block_is_stripped_from_reply_text() -> None:
    inbound = parse(mail("outlook_reply.eml"))

    assert inbound.reply_text == (
        "Thank you, Thursday works for us. Please deliver before noon.\n\nPetar Kolev\nContoso Ltd."
    )
    assert "We can deliver on Thursday" in inbound.text


def test_outlook_from_sent_header_block_is_stripped_from_reply_text() -> None:
    body = (
        "Received, thanks.\r\n\r\n________________________________\r\n"
        "From: Bilki Roza Support <support@bilki-roza.example>\r\n"
        "Sent: Tuesday, January 20, 2026 17:03\r\nTo: Petar\r\nSubject: Delivery\r\n"
        "\r\nOld text\r\n"
    )

    assert parse(headers("Subject: RE: Delivery", body=body)).reply_text == "Received, thanks."


def test_gmail_wrapped_attribution_and_quote_are_stripped_from_reply_text() -> None:
    assert parse(mail("gmail_reply.eml")).reply_text == "Yes please, gift wrap both boxes."


def test_bulgarian_attribution_is_stripped_from_reply_text() -> None:
    inbound = parse(mail("bg_reply.eml"))

    assert inbound.reply_text == BG_REPLY
    assert inbound.subject == "Re: [#3077] Въпрос за поръчка"


def test_inline_quotes_are_dropped_but_the_answers_between_them_kept() -> None:
    body = "> Which colour?\r\nGreen.\r\n> How many?\r\nTwo.\r\n"

    assert parse(headers(body=body)).reply_text == "Green.\nTwo."


def test_prose_mentioning_wrote_is_not_cut() -> None:
    body = "My friend wrote: the tea is great.\r\nI want some too.\r\n"

    assert parse(headers(body=body)).reply_text == body.replace("\r\n", "\n").strip()


# Size -----------------------------------------------------------------------------------------


def big_message(size: int) -> bytes:
    """A mail with a random attachment of `size` bytes (its base64 makes it a third bigger)."""
    data = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return (
        headers(
            "From: Big Sender <big@example.com>",
            "Subject: scans",
            "Content-Type: multipart/mixed; boundary=zz",
            body="--zz\r\nContent-Type: text/plain\r\n\r\nScans attached.\r\n--zz\r\n"
            "Content-Type: image/tiff; name=scans.tif\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        )
        + data
        + b"--zz--\r\n"
    )


def test_20_mb_message_parses_quickly_with_raw_truncated_and_said_so() -> None:
    raw = big_message(15 * MB)
    assert len(raw) > 20 * MB

    started = time.perf_counter()
    inbound = parse(raw, max_raw=MB)
    elapsed = time.perf_counter() - started

    assert elapsed < 10
    assert inbound.attachments == (
        Attachment(filename="scans.tif", content_type="image/tiff", size=15 * MB),
    )
    assert inbound.text == "Scans attached."
    assert (len(inbound.raw), inbound.raw_truncated) == (MB, True)
    assert any("raw kept up to 1048576 bytes" in defect for defect in inbound.defects)


def test_20_mb_message_parses_within_a_few_times_its_size_in_memory() -> None:
    raw = big_message(15 * MB)

    tracemalloc.start()
    try:
        parse(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 4 * len(raw)


def test_message_within_max_raw_is_kept_whole() -> None:
    raw = mail("pdf_attachment.eml")

    inbound = parse(raw)

    assert (inbound.raw, inbound.raw_truncated) == (raw, False)


# Subject references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "reference"),
    [
        ("Re: [#1042] Delivery to Varna", "[#1042]"),
        ("RE: [NW-1042] Delivery", "[NW-1042]"),
        ("Fwd: re: [nw-77] order", "[NW-77]"),
        ("AW: Re: Bestellung [#5] und [#6]", "[#5]"),
        ("Order #1042", None),
        ("[EXTERNAL] Order 1042", None),
        ("[#] nothing", None),
        ("", None),
    ],
)
def test_subject_reference_finds_the_inquiry_token(subject: str, reference: str | None) -> None:
    assert subject_reference(subject) == reference
