"""Where the server may send a notification or forward a message.

A Subscription's ``channel.endpoint`` and an exchange system's Endpoint address are URLs that clients
choose; the server then makes requests to them. So that it cannot be turned against the network it
runs in (server-side request forgery), an endpoint must be ``http``/``https`` (``ws``/``wss`` for a
websocket channel's informational endpoint), carry no credentials in the URL, and resolve only to
public addresses: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (including the
cloud metadata address 169.254.169.254), shared (100.64/10), multicast and reserved ranges are refused
unless ``FHIR_EXCHANGE_ALLOW_PRIVATE_ENDPOINTS=true`` (tests, or a deployment whose EMRs are reached over
a VPN). The check runs when a Subscription is written (a 422) and again before every delivery, since
what a name resolves to may change; redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

HTTP_SCHEMES = frozenset({"http", "https"})
WS_SCHEMES = frozenset({"ws", "wss"})
_RESOLVE_TIMEOUT = 5.0


class EndpointRefused(ValueError):
    """The endpoint may not be used; the message says why (it is shown to the subscriber)."""


def _host(url: str, schemes: frozenset[str]) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointRefused(f"The endpoint {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise EndpointRefused(f"The endpoint {url!r} must be a {' or '.join(sorted(schemes))} URL")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("The endpoint must not carry credentials in its URL: send them as a channel header")
    if not parts.hostname:
        raise EndpointRefused(f"The endpoint {url!r} names no host")
    return parts.hostname, port or (443 if scheme in ("https", "wss") else 80)


def public(address: str) -> bool:
    """Whether an IP address is one the server may call without the private-endpoints setting."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                 or ip.is_private or ip.is_unspecified)


def check_syntax(url: str, schemes: frozenset[str] = HTTP_SCHEMES) -> None:
    """The checks that need no name resolution (scheme, host, no credentials)."""
    _host(url, schemes)


async def check_endpoint(url: str, *, allow_private: bool, schemes: frozenset[str] = HTTP_SCHEMES) -> None:
    """Raise :class:`EndpointRefused` unless the server may send to ``url``."""
    host, port = _host(url, schemes)
    if allow_private:
        return
    try:
        addresses = [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise EndpointRefused(f"The endpoint's host {host} cannot be resolved ({exc})") from None
        addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise EndpointRefused(f"The endpoint's host {host} cannot be resolved")
    for address in addresses:
        if not public(address):
            raise EndpointRefused(f"The endpoint {url} resolves to {address}, a loopback, private or otherwise "
                                  "non-public address: refused (FHIR_EXCHANGE_ALLOW_PRIVATE_ENDPOINTS=true allows it)")
