"""A real SMTP server (aiosmtpd) on a loopback port for tests, with faults injected into its
handler: a reply code on a chosen command, no reply at all, or a dropped connection in the
middle of DATA; PIPELINING advertised when asked; implicit TLS with a certificate made for
the test; and a relay to put between a client and it that records what the client wrote
in each write, can hold the server's replies back, and can stand for a slow uplink."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from tests.tls import self_signed_certificate


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Sink:
    """Faults are consumed in order: ("MAIL" or "RCPT", "451 4.7.1 try later"), ("DATA",
    "554 5.7.1 refused") as the reply to the content, ("DATA", "drop"), or ("MAIL" or
    "RSET", "hang"): no reply until the client goes."""

    received: list[Received] = field(default_factory=list)
    faults: list[tuple[str, str]] = field(default_factory=list)
    pipelining: bool = False  # advertise PIPELINING (RFC 2920); aiosmtpd reads commands in turn

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def _fault(self, command: str) -> str | None:
        if self.faults and self.faults[0][0] == command:
            fault = self.faults.pop(0)[1]
            if fault == "hang":
                await asyncio.Event().wait()  # aiosmtpd cancels it when the client goes
            return fault
        return None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str | object:
        return await self._fault("MAIL") or MISSING  # MISSING: aiosmtpd takes the sender

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self._fault("RSET") or "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = await self._fault("RCPT")
        if fault:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = await self._fault("DATA")
        if fault == "drop":
            server.transport.close()  # the connection dies before the server answers
            return "421 closing"
        if fault:
            return fault
        self.received.append(
            Received(
                envelope.mail_from or "", list(envelope.rcpt_tos), envelope.original_content or b""
            )
        )
        return "250 2.0.0 queued as test"


async def start_sink(
    sink: Sink, port: int = 0, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.Server, int]:
    """With ``tls``, the server speaks TLS from the start (implicit TLS, port 465's way)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="sink.test"), "127.0.0.1", port, ssl=tls
    )
    return server, server.sockets[0].getsockname()[1]


@asynccontextmanager
async def listening(sink: Sink, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """The sink on a free loopback port for the ``async with`` block; yields the port."""
    server, port = await start_sink(sink, tls=tls)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Relay:
    """Bytes passed on both ways between a client and a server; what the client wrote is
    kept a read at a time (on loopback, one read a write). ``hold_until``: the server's
    replies after the client's MAIL are held back until this has come, then passed on in
    one write. ``clients``: each connection's writer to its client, to speak out of turn.
    ``pace``: the octets a second passed on from the client, as over a slow uplink (a
    fiftieth of it every 20 ms), and none after ``stall_after`` octets (a peer that stopped
    reading); the relay then takes in little more than it passes (small buffers)."""

    port: int
    hold_until: bytes = b""
    pace: int = 0
    stall_after: int | None = None
    writes: list[bytes] = field(default_factory=list)
    clients: list[asyncio.StreamWriter] = field(default_factory=list)
    _holding: bool = False
    _ended: asyncio.Event = field(default_factory=asyncio.Event)
    _serving: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def tick(self) -> int:
        """What a paced relay reads at a time, and buffers at most (twice, in the kernel and
        in its reader)."""
        return self.pace // 50

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await asyncio.gather(
                self._pass(reader, server_writer, from_client=True),
                self._pass(server_reader, writer, from_client=False),
            )
        finally:
            writer.close()
            server_writer.close()

    async def _pass(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        held, passed = b"", 0
        while data := await reader.read(self.tick if self.pace and from_client else 65536):
            if from_client:
                self.writes.append(data)
                self._holding = self._holding or bool(self.hold_until and data.startswith(b"MAIL"))
                writer.write(data)
                passed += len(data)
                if self.pace:
                    await asyncio.sleep(0.02)
                if self.stall_after is not None and passed >= self.stall_after:
                    await self._ended.wait()  # read no more, until the test ends
                    break
                continue
            held += data
            if self._holding and self.hold_until not in held:
                continue
            writer.write(held)
            held, self._holding = b"", False
        writer.close()


@asynccontextmanager
async def relayed(relay: Relay) -> AsyncIterator[int]:
    """The relay on a free loopback port for the ``async with`` block; yields the port."""
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0, limit=relay.tick or 2**16)
    if relay.pace:  # connections accepted from now on take it from the listening socket
        server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, relay.tick)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        relay._ended.set()
        server.close()
        if relay._serving:  # each connection closed both ways before the loop may end
            await asyncio.wait(relay._serving, timeout=5)


def loopback_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a new self-signed certificate for 127.0.0.1, and the file
    holding that certificate, for the client to trust (SSL_CERT_FILE)."""
    cert, key = self_signed_certificate(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert
