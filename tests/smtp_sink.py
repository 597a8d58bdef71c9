"""A real SMTP server (aiosmtpd) on a loopback port for tests, with faults injected into its
handler: a reply code on a chosen command, or a dropped connection in the middle of DATA;
PIPELINING advertised when asked; and a relay to put between a client and it that records
what the client wrote in each write and can hold the server's replies back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, Envelope, Session


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
    """Faults are consumed in order: ("RCPT", "451 4.7.1 try later") or ("DATA", "drop")."""

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

    def _fault(self, command: str) -> str | None:
        if self.faults and self.faults[0][0] == command:
            return self.faults.pop(0)[1]
        return None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        fault = self._fault("RCPT")
        if fault:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self._fault("DATA")
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


async def start_sink(sink: Sink, port: int = 0) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, hostname="sink.test"), "127.0.0.1", port)
    return server, server.sockets[0].getsockname()[1]


@asynccontextmanager
async def listening(sink: Sink) -> AsyncIterator[int]:
    """The sink on a free loopback port for the ``async with`` block; yields the port."""
    server, port = await start_sink(sink)
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
    one write. ``clients``: each connection's writer to its client, to speak out of turn."""

    port: int
    hold_until: bytes = b""
    writes: list[bytes] = field(default_factory=list)
    clients: list[asyncio.StreamWriter] = field(default_factory=list)
    _holding: bool = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.append(writer)
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        await asyncio.gather(
            self._pass(reader, server_writer, from_client=True),
            self._pass(server_reader, writer, from_client=False),
        )

    async def _pass(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool
    ) -> None:
        held = b""
        while data := await reader.read(65536):
            if from_client:
                self.writes.append(data)
                self._holding = self._holding or bool(self.hold_until and data.startswith(b"MAIL"))
                writer.write(data)
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
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
