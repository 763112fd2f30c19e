"""Where Argus may connect: MCP server URLs are checked so Argus is never an SSRF tool.

A URL is refused when any address its host resolves to is one Argus never connects to
(link-local and cloud metadata, unspecified, multicast, broadcast, reserved), or a private
or loopback one while ``ARGUS_ALLOW_PRIVATE_NETWORKS`` is off. IPv6 forms that embed an
IPv4 address (mapped, compatible, NAT64, 6to4) are judged by the IPv4 address they embed.
"""

import ipaddress
import re
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import idna
from django.conf import settings

from argus.errors import ServiceError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HTTP_SCHEMES = frozenset({"http", "https"})
WEBSOCKET_SCHEMES = frozenset({"ws", "wss"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A DNS name (IDN letters allowed) or an IPv4 literal in any form the resolver reads.
HOST_NAME = re.compile(r"[\w.-]+")

NEVER = "never"
PRIVATE = "private"
# (network, kind, what the address is), first match wins: the exceptions come before the
# ranges that contain them.
RULES_V4 = [
    ("0.0.0.0/8", NEVER, "an unspecified address (0.0.0.0/8)"),
    ("169.254.0.0/16", NEVER, "a link-local address (cloud metadata range 169.254.0.0/16)"),
    ("100.100.100.200/32", NEVER, "a cloud metadata address (Alibaba Cloud)"),
    ("224.0.0.0/4", NEVER, "a multicast address"),
    ("255.255.255.255/32", NEVER, "the broadcast address"),
    ("240.0.0.0/4", NEVER, "a reserved address (240.0.0.0/4)"),
    ("192.0.0.0/24", NEVER, "a reserved address (IETF protocol assignments 192.0.0.0/24)"),
    ("192.0.2.0/24", NEVER, "a reserved address (documentation 192.0.2.0/24)"),
    ("198.51.100.0/24", NEVER, "a reserved address (documentation 198.51.100.0/24)"),
    ("203.0.113.0/24", NEVER, "a reserved address (documentation 203.0.113.0/24)"),
    ("127.0.0.0/8", PRIVATE, "a loopback address"),
    ("10.0.0.0/8", PRIVATE, "a private address"),
    ("172.16.0.0/12", PRIVATE, "a private address"),
    ("192.168.0.0/16", PRIVATE, "a private address"),
    ("100.64.0.0/10", PRIVATE, "a shared address (carrier-grade NAT 100.64.0.0/10)"),
    ("198.18.0.0/15", PRIVATE, "a private address (benchmarking 198.18.0.0/15)"),
]
RULES_V6 = [
    ("::/128", NEVER, "the unspecified address"),
    ("::1/128", PRIVATE, "a loopback address"),
    ("fd00:ec2::254/128", NEVER, "a cloud metadata address (AWS)"),
    ("fe80::/10", NEVER, "a link-local address (fe80::/10)"),
    ("ff00::/8", NEVER, "a multicast address"),
    ("fc00::/7", PRIVATE, "a private address (unique local fc00::/7)"),
    ("fec0::/10", PRIVATE, "a private address (site-local fec0::/10)"),
    ("64:ff9b:1::/48", PRIVATE, "a private address (local-use NAT64 64:ff9b:1::/48)"),
    ("2001::/23", NEVER, "a reserved address (IETF protocol assignments 2001::/23)"),
    ("2001:db8::/32", NEVER, "a reserved address (documentation 2001:db8::/32)"),
    ("3fff::/20", NEVER, "a reserved address (documentation 3fff::/20)"),
]
# Everything else outside global unicast is reserved.
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
RULES = [
    (ipaddress.ip_network(network), kind, description)
    for network, kind, description in RULES_V4 + RULES_V6
]
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
COMPATIBLE = ipaddress.IPv6Network("::/96")


class ForbiddenDestination(ServiceError):
    """A URL whose host is, or resolves to, an address Argus refuses to connect to."""

    code = "forbidden_destination"

    def __init__(self, message: str):
        super().__init__(message, field="url")


def check_url(
    url: str,
    *,
    schemes: set[str] | frozenset[str],
    allow_private: bool | None = None,
    resolve: Callable = socket.getaddrinfo,
) -> list[IPAddress]:
    """Check that Argus may connect to ``url`` and return the addresses its host resolves to.

    ``allow_private`` (default ``settings.ARGUS_ALLOW_PRIVATE_NETWORKS``) lets private and
    loopback addresses through; link-local, metadata, unspecified, multicast, broadcast and
    reserved ones are always refused. Every resolved address must pass.

    Raises ``ServiceError`` (field ``url``) for a malformed URL, a scheme outside
    ``schemes``, credentials in the URL or a host that does not resolve, and
    ``ForbiddenDestination`` for a refused address.
    """
    host, port = _host_and_port(url, schemes)
    return checked_addresses(host, port, url, allow_private=allow_private, resolve=resolve)


def checked_addresses(
    host: str,
    port: int,
    label: str,
    *,
    allow_private: bool | None = None,
    resolve: Callable = socket.getaddrinfo,
) -> list[IPAddress]:
    """Resolve ``host`` and check every address it has; returns them, in order.

    What connections use at connect time (``tools/mcp/destinations.py``), so the
    address checked is the address connected to. ``label`` names the destination in
    messages. Raises like :func:`check_url`.
    """
    if allow_private is None:
        allow_private = settings.ARGUS_ALLOW_PRIVATE_NETWORKS
    try:
        # HTTP clients encode names with IDNA 2008 (UTS 46); resolve what they will.
        ascii_host = host if host.isascii() else idna.encode(host, uts46=True).decode()
        found = resolve(ascii_host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, idna.IDNAError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ServiceError(
            f"cannot resolve host {host!r} of {label}: {reason}",
            field="url",
            code="unresolvable_host",
        ) from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ServiceError(
            f"cannot resolve host {host!r} of {label}: no addresses",
            field="url",
            code="unresolvable_host",
        )
    for address in addresses:
        _check_address(label, address, allow_private=allow_private)
    return addresses


def check_stdio_allowed() -> None:
    """Raise ``ServiceError`` (field ``transport``) when stdio servers are turned off."""
    if not settings.ARGUS_ALLOW_STDIO:
        raise ServiceError(
            "stdio servers run commands on the Argus host and are turned off on this "
            "installation (ARGUS_ALLOW_STDIO); register a network server instead.",
            field="transport",
            code="stdio_disabled",
        )


def _invalid(message: str) -> ServiceError:
    return ServiceError(message, field="url", code="invalid_url")


def _host_and_port(url: str, schemes: set[str] | frozenset[str]) -> tuple[str, int | None]:
    """The host and port of ``url``, once its syntax is one Argus accepts."""
    allowed = " or ".join(f"{scheme}://" for scheme in sorted(schemes))
    # urlsplit silently drops tabs and newlines; a client might not, so refuse them.
    if any(char.isspace() or not char.isprintable() for char in url):
        raise _invalid(f"{url!r} contains spaces or control characters.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _invalid(f"{url} is not a valid URL.") from None
    if parts.scheme not in schemes:
        raise _invalid(f"{url} must start with {allowed}.")
    if "@" in parts.netloc:
        raise _invalid(
            f"{url} contains credentials; put credentials in headers or secrets instead."
        )
    host = parts.hostname
    if not host:
        raise _invalid(f"{url} has no host.")
    if ":" in host:
        # A zone id (fe80::1%eth0) only ever names a link-local address, never allowed.
        if "%" in host:
            raise _invalid(f"{url} has an IPv6 zone id; Argus never connects to link-local.")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _invalid(f"{url} has a malformed IPv6 address.") from None
    elif not HOST_NAME.fullmatch(host):
        raise _invalid(f"{url} has a malformed host name {host!r}.")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise _invalid(f"{url} has a bad port; use a number from 1 to 65535.")
    return host, port or DEFAULT_PORTS.get(parts.scheme)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of those forms."""
    if address.version == 4:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _check_address(url: str, address: IPAddress, *, allow_private: bool) -> None:
    """Raise ``ForbiddenDestination`` when Argus must not connect to ``address``."""
    shown = str(address)
    judged = address
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        shown = f"{address} (embedding {embedded})"
        judged = embedded
    judged = ipaddress.ip_address(str(judged).split("%")[0])
    kind, description = _classify(judged)
    if kind == NEVER:
        raise ForbiddenDestination(
            f"{url} resolves to {shown}, {description}; Argus never connects there."
        )
    if kind == PRIVATE and not allow_private:
        raise ForbiddenDestination(
            f"{url} resolves to {shown}, {description}; private and loopback networks "
            "are refused unless ARGUS_ALLOW_PRIVATE_NETWORKS is on."
        )


def _classify(address: IPAddress) -> tuple[str | None, str | None]:
    """The kind and description of the first rule ``address`` falls under."""
    for network, kind, description in RULES:
        if network.version == address.version and address in network:
            return kind, description
    if address.version == 6 and address not in GLOBAL_UNICAST_V6:
        return NEVER, "a reserved address (outside global unicast 2000::/3)"
    return None, None
