"""The language a new sender writes in, told by the model shipped with py3langid: only a
confident answer, and only a language the acknowledgement is written in, counts."""

from __future__ import annotations

import pytest

from mailer.inbound.language import choose, written_in

OFFERED = frozenset({"en", "bg", "id", "tl"})


@pytest.mark.parametrize(
    ("text", "language"),
    [
        (
            "Halo, saya sudah memesan biji kopi minggu lalu tetapi paketnya belum sampai. "
            "Bisakah Anda memeriksa status pesanan saya?",
            "id",
        ),
        ("Selamat siang, pesanan saya nomor 1042 belum diterima. Mohon bantuannya.", "id"),
        (
            "Magandang araw po. Hindi pa po dumarating ang order ko na kape. "
            "Pwede po bang pakitingnan kung nasaan na?",
            "tl",
        ),
        ("Hi po, yung order ko hindi pa dumating, can you check please?", "tl"),
        ("Здравейте, поръчах кафе миналата седмица, но пратката още не пристига.", "bg"),
        ("Hi, I ordered coffee beans last week but the parcel has not arrived yet.", "en"),
        ("Where is my order?", "en"),
    ],
)
def test_what_customers_write_is_told_in_their_language(text: str, language: str) -> None:
    assert written_in(text, OFFERED) == language


@pytest.mark.parametrize(
    "text",
    [
        "Hallo, ich habe letzte Woche Kaffee bestellt, aber das Paket ist noch nicht da.",
        "Dzień dobry, zamówienie jeszcze nie dotarło.",
        "",
        "   \n ",
        "#1042 ??? 12:30",
    ],
)
def test_a_language_without_a_template_or_no_words_tells_nothing(text: str) -> None:
    assert written_in(text, OFFERED) is None


def test_only_a_first_choice_more_likely_than_all_others_together_counts() -> None:
    assert choose([("id", 0.67), ("ms", 0.33)], OFFERED) == "id"
    assert choose([("ms", 0.5), ("id", 0.49)], OFFERED) is None, "not offered"
    assert choose([("id", 0.5), ("ms", 0.5)], OFFERED) is None, "no more likely than not"
    assert choose([("bg", 0.99)], {"en"}) is None
    assert choose([], OFFERED) is None
    assert written_in("Здравейте, поръчката ми още не пристига.", frozenset()) is None
