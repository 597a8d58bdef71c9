"""Validating CSV rows, without a database."""

from __future__ import annotations

import io

import pytest

from mailer.customer_csv import (
    Birthday,
    CustomerRow,
    RejectedRow,
    parse_birthday,
    parse_rows,
    read_rows,
)
from mailer.errors import ImportFileError


def parse(text: str) -> list[CustomerRow | RejectedRow]:
    return list(parse_rows(read_rows(io.StringIO(text))))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1990-04-17", Birthday(4, 17, 1990)),
        ("--02-29", Birthday(2, 29)),
        ("02-29", Birthday(2, 29)),
        ("17.04.1990", Birthday(4, 17, 1990)),
        ("17.04.", Birthday(4, 17)),
    ],
)
def test_birthday_formats_with_and_without_year(text: str, expected: Birthday) -> None:
    assert parse_birthday(text) == expected


@pytest.mark.parametrize("text", ["1990-02-30", "1991-02-29", "13-01", "yesterday", "1990/04/17"])
def test_impossible_birthdays_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_birthday(text)


def test_every_problem_of_a_row_is_named_with_its_line() -> None:
    (row,) = parse("email,timezone,locale\nbad@@example.com,Mars/Base,xx\n")
    assert isinstance(row, RejectedRow)
    assert row.line == 2
    assert "not a valid email address" in row.reason
    assert "'Mars/Base' is not a known IANA time zone" in row.reason
    assert "'xx' is not a known locale" in row.reason


def test_headers_are_forgiving_and_extra_columns_become_fields() -> None:
    (row,) = parse("E-Mail,First Name,Favourite Roast\nAna@Example.com,Ana,Ethiopia Guji\n")
    assert row == CustomerRow(
        line=2,
        email="ana@example.com",
        first_name="Ana",
        fields={"favourite_roast": "Ethiopia Guji"},
    )


def test_semicolon_separated_file_from_a_european_spreadsheet() -> None:
    (row,) = parse("email;name;tags\nivan@example.bg;Иван Петров;VIP, newsletter\n")
    assert isinstance(row, CustomerRow)
    assert (row.name, row.tags) == ("Иван Петров", ("newsletter", "vip"))


def test_line_numbers_count_multiline_cells() -> None:
    rows = parse('email,name\na@example.com,"two\nlines"\nbad,x\n')
    assert isinstance(rows[0], CustomerRow) and rows[0].name == "two lines"
    assert isinstance(rows[1], RejectedRow) and rows[1].line == 4


def test_a_file_without_an_email_column_is_refused_as_a_whole() -> None:
    with pytest.raises(ImportFileError, match="'email' column"):
        parse("name,phone\nAna,123\n")


def test_consent_columns_accept_yes_and_no() -> None:
    rows = parse("email,marketing_consent\na@example.com,no\nb@example.com,perhaps\n")
    assert isinstance(rows[0], CustomerRow) and rows[0].marketing_consent is False
    assert isinstance(rows[1], RejectedRow) and "marketing_consent 'perhaps'" in rows[1].reason


def test_customers_at_special_use_domains_are_imported_and_non_addresses_are_not() -> None:
    rows = parse(
        "email\nAna@Intranet.LOCAL\nqa@shop.test\nops@corp.internal\nroot@localhost\n"
        'not an address\na@\n@b.com\n"sp ace@b.com"\n'
    )
    assert [r.email for r in rows if isinstance(r, CustomerRow)] == [
        "ana@intranet.local",
        "qa@shop.test",
        "ops@corp.internal",
        "root@localhost",
    ]
    refused = [r for r in rows if isinstance(r, RejectedRow)]
    assert [r.line for r in refused] == [6, 7, 8, 9]
    assert all("is not a valid email address" in r.reason for r in refused)
