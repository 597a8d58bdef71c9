"""Who is asking: whoever opened the connection, or, when that is a reverse proxy named in
``[web] trusted_proxies``, the client the proxy says it forwarded.

Sign-in limits count per client and /metrics without a token is for this machine only, so
both need the real client, and need to know that a request came through a proxy: a proxy
on this machine that sends no X-Forwarded-For must not make every visitor look local.
uvicorn's own proxy_headers cannot say that (it leaves the proxy's address in place), so
the app is served with them off and this middleware decides instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

Networks = Sequence[IPv4Network | IPv6Network]
PROXIED = "mailer.proxied"  # the scope key: True when a trusted proxy forwarded the request


def is_proxy(host: str, proxies: Networks) -> bool:
    """Whether an address is one of the trusted proxies (an IPv4 peer on an IPv6 socket too)."""
    try:
        address = ip_address(host)
    except ValueError:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in proxies)


def client_of(peer: str, forwarded_for: Sequence[str], proxies: Networks) -> tuple[str, bool]:
    """(client address, came through a trusted proxy). The client is the right-most hop of
    X-Forwarded-For that is no trusted proxy: whatever a client wrote to the left of it
    itself is not believed. A proxy that forwarded nothing leaves its own address."""
    if not is_proxy(peer, proxies):
        return peer, False
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_proxy(hop, proxies):
            return hop, True
    return (hops[0] if hops else peer), True


def proxied(request: Request) -> bool:
    return bool(request.scope.get(PROXIED, False))


class ClientAddress:
    """Puts the real client in the scope, where ``request.client`` reads it."""

    def __init__(self, app: ASGIApp, proxies: Networks) -> None:
        self.app, self.proxies = app, proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] in ("http", "websocket") and peer and self.proxies:
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
            host, through_proxy = client_of(peer[0], values, self.proxies)
            if through_proxy:
                scope["client"] = (host, 0)
            scope[PROXIED] = through_proxy
        await self.app(scope, receive, send)
