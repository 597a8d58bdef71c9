"""What a typed search means, before any database sees it."""

from __future__ import annotations

from mailer.core.search import fold, term


def test_control_characters_are_never_searched_for() -> None:
    assert term("  Ива\x00нова\x7f ") == "Иванова"  # noqa: RUF001
    assert term("Мария\tИванова\n") == "Мария Иванова"  # noqa: RUF001  tab: a space
    assert term("\x00\x01") == ""


def test_folding_makes_case_and_unicode_form_alike_in_any_script() -> None:
    assert fold("ИВАНОВА") == fold("Иванова") == fold("иванова") == "иванова"
    assert fold("STRASSE") == fold("Straße") == "strasse"
    assert fold("Jose\u0301") == fold("José")  # a combining accent or a precomposed letter
    assert fold("ΣΊΣΥΦΟΣ") == fold("σίσυφος")  # final sigma
