"""A customer's data-access request and request to be forgotten, on both databases: the
export holds everything, and after erasure no table holds anything that identifies them,
while the rows that dedupe, the throttle and the counts need are still there."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, MetaData, func, select
from sqlmodel import SQLModel

from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.core.errors import NotFound
from mailer.customers import followups, profiles
from mailer.customers.edits import read_form
from mailer.inbound import inquiries
from mailer.inbound.parsing import parse
from mailer.outbound import outbox
from mailer.outbound.outbox import NewMessage, Outcome, Result
from mailer.relationship import privacy
from mailer.sandbox import smtp_server
from mailer.store.models import InquiryStatus, OutboxStatus
from tests.command import Mailer
from tests.command import on_sqlite as on_sqlite  # the fixture, for the commands' test
from tests.conftest import add_customers

EMAIL = "zdravko.kirov@example.bg"
# Everything below identifies Zdravko; none of it may survive his erasure, in any table.
IDENTIFYING = (
    EMAIL,
    "Здравко",
    "Киров",
    "ZK-7731",  # a custom field
    "кафемелачка XQ-19",  # what he wrote about
    "поръчка 55102",
    "обещах обаждане",  # a colleague's note about him
    "Зидарова",  # given in an edit, removed in the next: only its history holds it
    "донеси мелачката",  # a follow-up's note
    "вкъщи при Киров",  # where a meeting was to be
)
CSV = (
    "email,name,first_name,birthday,tags,loyalty_code\n"
    f"{EMAIL},Здравко Киров,Здравко,1984-03-09,vip,ZK-7731\n"
)

EDIT = {  # the form as it comes, with a custom field added
    "email": EMAIL,
    "name": "Здравко Киров",
    "birthday": "1984-03-09",
    "tags": "vip",
    "field.loyalty_code": "ZK-7731",
    "marketing_consent": "on",
    "relationship_consent": "on",
}


def inquiry_mail(message_id: str) -> bytes:
    return (
        f"From: Здравко Киров <{EMAIL}>\r\nTo: support@northwind-roasters.example\r\n"
        f"Subject: Счупена кафемелачка XQ-19\r\nMessage-ID: {message_id}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Здравейте, моля за помощ, поръчка 55102.\r\n"
    ).encode()


def zdravko_everywhere(engine: Engine, tmp_path: Path, clock: ManualClock) -> dict[str, int]:
    """A customer with a profile and an edit to it, an inquiry with a note, a reply and his
    re-opening of it, a meeting at his home, a sent and a queued message, a server reply
    that names him, and a sandbox copy."""
    now = clock.now()
    add_customers(engine, tmp_path, CSV, now)
    with engine.begin() as conn:
        customer = profiles.get(conn, EMAIL)
        for mother in ("Мария Зидарова", ""):
            edit = {**EDIT, "field.mother": mother}
            profiles.edit(conn, customer.id, read_form(edit, ZoneInfo("UTC")), "mila", now)
        logged = inquiries.log(conn, parse(inquiry_mail("<q1@mail.example.bg>")), now)
        inquiries.add_note(conn, logged.inquiry_id, "обещах обаждане в петък", "mila", now)
        inquiries.record_reply(conn, logged.inquiry_id, "Здравко, пращаме нова", "mila", now)
        inquiries.set_status(conn, logged.inquiry_id, InquiryStatus.ANSWERED)
        inquiries.reopen(conn, logged.inquiry_id, EMAIL, now)
        smtp_server.store(conn, "news@northwind.example", [EMAIL], inquiry_mail("<s1@x>"), now)
        meeting = followups.MeetingPlan(duration=timedelta(minutes=30), place="вкъщи при Киров")
        visit = followups.NewFollowUp(
            customer_id=customer.id,
            due_at=now + timedelta(days=2),
            note="донеси мелачката на Здравко",
            created_by="mila",
            meeting=meeting,
        )
        followups.add(conn, visit, now)
    sent, waiting = (
        NewMessage(
            dedupe_key=f"newsletter:{customer.id}:{n}",
            to_address=EMAIL,
            category=Category.MARKETING,
            template="newsletter",
            customer_id=customer.id,
            context={"greeting": "Здравко, новото кафе"},
            due_at=now + timedelta(days=n),
        )
        for n in (0, 30)
    )
    outbox.enqueue(engine, [sent, waiting], now)
    with engine.connect() as conn:
        first = outbox.find(conn, customer_id=customer.id)[-1]
    reply = f"250 2.0.0 queued for <{EMAIL}>"
    outcome = Outcome(
        outbox_id=first["id"],
        result=Result.SENT,
        at=now,
        smtp_code=250,
        smtp_reply=reply,
        subject="Здравко, новото кафе пристигна",
    )
    outbox.record(engine, [outcome], {first["id"]: 0})  # as if claimed and sent
    return {"customer": customer.id, "inquiry": logged.inquiry_id}


def stored_text(engine: Engine) -> dict[str, str]:
    """Every value in every table, as text, by table: what a person could read back."""
    tables: MetaData = SQLModel.metadata
    found: dict[str, str] = {}
    with engine.connect() as conn:
        for table in tables.sorted_tables:
            rows = conn.execute(select(table)).all()
            found[table.name] = "\n".join(" ".join(_text(value) for value in row) for row in rows)
    return found


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return json.dumps(value, ensure_ascii=False, default=str)


def test_the_export_holds_everything_about_the_customer(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    ids = zdravko_everywhere(engine, tmp_path, clock)
    with engine.connect() as conn:
        exported = json.dumps(
            privacy.export(conn, EMAIL, clock.now()), ensure_ascii=False, default=str
        )
        data = privacy.export(conn, EMAIL, clock.now())
    assert data["customer"]["id"] == ids["customer"] and data["customer"]["tags"] == ("vip",)
    assert [m["status"] for m in data["messages"]] == [OutboxStatus.QUEUED, OutboxStatus.SENT]
    assert data["messages"][1]["attempts_log"][0]["smtp_code"] == 250
    assert [i["id"] for i in data["inquiries"]] == [ids["inquiry"]]
    assert data["inquiries"][0]["events"][0]["text"].startswith("обещах")
    added_and_removed = {(None, "Мария Зидарова"), ("Мария Зидарова", None)}
    assert {(c["before"], c["after"]) for c in data["changes"]} == added_and_removed
    for needle in IDENTIFYING:
        assert needle in exported, needle


def test_after_erasure_no_table_holds_anything_that_identifies_the_customer(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    ids = zdravko_everywhere(engine, tmp_path, clock)
    before = stored_text(engine)
    assert all(any(n in text for text in before.values()) for n in IDENTIFYING)
    with engine.begin() as conn:
        erased = privacy.erase(conn, EMAIL, clock.now())
    assert (erased.messages, erased.inquiries, erased.followups, erased.sandbox_messages) == (
        2,
        1,
        1,
        1,
    )
    left = {
        (table, needle)
        for table, text in stored_text(engine).items()
        for needle in IDENTIFYING
        if needle.lower() in text.lower()
    }
    assert not left, f"still stored after erasure: {sorted(left)}"
    with engine.connect() as conn:
        counts = dict(
            conn.execute(
                select(outbox.OUTBOX.c.status, func.count()).group_by(outbox.OUTBOX.c.status)
            ).all()
        )
        forgotten = profiles.get_id(conn, ids["customer"])
        inquiry = inquiries.get(conn, ids["inquiry"])
    # the rows that dedupe, the throttle and the counts need are kept, the waiting mail is not
    assert counts == {OutboxStatus.SENT: 1, OutboxStatus.SKIPPED: 1}
    assert forgotten.suppressed_reason == profiles.ERASED_REASON and forgotten.tags == ()
    assert inquiry is not None and inquiry.received_at is not None


def test_an_erased_address_is_never_mailed_again(
    engine: Engine, tmp_path: Path, clock: ManualClock
) -> None:
    zdravko_everywhere(engine, tmp_path, clock)
    with engine.begin() as conn:
        privacy.erase(conn, EMAIL, clock.now())
    # a customer file cannot bring him back ...
    report = profiles.import_csv(engine, _csv(tmp_path, CSV), clock.now())
    assert (report.inserted, [r.reason for r in report.rejected]) == (0, [profiles.ERASED_REASON])
    # ... and when he writes again, he is logged, but nothing goes back, not even an answer
    with engine.begin() as conn:
        logged = inquiries.log(conn, parse(inquiry_mail("<q2@mail.example.bg>")), clock.now())
        lead = profiles.get(conn, EMAIL)
    ack = NewMessage(
        dedupe_key="ack:x",
        to_address=EMAIL,
        category=Category.TRANSACTIONAL,
        template="acknowledgement",
        customer_id=lead.id,
    )
    outbox.enqueue(engine, [ack], clock.now())
    with engine.connect() as conn:
        (row,) = outbox.find(conn, customer_id=lead.id)
    assert logged.customer_id == lead.id and lead.suppressed_reason == profiles.ERASED_REASON
    assert (row["status"], row["reason"]) == ("skipped", f"suppressed: {profiles.ERASED_REASON}")


def _csv(directory: Path, text: str) -> Path:
    path = directory / "again.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_commands_export_to_a_private_file_and_erase_only_when_confirmed(
    on_sqlite: tuple[Mailer, dict[str, str]], tmp_path: Path
) -> None:
    mailer, _ = on_sqlite
    mailer("db", "upgrade")
    (tmp_path / "c.csv").write_text(CSV, encoding="utf-8")
    mailer("customers", "import", str(tmp_path / "c.csv"))
    target = tmp_path / "zdravko.json"
    mailer("customers", "export", EMAIL, "--out", str(target))
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert json.loads(target.read_text(encoding="utf-8"))["customer"]["fields"] == {
        "loyalty_code": "ZK-7731"
    }
    refused = mailer("customers", "erase", EMAIL, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "confirm with --yes" in refused.stderr and "Traceback" not in refused.stderr
    assert EMAIL in mailer("customers", "show", EMAIL).stdout
    assert "erased" in mailer("customers", "erase", EMAIL, "--yes").stdout
    gone = mailer("customers", "show", EMAIL, check=False)
    assert gone.returncode == 1 and f"no customer {EMAIL}" in gone.stderr


def test_erasing_someone_who_is_not_a_customer_says_so(engine: Engine, clock: ManualClock) -> None:
    with engine.begin() as conn, pytest.raises(NotFound, match=r"no customer nobody@example\.bg"):
        privacy.erase(conn, "nobody@example.bg", clock.now())
