"""The address ranges the outbound guard refuses, written out from IANA's registries.

``ipaddress``'s ``is_private``/``is_global`` change between Python releases
(3.11.7 lets ``192.0.0.9`` and ``fec0::/10`` through; 3.12.4 and 3.13 moved
other entries), so the guard judges against these lists only and behaves the
same on every supported Python. Sources:

- IANA IPv4 Special-Purpose Address Registry and the IPv4 address space
  registry (multicast, the reserved 240/4);
- IANA IPv6 Special-Purpose Address Registry and the IPv6 address space
  registry: only ``2000::/3`` is global unicast; everything outside it is
  reserved, unique-local, link-local, site-local (deprecated, RFC 3879) or
  multicast.

Whole blocks are refused even where the registry marks a few members
"globally reachable" (anycast such as ``192.0.0.9``, AS112): none of them
is a webhook receiver. The IPv6 forms that carry an IPv4 address (mapped,
NAT64, 6to4, Teredo) are listed in ``guard.unwrap`` and judged by the
IPv4 address inside them.
"""

import ipaddress


def _nets(*cidrs):
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


#: IPv4 ranges refused, each with its registry entry.
BLOCKED_V4 = _nets(
    "0.0.0.0/8",  # "this network" (RFC 791, 1122)
    "10.0.0.0/8",  # private-use (RFC 1918)
    "100.64.0.0/10",  # shared address space, CGNAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link-local, cloud metadata (RFC 3927)
    "172.16.0.0/12",  # private-use (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments: DS-Lite, PCP/TURN anycast, NAT64 discovery (RFC 6890)
    "192.0.2.0/24",  # documentation TEST-NET-1 (RFC 5737)
    "192.31.196.0/24",  # AS112-v4 (RFC 7535)
    "192.52.193.0/24",  # AMT (RFC 7450)
    "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526)
    "192.168.0.0/16",  # private-use (RFC 1918)
    "192.175.48.0/24",  # direct delegation AS112 (RFC 7534)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # documentation TEST-NET-2 (RFC 5737)
    "203.0.113.0/24",  # documentation TEST-NET-3 (RFC 5737)
    "224.0.0.0/4",  # multicast (RFC 5771)
    "240.0.0.0/4",  # reserved for future use, and 255.255.255.255 broadcast (RFC 1112, 919)
)

#: IPv6 unicast that may be global: everything outside it is refused.
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")

#: Ranges inside 2000::/3 that are refused anyway.
BLOCKED_V6 = _nets(
    "2001::/23",  # IETF protocol assignments: Teredo (unwrapped first), PCP/TURN anycast,
    # benchmarking 2001:2::/48, AMT, AS112-v6, ORCHID(v2), drone remote ID (RFC 2928, 6890)
    "2001:db8::/32",  # documentation (RFC 3849)
    "2620:4f:8000::/48",  # direct delegation AS112 (RFC 7534)
    "3fff::/20",  # documentation (RFC 9637)
)

#: What is outside 2000::/3, for the docs and the tests (all refused).
OUTSIDE_GLOBAL_V6 = _nets(
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::/96",  # IPv4-compatible (deprecated, RFC 4291)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
    "100::/64",  # discard-only (RFC 6666)
    "5f00::/16",  # SRv6 SIDs (RFC 9602)
    "fc00::/7",  # unique-local (RFC 4193)
    "fe80::/10",  # link-local (RFC 4291)
    "fec0::/10",  # site-local, deprecated (RFC 3879)
    "ff00::/8",  # multicast (RFC 4291)
)


def _spans(networks):
    return tuple((int(net.network_address), int(net.broadcast_address)) for net in networks)


# Integer bounds: a membership test is a few comparisons, not an ipaddress call per range.
_V4 = _spans(BLOCKED_V4)
_V6 = _spans(BLOCKED_V6)
_GLOBAL_V6 = _spans([GLOBAL_UNICAST_V6])[0]


def blocked(address):
    """True when ``address`` (an ``ipaddress`` address, already unwrapped) is
    in a refused range."""
    value = int(address)
    if address.version == 4:
        return any(low <= value <= high for low, high in _V4)
    if not _GLOBAL_V6[0] <= value <= _GLOBAL_V6[1]:
        return True
    return any(low <= value <= high for low, high in _V6)
