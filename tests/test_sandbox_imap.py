"""The sandbox IMAP server, read through the same Mailbox client the inbox watcher uses."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator

import aioimaplib
import pytest

from mailer.inbound.mailbox import Fetched, Mailbox, MailboxUnavailable
from mailer.sandbox.imap_server import CLOSE_GRACE, SandboxImap

IDLE_READER = "IMAPConnection.read_idle_done"
USER, PASSWORD = "support@sandbox.test", "sandbox-secret"
MESSAGE = (
    b"From: Ada <ada@example.com>\r\n"
    b"To: support@sandbox.test\r\n"
    b"Subject: Where is my order?\r\n"
    b"Message-ID: <order-1@example.com>\r\n"
    b"\r\n"
    b"Hello, it has not arrived.\r\n"
)


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxImap]:
    server = await SandboxImap.start(0, username=USER, password=PASSWORD)
    yield server
    await server.close()


def mailbox_for(sandbox: SandboxImap, password: str = PASSWORD, name: str = "INBOX") -> Mailbox:
    return Mailbox(
        host="127.0.0.1",
        port=sandbox.port,
        security="none",
        username=USER,
        password=password,
        mailbox=name,
        timeout=5,
    )


@pytest.fixture
async def mailbox(sandbox: SandboxImap) -> AsyncIterator[Mailbox]:
    client = mailbox_for(sandbox)
    yield client
    await client.close()


async def fetch_all(mailbox: Mailbox, after: int = 0) -> list[Fetched]:
    return [f async for chunk in mailbox.fetch_after(after) for f in chunk]


async def test_port_zero_picks_a_free_loopback_port(sandbox: SandboxImap) -> None:
    assert sandbox.port > 0
    _, writer = await asyncio.open_connection("127.0.0.1", sandbox.port)
    writer.close()
    await writer.wait_closed()


async def test_open_logs_in_and_returns_a_uidvalidity(mailbox: Mailbox) -> None:
    uidvalidity = await mailbox.open()

    assert uidvalidity > 0
    assert mailbox.uidvalidity == uidvalidity
    assert mailbox.supports_idle


async def test_delivered_message_is_fetched_byte_for_byte(
    sandbox: SandboxImap, mailbox: Mailbox
) -> None:
    await mailbox.open()
    await sandbox.deliver(MESSAGE)

    [fetched] = await fetch_all(mailbox)

    assert fetched.raw == MESSAGE
    assert await fetch_all(mailbox, after=fetched.uid) == []


async def test_bare_newlines_come_back_as_they_were_delivered(
    sandbox: SandboxImap, mailbox: Mailbox
) -> None:
    """No CRLF conversion: what deliver() is given is what the watcher parses."""
    unix_message = MESSAGE.replace(b"\r\n", b"\n")
    await mailbox.open()
    await sandbox.deliver(unix_message)

    [fetched] = await fetch_all(mailbox)

    assert fetched.raw == unix_message


async def test_messages_get_increasing_uids(sandbox: SandboxImap, mailbox: Mailbox) -> None:
    await mailbox.open()
    await sandbox.deliver(MESSAGE)
    await sandbox.deliver(MESSAGE.replace(b"order-1", b"order-2"))

    first, second = await fetch_all(mailbox)

    assert first.uid < second.uid
    assert b"order-2" in second.raw


async def test_delivery_to_a_missing_mailbox_creates_it(sandbox: SandboxImap) -> None:
    await sandbox.deliver(MESSAGE, mailbox="Support")
    client = mailbox_for(sandbox, name="Support")
    try:
        await client.open()
        [fetched] = await fetch_all(client)
    finally:
        await client.close()

    assert fetched.raw == MESSAGE


async def test_mark_processed_keeps_seen_but_not_the_keyword(
    sandbox: SandboxImap, mailbox: Mailbox
) -> None:
    """pymap's dict backend stores system flags only: the keyword lasts for its session."""
    await mailbox.open()
    await sandbox.deliver(MESSAGE)
    [fetched] = await fetch_all(mailbox)

    await mailbox.mark_processed([fetched.uid], "flag")

    assert await _flags(sandbox, fetched.uid) == {"\\Seen"}  # no PROCESSED_KEYWORD
    assert [f.uid for f in await fetch_all(mailbox)] == [fetched.uid]  # kept, never deleted


async def test_wait_for_new_wakes_when_mail_is_delivered_during_idle(
    sandbox: SandboxImap, mailbox: Mailbox
) -> None:
    await mailbox.open()
    waiting = asyncio.create_task(mailbox.wait_for_new(timeout=10))
    await _until_idling()

    await sandbox.deliver(MESSAGE)

    assert await asyncio.wait_for(waiting, timeout=5) is True
    [fetched] = await fetch_all(mailbox)
    assert fetched.raw == MESSAGE


async def test_wait_for_new_is_false_when_nothing_arrives(mailbox: Mailbox) -> None:
    await mailbox.open()

    assert await mailbox.wait_for_new(timeout=0.2) is False


async def test_wrong_password_is_refused(sandbox: SandboxImap) -> None:
    client = mailbox_for(sandbox, password="not-the-password")

    with pytest.raises(MailboxUnavailable, match="LOGIN failed"):
        await client.open()


async def test_close_hangs_up_on_idling_clients_and_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()
    sandbox = await SandboxImap.start(0, username=USER, password=PASSWORD)
    client = mailbox_for(sandbox)
    try:
        await client.open()
        waiting = asyncio.create_task(client.wait_for_new(timeout=30))
        await _until_idling()

        # well within the grace: the handlers end on their own, not by the cancel fallback
        await asyncio.wait_for(sandbox.close(), timeout=CLOSE_GRACE / 2)

        with pytest.raises(MailboxUnavailable, match="closed the connection"):
            await asyncio.wait_for(waiting, timeout=5)
    finally:
        await client.close()
        await sandbox.close()
    gc.collect()  # a leaked socket or transport would warn (an error here) when collected
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", sandbox.port)


async def _until_idling() -> None:
    """Until a client's IDLE has reached the server (pymap then reads for its DONE in a task of
    its own): mail delivered earlier would be found by wait_for_new's first check instead,
    leaving the IDLE path untested."""

    def idling() -> bool:
        coros = (task.get_coro() for task in asyncio.all_tasks())
        return any(getattr(coro, "__qualname__", "") == IDLE_READER for coro in coros)

    async def poll() -> None:
        while not idling():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout=5)


async def _flags(sandbox: SandboxImap, uid: int) -> set[str]:
    """The message's flags as a second client sees them (Mailbox does not expose flags)."""
    client = aioimaplib.IMAP4("127.0.0.1", sandbox.port, timeout=5)
    await client.wait_hello_from_server()
    await client.login(USER, PASSWORD)
    await client.select("INBOX")
    response = await client.uid("fetch", str(uid), "(FLAGS)")
    await client.logout()
    found = re.search(rb"FLAGS \(([^)]*)\)", b" ".join(bytes(line) for line in response.lines))
    assert found is not None, response.lines
    return set(found[1].decode().split())


async def test_a_server_that_forgets_keywords_is_not_swept(
    sandbox: SandboxImap, mailbox: Mailbox
) -> None:
    """Otherwise every reconnect would mark (with move:, copy) the whole history again."""
    await mailbox.open()
    await sandbox.deliver(MESSAGE)
    [fetched] = await fetch_all(mailbox)

    assert await mailbox.unmarked_up_to(fetched.uid) == []
