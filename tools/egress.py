"""Where outbound tool calls may go: public addresses, plus whatever the allowlist names.

Names are resolved before connecting and every address they resolve to is checked; the
connection is then made to the checked address, so a second lookup cannot swap it for another.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from tools.http_client import AiohttpTransport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


class AllowlistInvalid(ValueError):
    """An allowlist entry is neither an IP address, a network in CIDR form, nor a host name."""


class EgressRefused(httpx.TransportError):
    """The destination is not a public address and is not on the allowlist."""


class EgressPolicy:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in (e.strip() for e in allow):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                if "/" in entry or not _HOST_NAME.fullmatch(entry) or len(entry) > 253:
                    raise AllowlistInvalid(
                        f"{entry!r} is neither a host name, an IP address nor a network "
                        "such as 10.0.0.0/8") from exc
                self.hosts.add(entry.lower().rstrip("."))

    @classmethod
    def parse(cls, allowlist: str) -> EgressPolicy:
        """From EGRESS_ALLOWLIST: comma-separated host names, IP addresses or CIDRs."""
        return cls(allowlist.split(","))

    def refuses(self, host: str, address: IPAddress) -> str | None:
        """Why `host` at `address` may not be reached, or None when it may."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        if any(address in network for network in self.networks):
            return None
        if address.is_global and not address.is_multicast:
            return None
        return f"{host} resolves to {address}, {_kind(address)}"


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_private:
        return "a private address"
    return "not a public address"


class EgressDenied(Exception):
    """The destination may not be reached; raised by `checked_address` for any HTTP library."""

    def __init__(self, host: str, reason: str) -> None:
        self.host, self.reason = host, reason
        super().__init__(f"refused to call {host}: {reason}; tools may call public addresses "
                         "only, unless EGRESS_ALLOWLIST names the host, address or network")


async def checked_address(policy: EgressPolicy, host: str, port: int | None) -> IPAddress:
    """The address to connect to, after checking every address `host` resolves to.

    Raises `EgressDenied`, or `OSError` when the name does not resolve.
    """
    addresses = await _resolve(host, port)
    for address in addresses:
        reason = policy.refuses(host, address)
        if reason is not None:
            raise EgressDenied(host, reason)
    return addresses[0]


async def pin_to_checked_address(
    policy: EgressPolicy, request: Any, refused: Callable[..., Exception],
    unresolvable: Callable[..., Exception],
) -> None:
    """Point `request` at the address its host was checked at, keeping the name for Host and
    TLS, so a DNS answer that changes after the check cannot redirect it. `request` is an httpx
    (or httpx2, the MCP library's copy, with the same API) request; the errors raised are made
    with `request=` like that library's own."""
    host = request.url.host
    try:
        address = await checked_address(policy, host, request.url.port)
    except EgressDenied as exc:
        raise refused(str(exc), request=request) from exc
    except OSError as exc:
        raise unresolvable(f"cannot resolve {host}: {exc}", request=request) from exc
    request.headers["Host"] = request.headers.get("Host", request.url.netloc.decode())
    if request.url.scheme == "https":
        request.extensions["sni_hostname"] = host
    request.url = request.url.copy_with(host=str(address))


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that refuses non-public destinations unless they are allowlisted."""

    def __init__(self, policy: EgressPolicy, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or AiohttpTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await pin_to_checked_address(self.policy, request, EgressRefused, httpx.ConnectError)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _resolve(host: str, port: int | None) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen
