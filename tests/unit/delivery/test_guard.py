"""The address guard and the one URL parse it judges, case by case and by property."""

import ipaddress

import pytest
import yarl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from salt_callbacks.delivery import ranges, urls
from salt_callbacks.delivery.guard import AddressGuard, numeric_host
from salt_callbacks.exceptions import BlockedAddressError

GUARD = AddressGuard()
FULLWIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
PROPERTY = settings(max_examples=300, deadline=None)


def refused(url, guard=GUARD):
    try:
        guard.check_target(urls.parse(url))
    except (BlockedAddressError, urls.InvalidURL):
        return True
    return False


@pytest.mark.parametrize("url", [
    "http://１２７.０.０.１:8080/x",  # fullwidth digits and full stops
    "http://127。0。0。1:8080/x",  # ideographic full stop
    "http://127．0．0．1/x",  # fullwidth full stop
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://127.0.0.1./",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of the metadata address
    "http://[2002:a9fe:a9fe::]/",  # 6to4 of it
    "http://[::1]/",
    "http://localhost/", "http://LOCALHOST./", "http://ⓛocalhost/", "http://a.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://192.0.0.9/", "http://192.0.0.10/", "http://192.0.0.170/",
    "http://[fec0::1]/", "http://[fc00::1]/", "http://[fe80::1]/", "http://[ff02::1]/",
    "http://[2001:db8::1]/", "http://[3fff::1]/", "http://[2001:1::1]/", "http://[5f00::1]/",
    "http://100.64.0.1/", "http://0.0.0.0/", "http://255.255.255.255/", "http://224.0.0.1/",
    "http://%31%32%37.0.0.1/",  # refused as a host name, not decoded
    "http://[fe80::1%25eth0]/",
    "http://u:p@example.com@127.0.0.1/",  # the host is the part after the last @
])
def test_every_spelling_of_a_blocked_address_is_refused(url):
    assert refused(url)


@pytest.mark.parametrize("url", [
    "http://8.8.8.8/", "https://1.1.1.1:8443/x", "http://[2606:4700::1111]/",
    "http://[64:ff9b::808:808]/", "http://[2002:808:808::]/", "http://hooks.example.com/",
    "https://bücher.example/", "http://EXAMPLE.com./a?b#c", "http://under_score.example/",
])
def test_public_destinations_pass(url):
    assert not refused(url)


def test_a_non_ascii_host_is_judged_as_the_ascii_host_aiohttp_connects_to():
    target = urls.parse("https://Bücher.example:8443/p?q=1")
    assert target.host == "xn--bcher-kva.example"
    assert target.url.raw_host == target.host
    assert target.port == 8443 and target.scheme == "https"


def test_allow_networks_let_chosen_ranges_through_in_every_spelling():
    guard = AddressGuard(["127.0.0.0/8"])
    assert not refused("http://１２７.０.０.１/", guard)
    assert not refused("http://[::ffff:127.0.0.1]/", guard)
    assert refused("http://10.0.0.1/", guard)


@pytest.mark.parametrize("address", ["192.0.0.9", "192.0.0.10", "fec0::1", "2001:4:112::1", "2001:20::1", "192.31.196.1"])
def test_ranges_python_releases_disagree_on_are_blocked_everywhere(address):
    assert not GUARD.allowed(address)


# -- properties --------------------------------------------------------------------------

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
blocked_v4 = st.sampled_from(ranges.BLOCKED_V4).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(ipaddress.IPv4Address))


def spellings(address):
    """Ways to write one IPv4 address in a URL host that a resolver or yarl maps back to it."""
    n = int(address)
    a, b, c, d = address.packed
    return [
        str(address), str(n), hex(n), f"{a}.{(b << 16) | (c << 8) | d}", f"{a}.{b}.{(c << 8) | d}",
        ".".join(oct(x).replace("0o", "0") if x else "0" for x in (a, b, c, d)), f"{address}.",
        str(address).translate(FULLWIDTH), str(address).replace(".", "。"),
        f"[::ffff:{address}]", f"[64:ff9b::{address}]", f"[{ipaddress.IPv6Address((0x2002 << 112) | (n << 80))}]",
    ]


@PROPERTY
@given(blocked_v4)
@example(ipaddress.IPv4Address("127.0.0.1"))
@example(ipaddress.IPv4Address("192.0.0.9"))
def test_no_spelling_of_a_blocked_ipv4_address_passes(address):
    for host in spellings(address):
        assert refused(f"http://{host}:8080/x"), host


@PROPERTY
@given(st.one_of(ipv4, ipv6))
def test_whatever_this_python_calls_non_global_is_blocked(address):
    inner = address.ipv4_mapped if address.version == 6 else None
    if address.version == 6 and (inner or address in ipaddress.ip_network("64:ff9b::/96") or address.sixtofour):
        return  # translation forms are judged by the IPv4 address inside
    if not address.is_global:
        assert not GUARD.allowed(address)


@PROPERTY
@given(ipv4)
def test_the_guard_judges_an_ipv4_address_alike_in_every_spelling(address):
    verdict = GUARD.allowed(address)
    for host in spellings(address):
        assert refused(f"http://{host}/") == (not verdict), host


hosts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@PROPERTY
@given(hosts)
@example("１２７.０.０.１")
@example("127。0。0。1")
def test_the_host_judged_is_the_host_aiohttp_connects_to(host):
    url = f"http://{host}:8080/x"
    try:
        target = urls.parse(url)
    except urls.InvalidURL:
        return
    # aiohttp is handed target.url; it connects to raw_host of what it was handed.
    assert target.host.isascii()
    assert yarl.URL(target.url).raw_host.lower() == target.host
    if numeric_host(target.host) is not None:
        assert target.address == numeric_host(target.host)
