"""The outbound address guard: which addresses mailvia refuses to connect to, and why not."""

from __future__ import annotations

import ipaddress

import pytest

from mailvia.domain.errors import OutboundRefused
from mailvia.transport.guard import REFUSED_MESSAGE, OutboundGuard, is_public

BLOCKED = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "::1",
    "0.0.0.0",  # unspecified / "this network"
    "0.1.2.3",
    "::",
    "10.0.0.1",  # RFC 1918
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "169.254.169.254",  # cloud metadata (link-local)
    "169.254.0.1",
    "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
    "fc00::1",
    "fe80::1",  # link-local
    "fec0::1",  # site-local (deprecated)
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "2001:db8::1",
    "198.18.0.1",  # benchmarking
    "192.0.0.8",  # IETF protocol assignments
    "::ffff:127.0.0.1",  # IPv4-mapped forms
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2002:0a00:0001::",  # 6to4 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2001::1",  # Teredo
    "100::1",  # discard-only
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "52.94.236.248",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "2002:0808:0808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address
]


@pytest.mark.parametrize("text", BLOCKED)
def test_blocked_addresses_are_refused_with_one_generic_message(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert not is_public(address)
    with pytest.raises(OutboundRefused) as refused:
        OutboundGuard().check([address])
    assert str(refused.value) == REFUSED_MESSAGE == "mailvia will not connect to this host"


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert is_public(address)
    OutboundGuard().check([address])


def test_any_blocked_address_refuses_the_whole_host() -> None:
    addresses = [ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(OutboundRefused):
        OutboundGuard().check(addresses)


def test_allowed_networks_let_private_addresses_through() -> None:
    guard = OutboundGuard([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
    guard.check([ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "::ffff:127.0.0.2")])
    for other in ("10.0.0.1", "169.254.169.254", "::2", "fe80::1"):
        with pytest.raises(OutboundRefused):
            guard.check([ipaddress.ip_address(other)])


def test_an_allowed_relay_network_does_not_open_its_neighbours() -> None:
    guard = OutboundGuard([ipaddress.ip_network("10.1.2.0/24")])
    guard.check([ipaddress.ip_address("10.1.2.25")])
    with pytest.raises(OutboundRefused):
        guard.check([ipaddress.ip_address("10.1.3.25")])


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "localhost"])
async def test_numeric_and_named_forms_of_loopback_resolve_and_are_refused(host: str) -> None:
    guard = OutboundGuard()
    addresses = await guard.resolve(host, 25)
    assert ipaddress.ip_address("127.0.0.1") in addresses
    with pytest.raises(OutboundRefused):
        guard.check(addresses)


async def test_resolve_keeps_ipv6_and_mapped_forms() -> None:
    guard = OutboundGuard()
    assert await guard.resolve("::ffff:127.0.0.1", 25) == [ipaddress.ip_address("::ffff:7f00:1")]
    assert await guard.resolve("::1", 25) == [ipaddress.ip_address("::1")]


async def test_connect_refuses_before_any_packet() -> None:
    with pytest.raises(OutboundRefused):
        await OutboundGuard().connect("127.0.0.1", 9, timeout=1.0)
