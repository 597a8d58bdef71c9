"""The sandbox's IMAP side: a local mailbox the inbox watcher can read, with no mail account.

Mail the sandbox accepts for the support address is put here with :meth:`SandboxImap.deliver`,
and the daemon's watcher reads it through :class:`mailer.inbound.mailbox.Mailbox` exactly as
it would read a real server, so a newcomer sees the whole loop (inquiry in, acknowledgement out).

It is pymap's in-memory ``dict`` backend served in-process on loopback. Nothing survives a
restart: messages, flags and folders are lost and UIDVALIDITY changes, so the watcher starts
over, which is what a sandbox should do. The backend keeps only system flags: the watcher's
``$MailerProcessed`` keyword lasts for the session that set it while ``\\Seen`` stays, which
is harmless since the watcher keeps its place by UID. Passwords are compared in clear text
and an unknown user is refused at once: pymap's defaults (pbkdf2 at 500,000 rounds, a 0.3 s
sleep) protect a real server and only slow every sandbox login.
"""

from __future__ import annotations

import asyncio
import logging
from argparse import Namespace
from datetime import UTC, datetime
from uuid import uuid4

from proxyprotocol.sock import SocketInfo
from proxyprotocol.version import ProxyProtocolVersion
from pymap.backend.dict import Config, Identity, Login
from pymap.concurrent import Subsystem
from pymap.exceptions import MailboxNotFound
from pymap.imap import IMAPServer
from pymap.parsing.message import AppendMessage
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import Cleartext

log = logging.getLogger("mailer.sandbox.smtp_server")

HOST = "127.0.0.1"
SERVER_NAME = "sandbox.mailer.local"  # the name the sandbox SMTP server gives too
CLOSE_GRACE = 2.0  # seconds clients' handlers get to end after their socket is closed


class _SandboxConfig(Config):
    """pymap's dict-backend settings, greeting with a fixed name.

    pymap's own greeting reads ``$FQDN`` or calls ``socket.getfqdn()``, which can wait on
    DNS; a fixed name avoids both the lookup and changing the process environment.
    """

    @property
    def greeting(self) -> bytes:
        return b"Server ready " + SERVER_NAME.encode("ascii")


class SandboxImap:
    """One IMAP user with an in-memory mailbox, served on loopback until :meth:`close`."""

    port: int  # the port listened on, known once start() has bound it
    _server: asyncio.Server

    def __init__(self, login: Login, identity: Identity) -> None:
        """Use :meth:`start`: the server needs a running loop and the user must exist first."""
        self._imap = IMAPServer(login, login.config)
        self._identity = identity
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @classmethod
    async def start(cls, port: int, *, username: str, password: str) -> SandboxImap:
        """Listen on 127.0.0.1:``port`` (0 picks a free one, read back from ``.port``)."""
        config = _config(port, username, password)
        login = Login(config)
        hashed = await Passwords(config).hash_password(config.demo_password)
        await login.demo_user_identity.set(UserMetadata(config, username, password=hashed))
        sandbox = cls(login, login.demo_user_identity)
        sandbox._server = await asyncio.start_server(sandbox._serve, HOST, port)
        sandbox.port = sandbox._server.sockets[0].getsockname()[1]
        return sandbox

    async def deliver(self, raw: bytes, mailbox: str = "INBOX") -> None:
        """Store ``raw`` as newly arrived mail; clients in IDLE on ``mailbox`` see EXISTS.

        A missing mailbox is created, as a delivery agent with autocreate would.
        """
        message = AppendMessage(raw, datetime.now(UTC))
        async with self._identity.new_session() as session:
            try:
                await session.append_messages(mailbox, [message])
            except MailboxNotFound:
                await session.create_mailbox(mailbox)
                await session.append_messages(mailbox, [message])

    async def close(self) -> None:
        """Stop listening and hang up on every client, then wait until their handlers end.

        asyncio's ``Server.close()`` leaves accepted connections open (before 3.13), so each
        one is closed here; a handler that does not notice in time is cancelled.
        """
        self._server.close()
        for writer in self._connections.values():
            writer.close()
        if self._connections:
            _, late = await asyncio.wait(set(self._connections), timeout=CLOSE_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client, tracked so :meth:`close` can end it; errors are logged, never raised,
        because nothing awaits this task to collect them."""
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each connection callback in its own task
        self._connections[task] = writer
        try:
            await self._imap(reader, writer, SocketInfo.get(writer, None, unique_id=uuid4().bytes))
        except Exception:
            log.exception("sandbox IMAP connection failed")
        finally:
            del self._connections[task]
            writer.close()


def _config(port: int, username: str, password: str) -> _SandboxConfig:
    """Settings for a loopback-only sandbox: no TLS, no PROXY header, no DNSBL, no threads."""
    return _SandboxConfig(
        Namespace(),
        host=HOST,
        port=port,
        demo_data=False,
        demo_user=username,
        demo_password=password,
        tls_enabled=False,
        reject_dnsbl=False,
        proxy_protocol=ProxyProtocolVersion.get(),
        hash_context=Cleartext(),
        cpu_subsystem=Subsystem.for_asyncio(),
        invalid_user_sleep=0,
    )
