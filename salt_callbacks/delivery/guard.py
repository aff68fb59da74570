"""The outbound address guard: a callback URL must not reach the master's own networks.

A webhook URL is chosen by whoever calls the runner, and the master usually
sits inside the network it manages. The URL is parsed once (``urls.parse``:
the same parse aiohttp is handed, IDNA/UTS46-mapped to the ASCII host it
connects to) and the guard judges that host: on its face at the runner, the
HTTP API and the engine's registration, and again at connect time, where the
transport's connector checks every address it is about to connect to, IP
literals included, so what was checked is what is contacted.

Refused: the ranges of ``ranges.py`` (IANA's special-purpose registries,
written out so every Python judges alike: loopback, private, link-local and
cloud metadata, CGNAT, 192.0.0.0/24, benchmarking, documentation, multicast,
reserved; for IPv6 everything outside 2000::/3, fec0::/10 included). IPv4
addresses hidden in IPv6 (mapped ``::ffff:``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) are unwrapped and judged as IPv4. Numeric host spellings that
``getaddrinfo`` accepts (``127.1``, ``2130706433``, ``0x7f.1``,
``0177.0.0.1``) are parsed the same way. ``allow_networks`` lets chosen
ranges through.
"""

import ipaddress
import socket

from salt_callbacks.delivery import ranges
from salt_callbacks.exceptions import BlockedAddressError

NAT64 = ipaddress.ip_network("64:ff9b::/96")
TEREDO = ipaddress.ip_network("2001::/32")
CGNAT = ipaddress.ip_network("100.64.0.0/10")


def numeric_host(host):
    """The address a numeric host spelling stands for, or None for a name.

    ``inet_aton`` accepts exactly the legacy IPv4 forms that resolvers do;
    one trailing dot (``127.0.0.1.``) is a spelling of the same address.
    """
    host = host.strip("[]")
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    try:
        return ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host)
    except ValueError:
        pass
    if not host or not host.isascii() or not all(c.isalnum() or c == "." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def unwrap(address):
    """The IPv4 address an IPv6 address carries inside it, or the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour:
            return address.sixtofour
    return address


def is_localhost(host):
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


class AddressGuard:
    def __init__(self, allow_networks=()):
        self.allow_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)

    def allowed(self, address):
        if isinstance(address, str):
            address = ipaddress.ip_address(address.split("%", 1)[0])
        inner = unwrap(address)
        if self.allow_networks:
            for candidate in (address, inner):
                if any(candidate in net for net in self.allow_networks if candidate.version == net.version):
                    return True
        if inner is not address:
            # A translation form is judged by the IPv4 address it carries
            # (6to4's own prefix is global; NAT64's sits outside 2000::/3).
            return not ranges.blocked(inner)
        return not ranges.blocked(address)

    def check(self, address):
        """Raise ``BlockedAddressError`` unless ``address`` may be contacted."""
        if not self.allowed(address):
            raise BlockedAddressError(f"destination address {address} is not allowed (private, loopback, "
                                      "link-local or otherwise non-public; see callbacks:allow_networks)")

    def check_url_host(self, host):
        """Refuse a host that is blocked on its face (an address or ``localhost``).

        ``host`` is the ASCII host as ``urls.parse`` gives it. Names are
        resolved and their addresses checked at connect time.
        """
        address = numeric_host(host)
        if address is not None:
            self.check(address)
        elif is_localhost(host):
            self.check(ipaddress.ip_address("127.0.0.1"))

    def check_target(self, target):
        """``check_url_host`` for a parsed ``urls.Target``."""
        if target.address is not None:
            self.check(target.address)
        elif is_localhost(target.host):
            self.check(ipaddress.ip_address("127.0.0.1"))
