"""Where a webhook may go: a URL whose host resolves to a private, loopback, link-local or
otherwise non-public address is refused, at registration and again before each POST, so
nobody can use mailer to reach the machines behind its firewall (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

from mailer.core.errors import InvalidInput, Problem

URL_MAX = 2000


def _refuse(message: str) -> NoReturn:
    raise InvalidInput([Problem("URL", message)])


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A URL taken apart the way the POST needs it."""

    scheme: str
    host: str
    port: int
    host_header: str  # the URL's host[:port], as written
    path: str  # with its query


def parse(url: str) -> Target:
    """InvalidInput names what is wrong with a URL nobody could POST to."""
    if len(url) > URL_MAX:
        _refuse(f"longer than {URL_MAX} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        _refuse(
            f"{url!r} has spaces, control or non-ASCII characters; give its ASCII form "
            "(an IDNA host name, a percent-encoded path)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        _refuse(f"{url!r} is not a URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _refuse(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        _refuse(f"{url!r} carries a user, password or #fragment; leave them out")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Target(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or default,
        host_header=parts.netloc,
        path=path,
    )


def refusal(address: str) -> str | None:
    """Why a webhook may not go to this IP address, or None for a public one."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global or ip.is_multicast:
        return "not a public address"
    return None


def checked(host: str, found: list[str], allow_private: bool) -> list[str]:
    """The addresses a host resolved to, all of them public (or any, when allowed)."""
    if not found:
        _refuse(f"{host} resolves to no address")
    for address in found if not allow_private else ():
        why = refusal(address)
        if why is not None:
            _refuse(
                f"{host} resolves to {address}, {why}; "
                "set [webhooks] allow_private = true to allow it"
            )
    return found


def _addresses(infos: list[tuple[object, object, object, object, tuple[object, ...]]]) -> list[str]:
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(target: Target, allow_private: bool) -> list[str]:
    """At registration: every address the host has now must be allowed."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        _refuse(f"{target.host} does not resolve: {exc}")
    return checked(target.host, _addresses(infos), allow_private)  # type: ignore[arg-type]


async def resolve_async(target: Target, allow_private: bool) -> list[str]:
    """Before each POST, since DNS may have changed since registration; the POST then
    connects to one of these very addresses, never to a name resolved again."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        _refuse(f"{target.host} does not resolve: {exc}")
    return checked(target.host, _addresses(infos), allow_private)  # type: ignore[arg-type]
