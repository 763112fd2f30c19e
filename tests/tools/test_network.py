"""Network safety of MCP server URLs: schemes, credentials, and every resolved address."""

import ipaddress
import socket

import pytest
from django.test import override_settings

from argus.errors import ServiceError
from tools.network import (
    HTTP_SCHEMES,
    WEBSOCKET_SCHEMES,
    ForbiddenDestination,
    check_stdio_allowed,
    check_url,
)

NEVER = "Argus never connects there."
PRIVATE = "private and loopback networks are refused unless ARGUS_ALLOW_PRIVATE_NETWORKS is on."


def resolver(table: dict[str, list[str]]):
    """A getaddrinfo answering from ``table``, failing like it does for other names."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                type,
                socket.IPPROTO_TCP,
                "",
                (address, port),
            )
            for address in table[host]
        ]

    return resolve


def refusal(url: str, **options) -> str:
    options.setdefault("schemes", HTTP_SCHEMES)
    with pytest.raises(ForbiddenDestination) as error:
        check_url(url, **options)
    assert (error.value.code, error.value.field, error.value.status) == (
        "forbidden_destination",
        "url",
        400,
    )
    return error.value.message


# Literals the real resolver reads, whatever the private-network setting.
ALWAYS_REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address "
     "(cloud metadata range 169.254.0.0/16)"),
    ("http://169.254.1.1:8080/", "169.254.1.1, a link-local address"),
    ("http://[fe80::1]/", "fe80::1, a link-local address (fe80::/10)"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254, a cloud metadata address (AWS)"),
    ("http://100.100.100.200/", "100.100.100.200, a cloud metadata address (Alibaba Cloud)"),
    ("http://0.0.0.0:8000/", "0.0.0.0, an unspecified address (0.0.0.0/8)"),
    ("http://0/", "0.0.0.0, an unspecified address"),
    ("http://[::]/", "resolves to ::, the unspecified address"),
    ("http://224.0.0.1/", "224.0.0.1, a multicast address"),
    ("http://[ff02::1]/", "ff02::1, a multicast address"),
    ("http://255.255.255.255/", "255.255.255.255, the broadcast address"),
    ("http://240.0.0.1/", "240.0.0.1, a reserved address (240.0.0.0/4)"),
    ("http://192.0.2.10/", "192.0.2.10, a reserved address (documentation 192.0.2.0/24)"),
    ("http://[2001:db8::1]/", "2001:db8::1, a reserved address (documentation"),
    ("http://[2001::1]/", "2001::1, a reserved address (IETF protocol assignments"),
    ("http://[100::1]/", "100::1, a reserved address (outside global unicast 2000::/3)"),
    # IPv6 forms embedding an IPv4 address are judged by it.
    ("http://[::ffff:169.254.169.254]/", "(embedding 169.254.169.254), a link-local address"),
    ("http://[::169.254.169.254]/", "(embedding 169.254.169.254), a link-local address"),
    ("http://[64:ff9b::a9fe:a9fe]/", "(embedding 169.254.169.254), a link-local address"),
    ("http://[2002:a9fe:a9fe::1]/", "(embedding 169.254.169.254), a link-local address"),
    ("http://[::ffff:0.0.0.0]/", "(embedding 0.0.0.0), an unspecified address"),
]  # fmt: skip


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(("url", "reason"), ALWAYS_REFUSED)
def test_always_refused_whatever_the_setting(url, reason, allow_private):
    message = refusal(url, allow_private=allow_private)

    assert message.startswith(f"{url} resolves to ")
    assert reason in message
    assert message.endswith(NEVER)


# Literals refused unless private networks are allowed, including the spellings of
# 127.0.0.1 that getaddrinfo reads (decimal, hex, octal, short).
PRIVATE_LITERALS = [
    ("http://127.0.0.1:8000/mcp", "127.0.0.1, a loopback address"),
    ("http://127.9.9.9/", "127.9.9.9, a loopback address"),
    ("http://2130706433/", "127.0.0.1, a loopback address"),
    ("http://0x7f.1/", "127.0.0.1, a loopback address"),
    ("http://0x7f000001/", "127.0.0.1, a loopback address"),
    ("http://0177.0.0.1/", "127.0.0.1, a loopback address"),
    ("http://017700000001/", "127.0.0.1, a loopback address"),
    ("http://127.1/", "127.0.0.1, a loopback address"),
    ("http://[::1]:8000/", "::1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "(embedding 127.0.0.1), a loopback address"),
    ("http://[::ffff:7f00:1]/", "(embedding 127.0.0.1), a loopback address"),
    ("http://[64:ff9b::a00:5]/", "(embedding 10.0.0.5), a private address"),
    ("http://10.0.0.5/", "10.0.0.5, a private address"),
    ("http://172.16.0.1/", "172.16.0.1, a private address"),
    ("http://172.31.255.254/", "172.31.255.254, a private address"),
    ("http://192.168.1.1/", "192.168.1.1, a private address"),
    ("http://[fd12:3456::1]/", "fd12:3456::1, a private address (unique local fc00::/7)"),
    ("http://100.64.0.1/", "100.64.0.1, a shared address (carrier-grade NAT 100.64.0.0/10)"),
    ("http://198.18.0.1/", "198.18.0.1, a private address (benchmarking"),
]


@pytest.mark.parametrize(("url", "reason"), PRIVATE_LITERALS)
def test_private_addresses_are_refused_unless_allowed(url, reason):
    message = refusal(url, allow_private=False)
    assert reason in message
    assert message.endswith(PRIVATE)

    assert check_url(url, schemes=HTTP_SCHEMES, allow_private=True)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://93.184.215.14/mcp", "93.184.215.14"),
        ("http://8.8.8.8:8080/", "8.8.8.8"),
        ("http://172.32.0.1/", "172.32.0.1"),
        ("http://100.128.0.1/", "100.128.0.1"),
        ("http://[2606:4700:4700::1111]/", "2606:4700:4700::1111"),
        ("http://[::ffff:8.8.8.8]/", "::ffff:8.8.8.8"),
        ("http://[2002:808:808::1]/", "2002:808:808::1"),
    ],
)
def test_public_addresses_pass_and_are_returned(url, expected):
    assert check_url(url, schemes=HTTP_SCHEMES, allow_private=False) == [
        ipaddress.ip_address(expected)
    ]


FAKE_DNS = resolver(
    {
        "rebind.example": ["169.254.169.254"],
        "metadata.internal": ["169.254.169.254"],
        "mixed.example": ["93.184.215.14", "10.0.0.5"],
        "mixed6.example": ["2606:4700::1", "fe80::1"],
        "mapped.example": ["::ffff:127.0.0.1"],
        "public.example": ["93.184.215.14", "2606:4700::1", "93.184.215.14"],
        "internal.example": ["10.1.2.3"],
    }
)


def test_a_name_is_judged_by_what_it_resolves_to():
    message = refusal("http://metadata.internal/", resolve=FAKE_DNS)
    assert message == (
        "http://metadata.internal/ resolves to 169.254.169.254, a link-local address "
        "(cloud metadata range 169.254.0.0/16); Argus never connects there."
    )
    assert "169.254.169.254" in refusal("http://rebind.example/", resolve=FAKE_DNS)

    message = refusal("http://internal.example/mcp", resolve=FAKE_DNS, allow_private=False)
    assert message == (
        "http://internal.example/mcp resolves to 10.1.2.3, a private address; private and "
        "loopback networks are refused unless ARGUS_ALLOW_PRIVATE_NETWORKS is on."
    )
    assert check_url(
        "http://internal.example/mcp", schemes=HTTP_SCHEMES, resolve=FAKE_DNS, allow_private=True
    ) == [ipaddress.ip_address("10.1.2.3")]


def test_every_resolved_address_must_pass():
    assert "10.0.0.5, a private address" in refusal(
        "http://mixed.example/", resolve=FAKE_DNS, allow_private=False
    )
    assert "fe80::1, a link-local address" in refusal(
        "http://mixed6.example/", resolve=FAKE_DNS, allow_private=True
    )
    assert "(embedding 127.0.0.1), a loopback address" in refusal(
        "http://mapped.example/", resolve=FAKE_DNS, allow_private=False
    )
    assert check_url(
        "https://public.example/mcp", schemes=HTTP_SCHEMES, resolve=FAKE_DNS, allow_private=False
    ) == [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("2606:4700::1")]


def test_the_resolver_gets_the_host_and_port():
    calls = []

    def resolve(host, port, **options):
        calls.append((host, port, options))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    check_url("https://Public.Example/mcp", schemes=HTTP_SCHEMES, resolve=resolve)
    check_url("ws://public.example:8765/", schemes=WEBSOCKET_SCHEMES, resolve=resolve)
    check_url("http://public.example", schemes=HTTP_SCHEMES, resolve=resolve)

    assert calls == [
        ("public.example", 443, {"type": socket.SOCK_STREAM}),
        ("public.example", 8765, {"type": socket.SOCK_STREAM}),
        ("public.example", 80, {"type": socket.SOCK_STREAM}),
    ]


def test_real_localhost_resolution():
    message = refusal("http://localhost:8000/mcp", allow_private=False)
    assert message.startswith("http://localhost:8000/mcp resolves to ")
    assert "a loopback address" in message

    addresses = check_url("http://localhost:8000/mcp", schemes=HTTP_SCHEMES, allow_private=True)
    assert addresses
    assert all(address.is_loopback for address in addresses)


def test_the_default_follows_the_setting():
    with override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=False):
        assert refusal("http://127.0.0.1:8000/").endswith(PRIVATE)
        assert refusal("http://169.254.169.254/").endswith(NEVER)
    with override_settings(ARGUS_ALLOW_PRIVATE_NETWORKS=True):
        assert check_url("http://127.0.0.1:8000/", schemes=HTTP_SCHEMES)
        assert refusal("http://169.254.169.254/").endswith(NEVER)


@pytest.mark.parametrize(
    ("url", "schemes", "message"),
    [
        ("ws://93.184.215.14/", HTTP_SCHEMES, "must start with http:// or https://"),
        ("ftp://93.184.215.14/", HTTP_SCHEMES, "must start with http:// or https://"),
        ("93.184.215.14:80", HTTP_SCHEMES, "must start with http:// or https://"),
        ("http://93.184.215.14/", WEBSOCKET_SCHEMES, "must start with ws:// or wss://"),
        ("https://93.184.215.14/", WEBSOCKET_SCHEMES, "must start with ws:// or wss://"),
        ("http://user:pw@93.184.215.14/", HTTP_SCHEMES, "put credentials in headers or secrets"),
        ("http://token@93.184.215.14/", HTTP_SCHEMES, "contains credentials"),
        ("http://public.example\\@169.254.169.254/", HTTP_SCHEMES, "contains credentials"),
        ("http:///mcp", HTTP_SCHEMES, "has no host"),
        ("http://:8080/", HTTP_SCHEMES, "has no host"),
        ("http://93.184.215.14:0/", HTTP_SCHEMES, "bad port; use a number from 1 to 65535"),
        ("http://93.184.215.14:65536/", HTTP_SCHEMES, "bad port"),
        ("http://93.184.215.14:http/", HTTP_SCHEMES, "bad port"),
        ("http://[::1/", HTTP_SCHEMES, "is not a valid URL"),
        ("http://[fe80::1%25eth0]/", HTTP_SCHEMES, "has an IPv6 zone id"),
        ("http://%31%32%37.0.0.1/", HTTP_SCHEMES, "has a malformed host name"),
        ("http://exa\tmple.com/", HTTP_SCHEMES, "contains spaces or control characters"),
        ("http://example.com /", HTTP_SCHEMES, "contains spaces or control characters"),
        (" http://example.com/", HTTP_SCHEMES, "contains spaces or control characters"),
    ],
)
def test_malformed_urls_are_refused(url, schemes, message):
    with pytest.raises(ServiceError) as error:
        check_url(url, schemes=schemes, allow_private=True, resolve=FAKE_DNS)

    assert not isinstance(error.value, ForbiddenDestination)
    assert (error.value.field, error.value.code) == ("url", "invalid_url")
    assert message in error.value.message


def test_websocket_urls_are_checked_like_http_ones():
    assert check_url("wss://93.184.215.14/mcp", schemes=WEBSOCKET_SCHEMES)
    message = refusal("ws://rebind.example/", schemes=WEBSOCKET_SCHEMES, resolve=FAKE_DNS)
    assert message.startswith("ws://rebind.example/ resolves to 169.254.169.254")


@pytest.mark.parametrize(
    "url", ["http://unknown.example/", "http://no-such-host.invalid/", "http://a..b/"]
)
def test_unresolvable_hosts_say_so(url):
    resolve = FAKE_DNS if "example" in url else socket.getaddrinfo
    with pytest.raises(ServiceError) as error:
        check_url(url, schemes=HTTP_SCHEMES, resolve=resolve)

    assert (error.value.field, error.value.code) == ("url", "unresolvable_host")
    assert error.value.message.startswith("cannot resolve host ")
    assert url in error.value.message


def test_a_resolver_with_no_answer_is_unresolvable():
    with pytest.raises(ServiceError, match=r"cannot resolve host 'empty\.example'.*no addresses"):
        check_url("http://empty.example/", schemes=HTTP_SCHEMES, resolve=lambda *a, **k: [])


def test_stdio_follows_its_setting():
    with override_settings(ARGUS_ALLOW_STDIO=True):
        check_stdio_allowed()
    with override_settings(ARGUS_ALLOW_STDIO=False), pytest.raises(ServiceError) as error:
        check_stdio_allowed()

    assert (error.value.field, error.value.code) == ("transport", "stdio_disabled")
    assert "ARGUS_ALLOW_STDIO" in error.value.message
