"""Validating CSV rows, without a database."""

from __future__ import annotations

import io

import pytest

from mailer.core.errors import ImportFileError
from mailer.customers.csv_rows import (
    Birthday,
    CustomerRow,
    RejectedRow,
    parse_birthday,
    parse_rows,
    read_rows,
)


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
        # address books write a year before 1900 for "no year": 1604 (Apple), 0001
        ("1604-04-17", Birthday(4, 17)),
        ("0001-02-29", Birthday(2, 29)),  # leap in the placeholder year: still 29 February
        ("1900-01-01", Birthday(1, 1, 1900)),
    ],
)
def test_birthday_formats_with_and_without_year(text: str, expected: Birthday) -> None:
    assert parse_birthday(text) == expected


@pytest.mark.parametrize("text", ["1990-02-30", "1991-02-29", "13-01", "yesterday", "1990/04/17"])
def test_impossible_birthdays_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_birthday(text)


def test_a_birth_year_to_come_is_refused_as_a_typo() -> None:
    with pytest.raises(ValueError, match=r"^birthday '2999-04-17' has a year to come"):
        parse_birthday("2999-04-17")


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
    (row,) = parse("E-mail Address,Name\nbo@example.com,Bo\n")  # as Outlook exports it
    assert (row.email, row.name) == ("bo@example.com", "Bo")


def test_semicolon_separated_file_from_a_european_spreadsheet() -> None:
    (row,) = parse("email;name;tags\nivan@example.bg;Иван Петров;VIP, newsletter\n")
    assert isinstance(row, CustomerRow)
    assert (row.name, row.tags) == ("Иван Петров", ("newsletter", "vip"))


def test_line_numbers_count_multiline_cells() -> None:
    rows = parse('email,name\na@example.com,"two\nlines"\nbad,x\n')
    assert isinstance(rows[0], CustomerRow) and rows[0].name == "two lines"
    assert isinstance(rows[1], RejectedRow) and rows[1].line == 4


def test_a_row_with_a_stray_comma_is_refused_rather_than_read_into_the_wrong_columns() -> None:
    rows = parse(
        "email,name,city\n"
        "maria@example.com,Ivanova, Maria,Sofia\n"  # the name needed quotes
        "siti@example.com,Siti,Jakarta,\n"  # a trailing comma, as some exporters write
    )
    assert rows[0] == RejectedRow(
        2,
        "maria@example.com",
        "4 cells but the header has 3 columns: a value holding the separator (a comma) needs"
        " double quotes around it",
    )
    assert isinstance(rows[1], CustomerRow) and rows[1].fields == {"city": "Jakarta"}


def test_a_file_without_an_email_column_is_refused_as_a_whole() -> None:
    with pytest.raises(ImportFileError, match="'email' column"):
        parse("name,phone\nAna,123\n")


def test_empty_columns_at_the_end_of_a_header_are_a_spreadsheets_and_one_between_is_named() -> None:
    rows = parse("email,name,,\nana@example.com,Ana,,\n")
    assert [r.email for r in rows if isinstance(r, CustomerRow)] == ["ana@example.com"]
    with pytest.raises(ImportFileError, match=r"^the header gives no name to column 2$"):
        parse("email,,name\nana@example.com,x,Ana\n")


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


def test_a_cell_over_128_kib_rejects_its_row_and_the_next_rows_go_on() -> None:
    big = "x" * (200 * 1024)
    rows = parse(f"email,notes\na@example.com,short\nb@example.com,{big}\nc@example.com,ok\n")
    assert [r.email for r in rows if isinstance(r, CustomerRow)] == [
        "a@example.com",
        "c@example.com",
    ]
    (rejected,) = [r for r in rows if isinstance(r, RejectedRow)]
    assert (rejected.line, rejected.email) == (3, "b@example.com")
    assert rejected.reason == "notes is 200 KiB long, more than a cell may hold"


def test_a_quote_that_never_closes_is_named_by_the_line_it_starts_on() -> None:
    runaway = "".join(f"x{i}@example.com,{'y' * 100}\n" for i in range(2000))
    rows = parse(f'email,notes\na@example.com,"oops\n{runaway}')
    (rejected,) = rows
    assert isinstance(rejected, RejectedRow) and rejected.line == 2
    assert rejected.reason.startswith("a quote opened here never closes: lines 2 to 2002")


def test_a_quote_that_never_closes_in_a_short_file_rejects_the_rows_it_swallowed() -> None:
    """Three rows (one blank) after an unclosed quote would be one name, imported with no
    word said; they are named instead, while quoted cells over several lines, with commas
    in them, are still cells."""
    rows = parse(
        'email,name,city\nq1@example.com,"Ann,Sofia\nq2@example.com,Bob,Varna\n\n'
        "q3@example.com,Cy,Ruse\n"
    )
    (rejected,) = rows
    assert isinstance(rejected, RejectedRow) and (rejected.line, rejected.email) == (
        2,
        "q1@example.com",
    )
    assert rejected.reason == (
        "a quote opened here never closes: lines 2 to 5, the end of the file, were read as"
        " this one row, and none of them was imported"
    )
    kept = parse(
        'email,name,address,notes\nq1@example.com,Acme,"Acme Ltd\nUnit 5, Park Road, London",'
        '"Likes:\ntea, coffee, mugs, spoons"\nq2@example.com,B,V,"say ""hi"""\n'
    )
    assert [r.email for r in kept if isinstance(r, CustomerRow)] == [
        "q1@example.com",
        "q2@example.com",
    ]


def test_rows_are_numbered_by_the_line_they_start_on() -> None:
    rows = parse('email,name\n\nbad,"two\nlines"\n')
    assert [(r.line, type(r)) for r in rows] == [(3, RejectedRow)]


def undecodable(text: str) -> io.StringIO:
    """Text as the importer reads a file: bytes that are not UTF-8 kept by surrogateescape."""
    raw = text.encode("utf-8").replace(b"<E9>", b"\xe9")
    return io.StringIO(raw.decode("utf-8", "surrogateescape"), newline="")


def test_a_stray_byte_late_in_the_file_rejects_its_row_by_line() -> None:
    filler = "".join(f"c{i}@example.com,Customer {i}\n" for i in range(3000))  # past the sample
    stream = undecodable(f"email,name\n{filler}z@example.com,Zo<E9>\nlast@example.com,Last\n")
    rows = list(parse_rows(read_rows(stream)))
    assert len([r for r in rows if isinstance(r, CustomerRow)]) == 3001
    (rejected,) = [r for r in rows if isinstance(r, RejectedRow)]
    assert rejected == RejectedRow(
        3002, "z@example.com", "line 3002: byte 0xE9 is not UTF-8; save the file as CSV UTF-8"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("email,name\nz@example.com,Zo<E9>\n", "line 2: byte 0xE9 is not UTF-8"),
        ("PK\x03\x04\x14\x00\x00\x00email", "not a text file"),
    ],
    ids=["latin-1", "a-spreadsheet"],
)
def test_a_file_that_is_not_utf8_text_from_its_start_is_refused_as_a_whole(
    raw: str, message: str
) -> None:
    with pytest.raises(ImportFileError, match=message):
        list(read_rows(undecodable(raw)))


def test_what_a_rejected_row_shows_cannot_drive_the_terminal() -> None:
    (row,) = parse("email,timezone\n\x1b[2J\x1b]0;owned\x07@example.com,\u202eEurope/Sofia\n")
    assert isinstance(row, RejectedRow)
    shown = row.email + row.reason
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert row.email.startswith("\\x1b[2J")
