"""DKIM: what leaves is signed so that a verifier (dkimpy's, as providers' work) accepts it,
keys are made and checked from the command line, and a bad key stops start-up."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim as dkimpy
import dns.message
import dns.rcode
import dns.rrset
import pytest
from aiosmtplib.protocol import normalize_message_line_endings
from sqlalchemy import Engine

from mailer import daemon
from mailer.core.categories import Category
from mailer.core.clock import ManualClock
from mailer.outbound import dkim, outbox
from mailer.outbound.outbox import NewMessage
from mailer.outbound.renderpool import RenderPool
from mailer.outbound.smtp import SmtpTarget
from tests.command import Mailer
from tests.command import on_sqlite as on_sqlite  # the fixture, for the commands
from tests.configs import shipped_config
from tests.conftest import add_customers
from tests.smtp_sink import Sink

DOMAIN = "northwind-roasters.example"
WHEN = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
MESSAGE = (
    b"From: Northwind Coffee <support@northwind-roasters.example>\r\n"
    b"To: =?utf-8?b?0JzQsNGA0LjRjw==?= <maria@example.com>\r\n"
    b"Subject: =?utf-8?q?=D0=97=D0=B8=D0=BC=D0=BD=D0=B8?=\r\n  news\r\n"
    b"Date: Wed, 02 Dec 2026 09:30:00 +0000\r\n"
    b"Message-ID: <1@northwind-roasters.example>\r\n"
    b"List-Unsubscribe: <https://mail.northwind-roasters.example/unsubscribe/t>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Hello  there \r\n\r\nline two\r\n\r\n\r\n"
)


def verifier(*keys: dkim.Key) -> Callable[..., bytes]:
    """DNS as a verifier would see it, answered from the keys' own records."""
    records = {f"{key.dns_name}.".encode(): key.public_record.encode() for key in keys}
    return lambda name, timeout=5: records.get(name, b"")


def a_key(tmp_path: Path, selector: str, algorithm: dkim.Algorithm) -> dkim.Key:
    path = tmp_path / f"{selector}.pem"
    dkim.write_new(path, dkim.generate(algorithm))
    return dkim.load(selector, DOMAIN, path.read_bytes())


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_signed_message_verifies_and_covers_the_unsubscribe_headers(
    tmp_path: Path, algorithm: dkim.Algorithm
) -> None:
    key = a_key(tmp_path, "mail2026", algorithm)
    signed = dkim.Signer((key,)).sign(MESSAGE, WHEN)
    assert dkimpy.verify(signed, dnsfunc=verifier(key))
    field = signed.split(b"\r\n\r\n")[0].decode()
    assert f"a={algorithm}-sha256" in field and "t=1796203800" in field
    for header in ("from", "to", "subject", "date", "message-id", "list-unsubscribe-post"):
        assert header in field.split("h=")[1].split(";")[0].split(":")
    tampered = signed.replace(b"List-Unsubscribe-Post: List", b"List-Unsubscribe-Post:  List!")
    assert not dkimpy.verify(tampered, dnsfunc=verifier(key))
    assert not dkimpy.verify(signed.replace(b"line two", b"line 2"), dnsfunc=verifier(key))


def test_two_selectors_sign_twice_and_each_signature_stands_alone(tmp_path: Path) -> None:
    rsa_key, ed_key = a_key(tmp_path, "rsa2026", "rsa"), a_key(tmp_path, "ed2026", "ed25519")
    signed = dkim.Signer((rsa_key, ed_key)).sign(MESSAGE, WHEN)
    assert signed.count(b"DKIM-Signature:") == 2
    for key in (rsa_key, ed_key):  # a receiver that knows only one of them still verifies
        assert any(dkimpy.DKIM(signed).verify(idx=i, dnsfunc=verifier(key)) for i in range(2)), (
            key.selector
        )


# headers as other mail software writes them: folded anywhere, runs of spaces and tabs,
# space at line ends, names in odd case; a body with space before line ends and blank
# lines at its end. Canonicalization must make of them what a verifier makes.
ODD = (
    b"fROM:\tNorthwind Coffee\r\n <support@northwind-roasters.example>  \r\n"
    b"To: maria@example.com\r\n"
    b"Subject:  Winter\t\t news,\r\n\t  and   more \t\r\n   news\r\n"
    b"Date: Wed, 02 Dec 2026\r\n 09:30:00 +0000\r\n"
    b"message-ID:<2@northwind-roasters.example>\r\n"
    b"List-Unsubscribe:\r\n <https://mail.northwind-roasters.example/unsubscribe/t>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain;\r\n\tcharset=utf-8\r\n\r\n"
    b"Hello \t there  \r\n \r\nline two\t\r\n\r\n\r\n"
)
MESSAGES = {
    "plain": MESSAGE,
    "folded": ODD,
    "empty body": MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n",
    "LF lines": ODD.replace(b"\r\n", b"\n"),  # SMTP sends them as CRLF
}


