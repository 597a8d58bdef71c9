"""A webhook receiver for tests: a real HTTP/1.1 server on a loopback port, in this event
loop, that keeps every request and answers with the status codes it is told to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Receiver:
    answers: list[int] = field(default_factory=list)  # then 200 for ever
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mailer?from=test"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").strip().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append(Received(request_line.split()[1], headers, body))
        status = self.answers.pop(0) if self.answers else 200
        writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\n\r\nok".encode())
        await writer.drain()
        writer.close()


async def start(receiver: Receiver) -> asyncio.Server:
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    return server
