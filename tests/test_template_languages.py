"""Every shipped customer template speaks every language we write to customers in, and each
language says the same things: a Tagalog reader never falls back to English mid-conversation,
and no translation drops the reference, the meeting's place or the unsubscribe link."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jinja2 import Environment, nodes

from mailer.outbound.templates import TemplateStore, sample_context

SHIPPED = Path(__file__).resolve().parent.parent / "templates"
STORE = TemplateStore(SHIPPED)
MANILA = ZoneInfo("Asia/Manila")
REFERENCE = "ack"  # the first template translated; the languages every customer mail needs
# Staff mail: staff accounts have no language of their own, so these stay in English.
STAFF_ONLY = {"followups_digest"}
CUSTOMER_TEMPLATES = [n for n in STORE.names() if n not in STAFF_ONLY]
VARIANTS = [(n, v) for n in STORE.names() for v in STORE.variants(n)]


def folder(name: str, variant: str | None) -> Path:
    return SHIPPED / name / (variant or "")


def references(path: Path) -> set[str]:
    """The dotted names a file reads ("meeting.starts_at", "company.name"), and what it extends."""
    tree = Environment().parse(path.read_text(encoding="utf-8"))
    found = {f"extends {getattr(e.template, 'value', '')}" for e in tree.find_all(nodes.Extends)}
    for node in tree.find_all(nodes.Getattr):
        parts = [node.attr]
        inner = node.node
        while isinstance(inner, nodes.Getattr):
            parts.insert(0, inner.attr)
            inner = inner.node
        if isinstance(inner, nodes.Name):
            found.add(".".join([inner.name, *parts]))
    return found


@pytest.mark.parametrize("name", CUSTOMER_TEMPLATES)
def test_customer_templates_have_every_language_ack_has(name: str) -> None:
    assert STORE.variants(name) == STORE.variants(REFERENCE)


def test_staff_templates_stay_english_only() -> None:
    assert all(STORE.variants(name) == [None] for name in STAFF_ONLY)


@pytest.mark.parametrize(("name", "variant"), [v for v in VARIANTS if v[1] is not None])
def test_each_language_reads_the_same_data_and_files_as_english(name: str, variant: str) -> None:
    english, translated = folder(name, None), folder(name, variant)
    assert sorted(p.name for p in translated.iterdir() if p.is_file()) == sorted(
        p.name for p in english.iterdir() if p.is_file() and p.name != "sample.toml"
    )
    for file in sorted(translated.iterdir()):
        expected = {
            r.replace("_layouts/en.html", f"_layouts/{variant}.html")
            for r in references(english / file.name)
        }
        assert references(file) == expected, f"{name}/{variant}/{file.name}"


@pytest.mark.parametrize(("name", "variant"), VARIANTS)
def test_each_variant_renders_with_the_sample_data(name: str, variant: str | None) -> None:
    data = sample_context(SHIPPED, name, variant)
    message = STORE.render(name, data, locale=variant, zone=MANILA)
    assert message.variant == variant
    assert message.subject and message.text.strip()
    if message.html is not None:
        assert f'lang="{variant or "en"}"' in message.html


def test_a_tagalog_meeting_invitation_reads_in_tagalog_with_its_place_and_people() -> None:
    data = sample_context(SHIPPED, "meeting_invitation", "tl-PH")
    message = STORE.render("meeting_invitation", data, locale="tl-PH", zone=MANILA)
    assert message.subject == "Meeting kasama si Sam Ivanova, Marso 18, 2025, 6:30 PM"
    assert "Kailan: Martes, Marso 18, 2025, 6:30 PM" in message.text
    assert "Kasama: Sam Ivanova, Rio Santos" in message.text
    data["meeting"]["cancelled"] = True
    cancelled = STORE.render("meeting_invitation", data, locale="tl", zone=MANILA)
    assert cancelled.subject.startswith("Kanselado: ang ating meeting sa Marso 18, 2025")
    assert "Kasama:" not in cancelled.text


def test_an_indonesian_desk_reply_keeps_the_agents_words_and_the_reference() -> None:
    data = sample_context(SHIPPED, "desk_reply", "id")
    data["inquiry"]["subject"] = ""
    message = STORE.render("desk_reply", data, locale="id-ID", zone=MANILA)
    assert message.subject == "Re: pesan Anda [NW-1042]"
    assert message.text.startswith("The burrs need a clean.\n\n> It squeaks.\n\nSam\n")
    assert "Nomor referensi: NW-1042." in message.text


MARKETING = ["newsletter", "birthday", "webinar_invite", "webinar_reminder", "cart_abandoned"]
PURCHASES = ["reorder", "winback", "after_purchase"]


@pytest.mark.parametrize("name", MARKETING + PURCHASES)
def test_tagalog_marketing_mail_links_to_unsubscribe_and_preferences(name: str) -> None:
    data = sample_context(SHIPPED, name, "tl")
    message = STORE.render(name, data, locale="tl", zone=MANILA)
    for part in (message.text, message.html or ""):
        assert "https://mail.example.com/u/sample-token" in part
        assert "https://mail.example.com/preferences/sample-token" in part


@pytest.mark.parametrize("name", PURCHASES)
@pytest.mark.parametrize("variant", STORE.variants("ack"))
def test_purchase_mail_reads_well_for_a_customer_without_orders(
    name: str, variant: str | None
) -> None:
    """A new customer has no orders, insight or recommendations yet: the message still
    greets them, offers the shop and keeps the unsubscribe link, with no empty list."""
    data = sample_context(SHIPPED, name, variant) | {
        "orders": [],
        "insight": None,
        "recommendations": [],
    }
    message = STORE.render(name, data, locale=variant, zone=MANILA)
    assert message.subject.strip() and "Ana" in message.text
    assert (
        "<li>" not in (message.html or "") and "\u00d7" not in message.text
    )  # no "2 x product" line
    assert "https://mail.example.com/u/sample-token" in message.text


def test_a_thank_you_names_the_order_its_schedule_thanks_for_not_a_later_one() -> None:
    """after_purchase fires days after an order (``ordered_on``, the customer's local day):
    an order placed since then must not be the one thanked for."""
    data = sample_context(SHIPPED, "after_purchase", "id") | {"ordered_on": "2025-02-08"}
    message = STORE.render("after_purchase", data, locale="id", zone=MANILA)
    assert "pesanan NW-5107 tanggal 8 Februari 2025" in message.text
    assert "NW-5531" not in message.text


@pytest.mark.parametrize("variant", STORE.variants("cart_abandoned"))
def test_a_cart_reminder_lists_what_the_shop_sent_and_reads_well_without_it(
    variant: str | None,
) -> None:
    """The event's payload is the shop's: its items and link when it sends them, the
    shop's own site when it sends nothing."""
    data = sample_context(SHIPPED, "cart_abandoned", variant)
    message = STORE.render("cart_abandoned", data, locale=variant, zone=MANILA)
    assert "2 \u00d7 Ethiopia Yirgacheffe 250 g" in message.text
    assert "https://northwind.example/cart/sample" in (message.html or "")
    data["event"] = {"name": "cart_abandoned", "occurred_at": data["event"]["occurred_at"]}
    data["event"]["payload"] = {}
    bare = STORE.render("cart_abandoned", data, locale=variant, zone=MANILA)
    assert "<li>" not in (bare.html or "") and data["company"]["website"] in (bare.html or "")
    assert bare.subject.strip() and "https://mail.example.com/u/sample-token" in bare.text