@pytest.fixture(scope="module")
def pool() -> Iterator[RenderPool]:
    """A render worker of the tests' own: signing goes there as delivery's does."""
    workers = RenderPool(size=1)
    yield workers
    workers.close()


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signatures_made_in_a_render_worker_verify_whatever_the_headers_look_like(
    tmp_path: Path, algorithm: dkim.Algorithm, pool: RenderPool
) -> None:
    """Delivery signs each message in a render worker right after composing it; the signer
    goes there pickled, and what it makes there is what it makes here."""
    key = a_key(tmp_path, "mail2026", algorithm)
    signer = dkim.Signer((key,))
    calls = [("DKIM signing", (message, WHEN)) for message in MESSAGES.values()]
    signed = pool.map(signer.sign, calls)
    for (what, message), made in zip(MESSAGES.items(), signed, strict=True):
        assert isinstance(made, bytes) and made.endswith(message), what
        sent = normalize_message_line_endings(made)  # as the relay receives it
        assert dkimpy.verify(sent, dnsfunc=verifier(key)), what
        assert made == signer.sign(message, WHEN), what  # both signatures are deterministic
        assert not dkimpy.verify(sent.replace(b"news", b"new"), dnsfunc=verifier(key)), what
    covered = signed[1].split(b"h=")[1].split(b";")[0].split(b":")  # type: ignore[union-attr]
    assert covered[:5] == [b"from", b"to", b"subject", b"date", b"message-id"]


def test_a_render_worker_signs_without_loading_the_configuration(
    tmp_path: Path, pool: RenderPool
) -> None:
    signer = dkim.Signer((a_key(tmp_path, "ed2026", "ed25519"),))
    pool.call("DKIM signing", signer.sign, MESSAGE, WHEN)
    loaded = "sorted(__import__('sys').modules)"
    modules = pool.call("modules", eval, loaded)
    assert "mailer.outbound.dkim" in modules and "mailer.core.config" not in modules
    assert "dkim" not in modules, "dkimpy is the tests' verifier, not what signs"


@pytest.fixture
def customers(engine: Engine, tmp_path: Path, clock: ManualClock) -> None:
    csv = "email,name,locale,tags\nmaria@example.com,Мария Иванова,bg,newsletter\n"
    add_customers(engine, tmp_path, csv, clock.now())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # signing is not the db's
async def test_delivered_mail_carries_signatures_a_verifier_accepts(
    engine: Engine,
    customers: None,
    clock: ManualClock,
    sink: tuple[Sink, int],
    tmp_path: Path,
) -> None:
    keys = tmp_path / "var" / "dkim"
    rsa_key, ed_key = a_key(keys, "rsa2026", "rsa"), a_key(keys, "ed2026", "ed25519")
    cfg = shipped_config(
        tmp_path,
        {
            "MAILER_SENDER__DKIM_SELECTOR": '["rsa2026", "ed2026"]',
            "MAILER_WEB__BASE_URL": "https://mail.northwind-roasters.example",
        },
    )
    target = SmtpTarget(host="127.0.0.1", port=sink[1], pool_size=1)
    delivery = daemon.build_delivery(cfg, engine, clock, target)
    customer_id = 1
    new = NewMessage(
        dedupe_key="news:1",
        to_address="maria@example.com",
        customer_id=customer_id,
        category=Category.MARKETING,
        template="newsletter",
        context={"params": {"headline": "Зимни новини", "intro": "Нов бленд."}},
        valid_for=timedelta(days=3),
    )
    # attachments too big to copy to a render worker and back: composed and signed here
    scan = outbox.Attachment("scan.pdf", "application/pdf", b"%PDF-1.7\n" + b"\x00" * 600_000)
    big = replace(  # an invoice: a second newsletter the same day would wait
        new, dedupe_key="invoice:1", category=Category.TRANSACTIONAL, attachments=[scan]
    )
    outbox.enqueue(engine, [new, big], clock.now())
    assert await delivery.deliver_due() == 2
    assert len(sink[0].received) == 2
    for received in sink[0].received:
        assert received.data.count(b"DKIM-Signature:") == 2
        assert dkimpy.verify(received.data, dnsfunc=verifier(rsa_key, ed_key))
    newsletter, invoice = sorted((r.data for r in sink[0].received), key=len)
    covered = newsletter.split(b"h=")[1].split(b";")[0].split(b":")
    assert b"list-unsubscribe-post" in covered and b"list-unsubscribe" in covered
    assert b"scan.pdf" in invoice


