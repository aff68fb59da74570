"""The outbound address guard: a callback URL must not reach the master's own networks.

A webhook URL is chosen by whoever calls the runner, and the master usually
sits inside the network it manages. So before every attempt the host is
resolved, every address is checked, and the connection goes to an address
that was checked (the resolver hands aiohttp the vetted list), so a DNS answer
cannot change between the check and the connect.

Blocked: loopback, private, link-local (cloud metadata 169.254.169.254
included), CGNAT 100.64/10, multicast, reserved, unspecified, and anything
else that is not globally routable; IPv4 addresses hidden in IPv6 (mapped
``::ffff:``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) are
unwrapped and judged as IPv4. Numeric host spellings that ``getaddrinfo``
accepts (``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``) are
parsed the same way. ``allow_networks`` lets chosen ranges through.
"""

import ipaddress
import socket

from salt_callbacks.exceptions import BlockedAddressError

NAT64 = ipaddress.ip_network("64:ff9b::/96")
CGNAT = ipaddress.ip_network("100.64.0.0/10")



def numeric_host(host):
    """The address a numeric host spelling stands for, or None for a name.

    ``inet_aton`` accepts exactly the legacy IPv4 forms that resolvers do.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def unwrap(address):
    """The IPv4 address an IPv6 address carries inside it, if any."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour:
            return address.sixtofour
        if address.teredo:
            return address.teredo[1]
    return address


class AddressGuard:
    def __init__(self, allow_networks=()):
        self.allow_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)

    def allowed(self, address):
        if isinstance(address, str):
            address = ipaddress.ip_address(address.split("%", 1)[0])
        candidates = {address, unwrap(address)}
        if any(a in net for a in candidates for net in self.allow_networks if a.version == net.version):
            return True
        return not any(_special(a) for a in candidates)

    def check(self, address):
        """Raise ``BlockedAddressError`` unless ``address`` may be contacted."""
        if not self.allowed(address):
            raise BlockedAddressError(f"destination address {address} is not allowed (private, loopback, "
                                      "link-local or otherwise non-public; see callbacks:allow_networks)")

    def check_url_host(self, host):
        """Refuse a host that is blocked on its face (an address or ``localhost``).

        Names are checked again, resolved, before every attempt.
        """
        address = numeric_host(host)
        if address is not None:
            self.check(address)
        elif host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
            self.check(ipaddress.ip_address("127.0.0.1"))


def _special(address):
    if address.version == 4 and address in CGNAT:
        return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )
