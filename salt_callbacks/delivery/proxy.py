"""Egress through an HTTP proxy: ``callbacks: proxy`` and ``no_proxy``.

The proxy is trusted as configured: its own address is not judged by the
address guard (it is usually on the master's own network). The destination
still is: before a delivery goes through the proxy, the transport resolves
the destination's host itself and refuses it if any address is blocked. What
the guard cannot see is how the proxy resolves the name: a name whose DNS
answer changes between our lookup and the proxy's (rebinding) reaches what the
proxy resolves; restrict the proxy's own egress for that (docs/delivery.md).

``no_proxy`` entries: ``*`` (no delivery uses the proxy), a host name (the
name and its subdomains; a leading ``.`` or ``*.`` is the same), an IP
address or a CIDR (matched against address-literal hosts).
"""

import base64
import functools
import ipaddress
import urllib.parse

import yarl


class ProxyRoute:
    """Which deliveries go through the proxy. ``url`` has no credentials;
    ``credentials`` is ``(user, password)`` or None."""

    def __init__(self, proxy, no_proxy=()):
        self.url, self.credentials = parse_proxy(proxy)
        self.authorization = None
        if self.credentials:
            user, password = self.credentials
            self.authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        self.host = self.url.raw_host.lower().rstrip(".")
        self.port = self.url.port
        self.everything_direct, self._names, self._networks = parse_no_proxy(no_proxy)
        self.uses_proxy = functools.lru_cache(maxsize=4096)(self._uses_proxy)

    def _uses_proxy(self, host):
        """Whether a delivery to ``host`` (ASCII, as ``urls.parse`` gives it) goes through the proxy."""
        if self.everything_direct:
            return False
        name = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        if address is not None:
            return not any(address in net for net in self._networks if net.version == address.version)
        return not any(name == entry or name.endswith("." + entry) for entry in self._names)

    def __repr__(self):
        return f"ProxyRoute({str(self.url)!r}{', with credentials' if self.credentials else ''})"


def parse_proxy(value):
    """``(url without credentials, (user, password) or None)``; raises ``ValueError``."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be an http:// URL of the proxy, got {type(value).__name__}")
    try:
        url = yarl.URL(value.strip())
        port = url.port
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ValueError(f"is not a valid URL: {exc}") from exc
    if url.scheme != "http":
        raise ValueError(f"must be an http:// URL (https is reached through it with CONNECT), "
                         f"got scheme {url.scheme!r}")
    if not url.raw_host:
        raise ValueError("must include the proxy's host")
    if url.raw_path not in ("", "/") or url.raw_query_string or url.raw_fragment:
        raise ValueError("must be scheme, host and port only (no path or query)")
    credentials = None
    if url.raw_user is not None:
        credentials = (urllib.parse.unquote(url.raw_user), urllib.parse.unquote(url.raw_password or ""))
    return yarl.URL.build(scheme="http", host=url.raw_host, port=port, encoded=True), credentials


def parse_no_proxy(value):
    """``(everything_direct, names, networks)`` from a list or a comma-separated string;
    raises ``ValueError`` naming the bad entry."""
    if value is None:
        value = ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list or a comma-separated string, got {type(value).__name__}")
    names, networks, everything = [], [], False
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            raise ValueError(f"[{index}] must be a host name, an address or a CIDR, got {entry!r}")
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            everything = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = entry.removeprefix("*.").lstrip(".").rstrip(".")
        if not name or not name.isascii() or any(c in name for c in "/:@ "):
            raise ValueError(f"[{index}] must be a host name, an address or a CIDR, got {entry!r}")
        names.append(name)
    return everything, tuple(names), tuple(networks)