def test_keygen_writes_a_private_key_and_prints_the_record_to_publish(
    on_sqlite: tuple[Mailer, dict[str, str]], tmp_path: Path
) -> None:
    mailer, _ = on_sqlite
    made = mailer("dkim", "keygen", "--selector", "Mail2026")
    path = tmp_path / "var" / "dkim" / "mail2026.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = dkim.load("mail2026", DOMAIN, path.read_bytes())
    assert key.algorithm == "rsa" and key.private.key_size == 2048  # type: ignore[union-attr]
    line = made.stdout.strip()
    assert line.startswith(f"mail2026._domainkey.{DOMAIN}. IN TXT (")
    assert dkim.published_key(line) == dkim.published_key(key.public_record)
    assert "dkim_selector" in made.stderr

    again = mailer("dkim", "keygen", "--selector", "mail2026", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    kept = dkim.load("mail2026", DOMAIN, path.read_bytes())
    assert kept.public_record == key.public_record, "the key was not replaced"
    bad = mailer("dkim", "keygen", "--selector", "mail 2026", check=False)
    assert bad.returncode == 1 and "--selector" in bad.stderr and "DKIM selector" in bad.stderr
    other = tmp_path / "ed.pem"
    mailer("dkim", "keygen", "--selector", "ed", "--algorithm", "ed25519", "--out", str(other))
    assert dkim.load("ed", DOMAIN, other.read_bytes()).algorithm == "ed25519"
    folder = mailer("dkim", "keygen", "--selector", "ed", "--out", str(tmp_path), check=False)
    assert (folder.returncode, folder.stderr) == (
        1,
        f"error: --out {tmp_path} is a folder; name the key's file, e.g. {tmp_path}/ed.pem\n",
    )


def test_check_compares_the_key_in_use_with_the_published_record(
    on_sqlite: tuple[Mailer, dict[str, str]], tmp_path: Path
) -> None:
    mailer, env = on_sqlite
    published = mailer("dkim", "keygen", "--selector", "mail2026").stdout
    env["MAILER_SENDER__DKIM_SELECTOR"] = "mail2026"
    same = mailer("dkim", "check", "--record", published)
    assert "publishes the rsa key mailer signs with" in same.stdout

    other = dkim.Key("x", DOMAIN, dkim.generate("rsa")).public_record
    wrong = mailer("dkim", "check", "--record", other, check=False)
    assert wrong.returncode == 1 and "publishes another key" in wrong.stdout
    assert published.split("(")[1][:40] in wrong.stdout.replace("\n", ""), "the record to use"


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[int, dict[str, str]]]:
    """A DNS server on a loopback port answering TXT queries from a dict (name: text)."""
    zone: dict[str, str] = {}

    class Answer(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            name = query.question[0].name.to_text()
            if name in zone:
                chunks = [zone[name][i : i + 200] for i in range(0, len(zone[name]), 200)]
                text = " ".join(f'"{chunk}"' for chunk in chunks)
                reply.answer.append(dns.rrset.from_text(name, 300, "IN", "TXT", text))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Answer, local_addr=("127.0.0.1", 0))
    yield transport.get_extra_info("sockname")[1], zone
    transport.close()


async def test_check_asks_dns_for_the_published_key(
    on_sqlite: tuple[Mailer, dict[str, str]],
    dns_server: tuple[int, dict[str, str]],
    tmp_path: Path,
) -> None:
    mailer, env = on_sqlite
    port, zone = dns_server
    await asyncio.to_thread(mailer, "dkim", "keygen", "--selector", "mail2026")
    env["MAILER_SENDER__DKIM_SELECTOR"] = "mail2026"
    ask = ("dkim", "check", "--nameserver", f"127.0.0.1:{port}")
    missing = await asyncio.to_thread(mailer, *ask, check=False)
    assert missing.returncode == 1 and "no such name in DNS" in missing.stderr

    key = dkim.load("mail2026", DOMAIN, (tmp_path / "var/dkim/mail2026.pem").read_bytes())
    zone[f"mail2026._domainkey.{DOMAIN}."] = key.public_record
    found = await asyncio.to_thread(mailer, *ask)
    assert "publishes the rsa key mailer signs with" in found.stdout


def test_a_missing_or_unfit_key_stops_check_and_start_with_one_line(
    on_sqlite: tuple[Mailer, dict[str, str]], tmp_path: Path
) -> None:
    mailer, env = on_sqlite
    mailer("db", "upgrade")
    env["MAILER_SENDER__DKIM_SELECTOR"] = "gone"
    missing = mailer("check", check=False)
    assert missing.returncode == 1
    assert "dkim_selector: cannot read the key" in missing.stdout
    assert "gone.pem: No such file" in missing.stdout

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    env["MAILER_SENDER__DKIM_KEY_FILE"] = str(garbage)
    unfit = mailer("check", check=False)
    assert "dkim_key_file: the key in" in unfit.stdout
    assert "not a PEM private key" in unfit.stdout

    env["MAILER_SENDER__DKIM_SELECTOR"] = '["a", "b"]'
    several = mailer("check", check=False)
    assert "dkim_key_file names the key of one selector" in several.stdout
