"""The IMAP edge against a real Dovecot: fetching, marking, waiting, and surviving drops."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest

from mailer.inbound.mailbox import (
    PROCESSED_KEYWORD,
    Fetched,
    Mailbox,
    MailboxUnavailable,
    uid_ranges,
)
from tests.dovecot import DovecotServer

EVENT_SECONDS = 10.0  # bound on waiting for something the server will do, never a pause


@pytest.fixture(scope="session")
def dovecot_without_idle() -> Iterator[DovecotServer]:
    server = DovecotServer.start(idle=False)
    try:
        yield server
    finally:
        server.stop()


def connect(
    server: DovecotServer, folder: str = "INBOX", port: int = 0, **options: object
) -> Mailbox:
    settings: dict[str, object] = {
        "security": "none",
        "username": server.user,
        "password": server.password,
        "mailbox": folder,
        "timeout": 5.0,
    }
    settings.update(options)
    return Mailbox(server.host, port or server.port, **settings)  # type: ignore[arg-type]


@pytest.fixture
async def mailbox(dovecot: DovecotServer, folder: str) -> AsyncIterator[Mailbox]:
    box = connect(dovecot, folder)
    await box.open()
    try:
        yield box
    finally:
        await box.close()


def message(n: int) -> bytes:
    return (
        f"From: customer{n}@example.org\r\nTo: support@example.com\r\n"
        f"Subject: question {n}\r\nMessage-ID: <q{n}@example.org>\r\n\r\nHello {n}\r\n"
    ).encode()


async def append(server: DovecotServer, folder: str, *numbers: int) -> None:
    for n in numbers:
        await asyncio.to_thread(server.append, message(n), folder)


async def fetch_all(box: Mailbox, last_uid: int, batch: int = 100) -> list[Fetched]:
    return [f async for chunk in box.fetch_after(last_uid, batch=batch) for f in chunk]


async def test_fetch_after_returns_messages_in_uid_order_and_only_after_last_uid(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, *range(1, 8))

    everything = await fetch_all(mailbox, 0, batch=3)
    later = await fetch_all(mailbox, 5)

    assert [f.uid for f in everything] == [1, 2, 3, 4, 5, 6, 7]
    assert everything[0].raw == message(1)
    assert [(f.uid, f.raw) for f in later] == [(6, message(6)), (7, message(7))]
    assert await fetch_all(mailbox, 7) == []


async def test_fetching_does_not_mark_messages_seen(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, 1)

    await fetch_all(mailbox, 0)

    assert "\\Seen" not in dovecot.flags(folder)[1]


async def test_mark_processed_flag_sets_seen_and_the_keyword(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, 1, 2)
    await fetch_all(mailbox, 0)

    await mailbox.mark_processed([1], "flag")

    flags = dovecot.flags(folder)
    assert {"\\Seen", PROCESSED_KEYWORD} <= flags[1]
    assert PROCESSED_KEYWORD not in flags[2]


async def test_mark_processed_move_copies_into_a_created_folder_and_keeps_the_original(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, 1, 2)
    await fetch_all(mailbox, 0)
    target = f"{folder}-Processed"

    await mailbox.mark_processed([1], f"move:{target}")
    await mailbox.mark_processed([2], f"move:{target}")

    assert target in dovecot.list_mailboxes()
    assert len(dovecot.flags(target)) == 2
    originals = dovecot.flags(folder)
    assert sorted(originals) == [1, 2]
    assert all(
        PROCESSED_KEYWORD in flags and "\\Deleted" not in flags for flags in originals.values()
    )


async def test_mark_processed_rejects_an_unknown_mode(mailbox: Mailbox) -> None:
    with pytest.raises(ValueError, match="move:FOLDER"):
        await mailbox.mark_processed([1], "delete")


async def test_wait_for_new_returns_true_when_mail_arrives_while_idling(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    waiting = asyncio.create_task(mailbox.wait_for_new(EVENT_SECONDS))
    await asyncio.to_thread(dovecot.wait_until_idling, EVENT_SECONDS)

    await append(dovecot, folder, 1)

    assert await asyncio.wait_for(waiting, EVENT_SECONDS) is True
    assert [f.uid for f in await fetch_all(mailbox, 0)] == [1]


async def test_wait_for_new_returns_false_on_timeout_with_nothing_new(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, 1)
    await fetch_all(mailbox, 0)

    assert await mailbox.wait_for_new(0.3) is False


async def test_wait_for_new_reports_mail_that_came_before_it_was_called(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await fetch_all(mailbox, 0)
    await append(dovecot, folder, 1)

    assert await mailbox.wait_for_new(EVENT_SECONDS) is True


async def test_wait_for_new_polls_when_the_server_lacks_idle(
    dovecot_without_idle: DovecotServer,
) -> None:
    dovecot_without_idle.create("Polled")
    box = connect(dovecot_without_idle, "Polled")
    await box.open()
    try:
        assert not box.supports_idle
        assert await box.wait_for_new(0.2) is False
        waiting = asyncio.create_task(box.wait_for_new(1.0))
        await append(dovecot_without_idle, "Polled", 1)
        assert await asyncio.wait_for(waiting, EVENT_SECONDS) is True
    finally:
        await box.close()


async def test_uidvalidity_is_returned_and_stable_across_reconnects(
    dovecot: DovecotServer, folder: str
) -> None:
    box = connect(dovecot, folder)
    try:
        first = await box.open()
        await box.close()
        second = await box.open()
    finally:
        await box.close()

    assert first > 0
    assert first == second == box.uidvalidity


async def test_a_wrong_password_raises_mailbox_unavailable_with_a_clear_message(
    dovecot: DovecotServer,
) -> None:
    box = connect(dovecot, password="wrong")

    with pytest.raises(MailboxUnavailable, match=r"LOGIN failed: NO .*Authentication failed"):
        await box.open()
    await box.close()


async def test_a_refused_connection_raises_mailbox_unavailable(dovecot: DovecotServer) -> None:
    box = connect(dovecot, port=1)

    with pytest.raises(MailboxUnavailable, match=r"127\.0\.0\.1:1\b"):
        await box.open()
    assert isinstance(MailboxUnavailable("x"), ConnectionError)


async def test_a_connection_killed_mid_idle_raises_and_a_new_open_works(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    waiting = asyncio.create_task(mailbox.wait_for_new(60))
    await asyncio.to_thread(dovecot.wait_until_idling, EVENT_SECONDS)

    dovecot.kick()

    with pytest.raises(MailboxUnavailable, match="closed the connection"):
        await asyncio.wait_for(waiting, EVENT_SECONDS)
    await mailbox.open()
    await append(dovecot, folder, 1)
    assert [f.uid for f in await fetch_all(mailbox, 0)] == [1]


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_tls_and_starttls_connect_with_a_trusted_certificate(
    dovecot: DovecotServer, folder: str, security: str
) -> None:
    port = dovecot.tls_port if security == "tls" else dovecot.port
    context = ssl.create_default_context(cafile=str(dovecot.cafile))
    box = connect(dovecot, folder, port, security=security, ssl_context=context)
    await append(dovecot, folder, 1)
    try:
        await box.open()
        assert [f.raw for f in await fetch_all(box, 0)] == [message(1)]
    finally:
        await box.close()


async def test_an_untrusted_certificate_is_refused(dovecot: DovecotServer) -> None:
    box = connect(dovecot, security="starttls")

    with pytest.raises(MailboxUnavailable, match="TLS handshake failed"):
        await box.open()


@pytest.mark.parametrize(
    ("uids", "expected"),
    [([7], "7"), ([3, 4, 5, 9], "3:5,9"), ([9, 3, 4, 4], "3:4,9"), ([1, 3, 5], "1,3,5")],
)
def test_uid_ranges_collapse_consecutive_runs(uids: list[int], expected: str) -> None:
    assert uid_ranges(uids) == expected


async def test_mark_processed_flags_a_whole_list_at_once(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, 1, 2, 3, 4)
    await fetch_all(mailbox, 0)

    await mailbox.mark_processed([1, 2, 4], "flag")

    flags = dovecot.flags(folder)
    assert [uid for uid in sorted(flags) if PROCESSED_KEYWORD in flags[uid]] == [1, 2, 4]


async def test_unmarked_up_to_finds_handled_mail_left_without_the_keyword(
    dovecot: DovecotServer, folder: str, mailbox: Mailbox
) -> None:
    await append(dovecot, folder, 1, 2, 3)
    await fetch_all(mailbox, 0)
    await mailbox.mark_processed([1], "flag")

    assert await mailbox.unmarked_up_to(2) == [2]
