"""One parse of a callback URL, shared by validation, the guard and the connect.

aiohttp parses a URL with yarl, which maps a non-ASCII host through IDNA with
UTS46 (fullwidth ``１２７.０.０.１`` and ``127。0。0。1`` become ``127.0.0.1``) and
then treats the result as an address literal. A check made on a different
parse (``urllib.parse`` sees a non-numeric name there) judges a different
host from the one contacted. So ``parse()`` parses with yarl, judges yarl's
ASCII ``raw_host`` (the very string aiohttp connects to), and the transport
hands aiohttp the same ``yarl.URL`` object: one parse from validation to
connect.

A host is accepted only as an IP literal or an ASCII name of letters, digits,
``-`` and ``_`` in dot-separated labels (one trailing dot allowed); anything
else (percent-escapes, spaces, a non-ASCII result) is refused, naming the host.
"""

import dataclasses
import functools
import ipaddress
import re

import yarl

from salt_callbacks.delivery.guard import numeric_host

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
MAX_HOST_LENGTH = 253
DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidURL(ValueError):
    """A URL ``parse()`` refuses; the message says why (no credentials in it)."""


@dataclasses.dataclass(frozen=True)
class Target:
    url: yarl.URL  # what aiohttp is handed, unchanged
    scheme: str
    host: str  # ASCII, lowercase: what aiohttp resolves or connects to
    port: int
    address: object = None  # the ipaddress address when the host is numeric (any spelling)

    @property
    def is_tls(self):
        return self.scheme == "https"


@functools.lru_cache(maxsize=4096)
def parse(value):
    """The ``Target`` of an absolute http(s) URL; raises ``InvalidURL``.

    Cached: an attempt never parses the same URL twice.
    """
    if not isinstance(value, str):
        raise InvalidURL(f"must be a string, got {type(value).__name__}")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidURL("must not contain whitespace or control characters")
    try:
        url = yarl.URL(value)
        port = url.port
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InvalidURL(f"is not a valid URL: {exc}") from exc
    scheme = (url.scheme or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(f"must use http or https, got scheme {url.scheme!r}")
    host = url.raw_host
    if not host:
        raise InvalidURL("must include a host")
    if port == 0:
        raise InvalidURL("port 0 is not a valid destination")
    host = host.lower()
    address = _literal(host)
    if address is None:
        _check_name(host)
        address = numeric_host(host)
    return Target(url=url, scheme=scheme, host=host, port=port or DEFAULT_PORTS[scheme], address=address)


def _literal(host):
    """An IPv6 (or dotted IPv4) literal, refusing zone indexes."""
    if ":" not in host:
        return None
    if "%" in host:
        raise InvalidURL(f"host {host!r}: an IPv6 zone index is not allowed")
    try:
        return ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise InvalidURL(f"host {host!r} is not a valid IPv6 address") from exc


def _check_name(host):
    if not host.isascii():
        raise InvalidURL(f"host {host!r} is not a valid host name")
    name = host[:-1] if host.endswith(".") else host
    if len(name) > MAX_HOST_LENGTH or not name or not all(_LABEL.match(label) for label in name.split(".")):
        raise InvalidURL(f"host {host!r} is not a valid host name (letters, digits, '-' and '_' in dot-separated labels)")
