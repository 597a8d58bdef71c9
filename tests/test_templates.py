"""The template store: variant choice, sandboxing, error reports, formatting, shipped templates."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel import numbers

from mailer.core.errors import Problem, TemplateError
from mailer.outbound.templates import TemplateStore, sample_context

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
SOFIA = ZoneInfo("Europe/Sofia")
JAKARTA = ZoneInfo("Asia/Jakarta")


def make_store(tmp_path: Path, files: dict[str, str]) -> TemplateStore:
    root = tmp_path / "templates"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return TemplateStore(root)


def context(**overrides: Any) -> dict[str, Any]:
    data = sample_context(SHIPPED, "ack", None)
    data.update(overrides)
    return data


def customer(**fields: Any) -> dict[str, Any]:
    return {**context()["customer"], **fields}


def problem_of(store: TemplateStore, name: str, data: dict[str, Any] | None = None) -> Problem:
    with pytest.raises(TemplateError) as caught:
        store.render(name, data or context(), locale=None, zone=SOFIA)
    return caught.value.problem


@pytest.fixture(scope="module")
def shipped() -> TemplateStore:
    return TemplateStore(SHIPPED)


# Choosing a variant


def test_bulgarian_customer_gets_bulgarian_variant(shipped: TemplateStore) -> None:
    data = sample_context(SHIPPED, "ack", "bg-BG")
    message = shipped.render("ack", data, locale="bg-BG", zone=SOFIA)
    assert message.variant == "bg"
    assert message.subject == "Получихме съобщението Ви [NW-1042]"
    assert "Номер на запитването: NW-1042" in message.text
    assert message.html is not None and 'lang="bg"' in message.html


@pytest.mark.parametrize("locale", ["bg-BG", "bg_BG", "BG", "bg-Cyrl-BG"])
def test_regional_locale_falls_back_to_its_language_folder(
    shipped: TemplateStore, locale: str
) -> None:
    assert shipped.resolve("ack", locale) == "bg"


@pytest.mark.parametrize("locale", ["de-DE", "fr", None, ""])
def test_unknown_or_missing_locale_gets_the_default_variant(
    shipped: TemplateStore, locale: str | None
) -> None:
    assert shipped.resolve("ack", locale) is None
    assert shipped.render("ack", context(), locale=locale, zone=SOFIA).variant is None


def test_most_specific_locale_folder_wins(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            "t/subject.txt": "default",
            "t/body.txt": "default",
            "t/pt/subject.txt": "pt",
            "t/pt/body.txt": "pt",
            "t/pt-BR/subject.txt": "pt-BR",
            "t/pt-BR/body.txt": "pt-BR",
        },
    )
    assert store.resolve("t", "pt_br") == "pt-BR"
    assert store.resolve("t", "pt-PT") == "pt"
    assert store.variants("t") == [None, "pt", "pt-BR"]


def test_variant_is_used_as_a_whole_folder_never_mixed(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {"t/subject.txt": "Hello", "t/body.txt": "Hello", "t/bg/body.txt": "Здравейте"},
    )
    with pytest.raises(TemplateError) as caught:
        store.render("t", context(), locale="bg", zone=SOFIA)
    assert caught.value.problem == Problem("templates/t/bg", "missing subject.txt")


def test_variant_without_any_body_is_an_error(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "Hello"})
    assert problem_of(store, "t") == Problem("templates/t", "missing body.html or body.txt")


def test_names_list_templates_but_not_layouts(shipped: TemplateStore) -> None:
    assert shipped.names() == [
        "ack",
        "after_purchase",
        "birthday",
        "cart_abandoned",
        "desk_reply",
        "followups_digest",
        "meeting_invitation",
        "newsletter",
        "order_confirmation",
        "reorder",
        "subscribe_confirm",
        "webinar_cancel",
        "webinar_invite",
        "webinar_reminder",
        "winback",
    ]
    assert shipped.variants("ack") == [None, "bg", "id", "tl"]


@pytest.mark.parametrize("name", ["nope", "_layouts", "../templates", "ack/bg", ""])
def test_unknown_template_name_is_a_template_error(shipped: TemplateStore, name: str) -> None:
    with pytest.raises(TemplateError, match="no such template"):
        shipped.render(name, context(), locale=None, zone=SOFIA)


# What a rendered message looks like


def test_customer_name_is_escaped_in_html_but_not_in_subject(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            "t/subject.txt": "Hi {{ customer.name }}",
            "t/body.html": "<p>Hi {{ customer.name }}</p>",
            "t/body.txt": "Hi {{ customer.name }}",
        },
    )
    evil = "<script>alert(1)</script>"
    message = store.render("t", context(customer=customer(name=evil)), locale=None, zone=SOFIA)
    assert message.subject == f"Hi {evil}"
    assert message.text == f"Hi {evil}"
    assert message.html is not None
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html


def test_line_breaks_in_customer_data_cannot_make_a_multi_line_subject(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "Hi {{ customer.name }}!\n", "t/body.txt": "x"})
    name = "Ana\r\nBcc: victim@example.com\x00\u2028"
    message = store.render("t", context(customer=customer(name=name)), locale=None, zone=SOFIA)
    assert message.subject == "Hi Ana Bcc: victim@example.com !"


def test_css_from_the_layout_is_inlined_into_style_attributes(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            "_layouts/base.html": (
                "<html><head><style>p.lead { color: #8b5a3c; }</style></head>"
                "<body>{% block content %}{% endblock %}</body></html>"
            ),
            "t/subject.txt": "x",
            "t/body.html": (
                '{% extends "_layouts/base.html" %}'
                '{% block content %}<p class="lead">Hi</p>{% endblock %}'
            ),
        },
    )
    html = store.render("t", context(), locale=None, zone=SOFIA).html
    assert html is not None
    assert '<p class="lead" style="color: #8b5a3c;">Hi</p>' in html
    assert "<style>" not in html


def test_text_part_is_generated_from_html_when_there_is_no_body_txt(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            "t/subject.txt": "x",
            "t/body.html": (
                "<html><head><style>p { color: red; }</style></head><body>"
                "<h1>Spring news</h1><p>Hi <b>{{ customer.first_name }}</b>,<br>"
                '<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
                '<p><strong title="a > b">New:</strong> <EM>two</EM> <i class="x">roasts</i>'
                '<br/><big>5 * 3</big> <img src="cup.png" alt="cup"></p>'
                "<p>Your order\n  <strong>NW-1042</strong>\n  has shipped.</p>"
                "<p><b title='it's'>Ana's</b> beans.</p></body></html>"
            ),
        },
    )
    message = store.render("t", context(), locale=None, zone=SOFIA)
    assert message.text == (
        "# Spring news\n\nHi Ana,\n[Unsubscribe](https://mail.example.com/u/sample-token)\n\n"
        "New: two roasts\n5 * 3\n\nYour order NW-1042 has shipped.\n\nAna's beans.\n"
    )


def test_text_only_variant_has_no_html_part(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "x", "t/body.txt": "plain"})
    message = store.render("t", context(), locale=None, zone=SOFIA)
    assert (message.text, message.html) == ("plain", None)


def test_edited_file_is_picked_up_by_the_same_store(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "Old subject", "t/body.txt": "x"})
    assert store.render("t", context(), locale=None, zone=SOFIA).subject == "Old subject"
    subject = tmp_path / "templates" / "t" / "subject.txt"
    subject.write_text("New subject", encoding="utf-8")
    later = subject.stat().st_mtime + 5  # never rely on the file system's clock resolution
    os.utime(subject, (later, later))
    assert store.render("t", context(), locale=None, zone=SOFIA).subject == "New subject"


# Dates, times and money in the reader's language and zone


def render_line(tmp_path: Path, line: str, locale: str | None, **data: Any) -> str:
    """Render `line` as the subject of a template with an English default and a bg variant."""
    files = {
        f"t/{folder}{file}": line for folder in ("", "bg/") for file in ("subject.txt", "body.txt")
    }
    store = make_store(tmp_path, files)
    return store.render("t", context(**data), locale=locale, zone=SOFIA).subject


def test_dates_use_the_customers_language_and_time_zone(tmp_path: Path) -> None:
    late_evening_utc = datetime(2025, 3, 13, 23, 30, tzinfo=UTC)  # already the 14th in Sofia
    line = '{{ when|date("long") }}, {{ when|time }}'
    bulgarian = "14 март 2025 г., 1:30"  # noqa: RUF001
    assert render_line(tmp_path, line, "bg", when=late_evening_utc) == bulgarian
    assert render_line(tmp_path, line, None, when=late_evening_utc) == "March 14, 2025, 1:30 AM"


def test_english_default_keeps_english_dates_for_readers_of_other_languages(
    tmp_path: Path,
) -> None:
    line = '{{ day|date("long") }}'
    assert render_line(tmp_path, line, "de-DE", day=date(2025, 3, 14)) == "March 14, 2025"
    assert render_line(tmp_path, line, "en-GB", day=date(2025, 3, 14)) == "14 March 2025"


def test_money_and_numbers_are_written_the_locale_way(tmp_path: Path) -> None:
    """A currency is written with the decimals CLDR gives it (through babel's data), so a
    lock upgrade that brings new CLDR data may change the rupiah and this test says why."""
    rupiah_decimals = numbers.get_currency_precision("IDR")
    cents = "0" * rupiah_decimals
    store = make_store(
        tmp_path,
        {
            "t/subject.txt": "{{ 150000|money('IDR') }} | {{ 1234.5|number }}",
            "t/body.txt": "x",
            "t/id/subject.txt": "{{ 150000|money('IDR') }} | {{ 1234.5|number }}",
            "t/id/body.txt": "x",
        },
    )
    assert store.render("t", context(), locale="id-ID", zone=JAKARTA).subject == (
        f"Rp150.000{',' * bool(cents)}{cents} | 1.234,5"
    )
    assert store.render("t", context(), locale="en", zone=JAKARTA).subject == (
        f"IDR150,000{'.' * bool(cents)}{cents} | 1,234.5"
    )
    euros = render_line(tmp_path, "{{ 1234.5|money('EUR') }}", "bg")
    yen = render_line(tmp_path, "{{ 1234|money('JPY') }}", "bg")
    assert (euros, yen) == ("1 234,50 €", "1 234 JPY")  # two decimals, and none


def test_durations_keep_their_minutes(tmp_path: Path) -> None:
    line = "{{ length|duration }}"
    assert render_line(tmp_path, line, None, length=timedelta(minutes=90)) == (
        "1 hour and 30 minutes"
    )


def test_filter_given_the_wrong_kind_of_value_says_so(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "{{ customer.name|date }}", "t/body.txt": "x"})
    problem = problem_of(store, "t")
    assert problem.where == "templates/t/subject.txt:1"
    assert "the date filter needs a date or datetime, not str 'Ana Petrova'" in problem.message


# Problems: where and what


def test_check_reports_a_missing_variable_with_file_and_line(tmp_path: Path) -> None:
    store = make_store(
        tmp_path, {"t/subject.txt": "x", "t/body.txt": "Hi\n\n{{ customer.nickname }}\n"}
    )
    assert store.check() == [
        Problem(
            "templates/t/body.txt:3", "undefined variable: 'customer' has no attribute 'nickname'"
        )
    ]


def test_check_reports_a_syntax_error_with_file_and_line(tmp_path: Path) -> None:
    store = make_store(
        tmp_path, {"t/subject.txt": "x", "t/bg/subject.txt": "x", "t/bg/body.html": "<p>\n{% if %}"}
    )
    [default, problem] = store.check()
    assert default == Problem("templates/t", "missing body.html or body.txt")
    assert problem.where == "templates/t/bg/body.html:2"
    assert problem.message.startswith("syntax error: ")


def test_check_reports_every_problem_not_just_the_first(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            "a/subject.txt": "{{ nope }}",
            "a/body.txt": "{{ customer.fields.shoe_size }}",
            "b/subject.txt": "{% for %}",
            "b/body.txt": "fine",
            "c/subject.txt": "fine",
            "c/body.txt": "fine",
        },
    )
    assert [(p.where, p.message.split(":")[0]) for p in store.check()] == [
        ("templates/a/subject.txt:1", "undefined variable"),
        ("templates/a/body.txt:1", "undefined variable"),
        ("templates/b/subject.txt:1", "syntax error"),
    ]


def test_error_in_a_shared_layout_names_the_layout_once(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {
            "_layouts/base.html": "<p>\n{{ company.motto }}</p>{% block content %}{% endblock %}",
            "a/subject.txt": "x",
            "a/body.html": '{% extends "_layouts/base.html" %}',
            "b/subject.txt": "x",
            "b/body.html": '{% extends "_layouts/base.html" %}',
        },
    )
    assert store.check() == [
        Problem(
            "templates/_layouts/base.html:2",
            "undefined variable: 'company' has no attribute 'motto'",
        )
    ]


def test_any_exception_a_template_raises_becomes_a_problem(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "x", "t/body.txt": "\n{{ 1 / 0 }}"})
    assert problem_of(store, "t") == Problem(
        "templates/t/body.txt:2", "cannot render: division by zero (ZeroDivisionError)"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ customer.tags.append('vip') }}",
    ],
)
def test_sandbox_escapes_are_refused_and_reported(tmp_path: Path, source: str) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "x", "t/body.txt": source})
    problem = problem_of(store, "t")
    assert problem.where == "templates/t/body.txt:1"
    assert problem.message.startswith("not allowed in templates: ")
    assert store.check() == [problem]


@pytest.mark.parametrize(
    "source", ['{% extends "../../secret.html" %}', '{% include "/etc/passwd" %}']
)
def test_template_paths_cannot_leave_the_templates_folder(tmp_path: Path, source: str) -> None:
    (tmp_path / "secret.html").write_text("secret", encoding="utf-8")
    store = make_store(tmp_path, {"t/subject.txt": "x", "t/body.html": source})
    problem = problem_of(store, "t")
    assert problem.where == "templates/t/body.html:1"
    assert problem.message.startswith("no such template: ")


def test_misspelt_locale_folder_is_reported(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        {"t/subject.txt": "x", "t/body.txt": "x", "t/gb/subject.txt": "x", "t/gb/body.txt": "x"},
    )
    assert store.check() == [
        Problem("templates/t/gb", "not a locale folder: 'gb' is not a known locale")
    ]


# Sample data for check


def test_sample_params_come_from_the_templates_sample_toml(tmp_path: Path) -> None:
    files = {"t/subject.txt": "{{ params.headline }}", "t/body.txt": "x"}
    store = make_store(tmp_path, files)
    assert store.check() == [
        Problem(
            "templates/t/subject.txt:1", "undefined variable: 'params' has no attribute 'headline'"
        )
    ]
    (store.root / "t" / "sample.toml").write_text('[params]\nheadline = "News"\n', encoding="utf-8")
    assert store.check() == []
    assert sample_context(store.root, "t", None)["params"] == {"headline": "News"}


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[params]\nheadline = "News\n', Problem("templates/t/sample.toml:2", "")),
        ("headline = 'News'\n", Problem("templates/t/sample.toml", "unknown key 'headline'")),
    ],
)
def test_broken_sample_toml_is_reported(tmp_path: Path, toml: str, problem: Problem) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "x", "t/body.txt": "x", "t/sample.toml": toml})
    [found] = store.check()
    assert found.where == problem.where
    assert found.message.startswith(problem.message)


def test_check_uses_the_configured_company_when_given(tmp_path: Path) -> None:
    store = make_store(tmp_path, {"t/subject.txt": "{{ company.address }}", "t/body.txt": "x"})
    assert store.check() == []
    [problem] = store.check(company={"name": "Acme"})
    assert problem.message == "undefined variable: 'company' has no attribute 'address'"


# The shipped templates


def test_shipped_templates_all_pass_check(shipped: TemplateStore) -> None:
    assert shipped.check() == []


def test_acknowledgement_shows_reference_and_reply_time_in_customers_zone(
    shipped: TemplateStore,
) -> None:
    data = context(reply_expected_by=datetime(2025, 3, 14, 7, 0, tzinfo=UTC))
    message = shipped.render("ack", data, locale="id", zone=JAKARTA)
    assert message.subject == "Pesan Anda sudah kami terima [NW-1042]"
    assert "paling lambat Jumat, 14 Maret 2025 pukul 14.00" in message.text
    assert message.html is not None and "14.00" in message.html


def test_acknowledgement_has_a_tagalog_variant_and_no_unsubscribe_link(
    shipped: TemplateStore,
) -> None:
    message = shipped.render("ack", context(), locale="tl-PH", zone=SOFIA)
    assert message.variant == "tl"
    assert "Marso" in message.text
    assert message.html is not None and "unsubscribe" not in message.html.lower()


@pytest.mark.parametrize("name", ["newsletter", "birthday", "webinar_invite", "webinar_reminder"])
@pytest.mark.parametrize("locale", [None, "bg", "id"])
def test_marketing_mail_links_to_unsubscribe_and_preferences(
    shipped: TemplateStore, name: str, locale: str | None
) -> None:
    message = shipped.render(name, sample_context(SHIPPED, name, locale), locale=locale, zone=SOFIA)
    for part in (message.text, message.html or ""):
        assert "https://mail.example.com/u/sample-token" in part
        assert "https://mail.example.com/preferences/sample-token" in part


def test_webinar_start_is_shown_in_the_customers_zone(shipped: TemplateStore) -> None:
    data = sample_context(SHIPPED, "webinar_invite", "bg")
    data["webinar"]["starts_at"] = datetime(2025, 4, 3, 15, 0, tzinfo=UTC)
    data["webinar"]["duration"] = timedelta(minutes=90)
    text = shipped.render("webinar_invite", data, locale="bg", zone=SOFIA).text
    assert "четвъртък, 3 април 2025 г., 18:00 ч." in text  # noqa: RUF001
    assert "1 час и 30 минути" in text


def test_newsletter_uses_the_schedules_headline(shipped: TemplateStore) -> None:
    data = context(params={"headline": "December news", "intro": "Winter blend is back."})
    message = shipped.render("newsletter", data, locale=None, zone=SOFIA)
    assert message.subject == "December news"
    assert "Winter blend is back." in message.text
    del data["params"]["intro"]
    assert "Winter blend" not in shipped.render("newsletter", data, locale=None, zone=SOFIA).text
