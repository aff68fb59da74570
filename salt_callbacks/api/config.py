"""The ``callbacks_api:`` block of the master config: the HTTP API's settings.

Validated once into a frozen object, every problem reported at once with its
key path, like ``callbacks:`` (see config.py). The webhook settings
(retries, timeouts, the address guard) stay in ``callbacks:``; this block is
only about serving HTTP and the key file that seals callers' tokens.
"""

import dataclasses
import os
import urllib.parse
from typing import Mapping

from salt_callbacks.exceptions import ConfigError

BLOCK = "callbacks_api"
DEFAULT_KEY_FILE_NAME = "callbacks_api.key"

#: Settings, their defaults and a one-line meaning. Keep the README table in step.
KEYS = {
    "port": (None, "TCP port to listen on (required)"),
    "host": ("0.0.0.0", "address to listen on"),
    "ssl_crt": (None, "path to the TLS certificate (PEM; may hold the chain)"),
    "ssl_key": (None, "path to the TLS private key (PEM)"),
    "disable_ssl": (False, "serve plain HTTP (local use, or behind a TLS proxy)"),
    "key_file": (None, "key file that seals callers' tokens at rest (default: <pki_dir>/callbacks_api.key)"),
    "page_size": (100, "devices per page of GET /dongle/devices/ when ?page_size= is not given"),
    "public_url": (None, "the API's address as clients reach it (https://host[:port][/prefix]), for pagination links; unset: relative links"),
    "login_rate": (10, "login attempts per client address per minute (bursts as large); more get HTTP 429 with Retry-After"),
}
MAX_PAGE_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    port: int
    host: str = KEYS["host"][0]
    ssl_crt: str | None = None
    ssl_key: str | None = None
    disable_ssl: bool = False
    key_file: str | None = None
    page_size: int = KEYS["page_size"][0]
    public_url: str | None = None
    login_rate: int = KEYS["login_rate"][0]

    @classmethod
    def from_mapping(cls, block):
        """Validate a ``callbacks_api:`` mapping. Returns ``(config, unknown_keys)``;
        raises ``ConfigError`` listing every invalid value."""
        if not isinstance(block, Mapping):
            raise ConfigError([f"{BLOCK} must be a mapping, got {type(block).__name__}"])
        problems = []
        unknown = sorted(str(key) for key in block if key not in KEYS)

        def get(key):
            return block[key] if key in block else KEYS[key][0]

        port = get("port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not (isinstance(port, int) and not isinstance(port, bool)) or not 1 <= port <= 65535:
            problems.append(f"{BLOCK}:port must be an integer between 1 and 65535, got {get('port')!r}")
        host = get("host")
        if not isinstance(host, str) or not host:
            problems.append(f"{BLOCK}:host must be a non-empty address, got {host!r}")
        disable_ssl = get("disable_ssl")
        if not isinstance(disable_ssl, bool):
            problems.append(f"{BLOCK}:disable_ssl must be true or false, got {disable_ssl!r}")
        paths = {}
        for key in ("ssl_crt", "ssl_key", "key_file"):
            value = get(key)
            if value is not None and (not isinstance(value, str) or not value):
                problems.append(f"{BLOCK}:{key} must be a file path, got {value!r}")
                value = None
            paths[key] = value
        if disable_ssl is False:
            missing = [key for key in ("ssl_crt", "ssl_key") if paths[key] is None]
            if missing:
                problems.append(
                    f"{BLOCK}:{' and '.join(missing)} must be set to serve HTTPS "
                    f"(or set {BLOCK}:disable_ssl: true for plain HTTP)"
                )
        page_size = get("page_size")
        if not (isinstance(page_size, int) and not isinstance(page_size, bool)) or not 1 <= page_size <= MAX_PAGE_SIZE:
            problems.append(f"{BLOCK}:page_size must be an integer between 1 and {MAX_PAGE_SIZE}, got {page_size!r}")
        public_url = _public_url(get("public_url"), problems)
        login_rate = get("login_rate")
        if not (isinstance(login_rate, int) and not isinstance(login_rate, bool)) or not 1 <= login_rate <= 100000:
            problems.append(f"{BLOCK}:login_rate must be an integer between 1 and 100000, got {login_rate!r}")
        if problems:
            raise ConfigError(problems)
        return cls(port=port, host=host, disable_ssl=disable_ssl, page_size=page_size, public_url=public_url,
                   login_rate=login_rate, **paths), unknown

    @classmethod
    def from_opts(cls, opts):
        return cls.from_mapping(opts.get(BLOCK) if opts.get(BLOCK) is not None else {})


def _public_url(value, problems):
    if value is None:
        return None
    try:
        parts = urllib.parse.urlsplit(value) if isinstance(value, str) else None
        ok = (parts is not None and parts.scheme in ("http", "https") and parts.hostname
              and not parts.query and not parts.fragment and "@" not in parts.netloc)
        parts is not None and parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        ok = False
    if not ok:
        problems.append(f"{BLOCK}:public_url must be an http(s) URL with a host and no query, "
                        f"e.g. https://salt.example.com:8100, got {value!r}")
        return None
    return value.rstrip("/")


def key_file_path(opts):
    """Where the sealing key lives. The engine reads this too, without needing
    the rest of the block to be valid (it may run on a master with no API)."""
    block = opts.get(BLOCK)
    configured = block.get("key_file") if isinstance(block, Mapping) else None
    if isinstance(configured, str) and configured:
        return configured
    return os.path.join(opts["pki_dir"], DEFAULT_KEY_FILE_NAME)


def unknown_keys_message(unknown):
    return "unknown key(s) under {}: {}; they are ignored. Valid keys: {}".format(
        BLOCK, ", ".join(unknown), ", ".join(sorted(KEYS))
    )
