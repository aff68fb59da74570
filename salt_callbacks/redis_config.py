"""The ``callbacks: redis:`` block: where the store and the claims find Redis. No Salt imports.

Salt's own redis cache driver (``cache.redis.*``) has no socket timeouts, no
Sentinel, no TLS and no ACL user, so the callback store and the engines'
claims have their own client settings here. When the block is absent the
adapter (``adapters/redis.py``) falls back to the ``cache.redis.*`` settings,
so an existing HA set-up keeps working unchanged.

Keys (``REDIS_KEYS``): ``host``, ``port``, ``db``, ``password``, ``username``
(an ACL user), ``ssl`` (``false``; ``true`` verifies against the system's CAs;
a path verifies against that CA bundle), ``sentinels`` (``["host:port", ...]``:
ask these Sentinels for the primary), ``service_name`` (the Sentinel's name
for the primary, required with ``sentinels``), ``socket_timeout`` (seconds any
one connect, read or write may take).
"""

import dataclasses
import math
from typing import Mapping

#: The keys of ``callbacks: redis:``, their defaults and meanings (README and docs mirror them).
REDIS_KEYS = {
    "host": ("localhost", "Redis host (ignored when sentinels is set)"),
    "port": (6379, "Redis port"),
    "db": (0, "database number"),
    "password": (None, "password (with username: the ACL user's); an sdb:// URI is not resolved here"),
    "username": (None, "ACL user name (Redis 6+)"),
    "ssl": (False, "TLS: false, true (system CAs) or the path of a CA bundle (PEM)"),
    "sentinels": ([], "Sentinels as a list of host:port; when set, the primary is found through them"),
    "service_name": (None, "the Sentinel's name of the primary (required with sentinels)"),
    "socket_timeout": (2.0, "seconds one connect, read or write may take before the call fails"),
}


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    host: str = REDIS_KEYS["host"][0]
    port: int = REDIS_KEYS["port"][0]
    db: int = REDIS_KEYS["db"][0]
    password: str | None = None
    username: str | None = None
    ssl: bool | str = False
    sentinels: tuple = ()  # ((host, port), ...)
    service_name: str | None = None
    socket_timeout: float = REDIS_KEYS["socket_timeout"][0]
    unix_socket_path: str | None = None  # only from cache.redis.unix_socket_path
    source: str = "callbacks:redis"  # where the settings came from, for messages

    def __repr__(self):
        # The password never reaches a log line, even through a debug repr.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "password"}
        return "RedisSettings(password={}, {})".format(
            "<set>" if self.password else None, ", ".join(f"{k}={v!r}" for k, v in shown.items()))

    @property
    def endpoint(self):
        """Where Redis is, for log lines: never the password."""
        if self.sentinels:
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"redis sentinel {self.service_name}@{where} db {self.db}"
        if self.unix_socket_path:
            return f"redis unix:{self.unix_socket_path} db {self.db}"
        return f"redis {self.host}:{self.port} db {self.db}"


def _text(key, value, problems, where):
    if value is not None and (not isinstance(value, str) or not value):
        problems.append(f"{where}:{key} must be a non-empty string or null, got {_shown(key, value)}")
        return None
    return value


def _shown(key, value):
    return "<hidden>" if key == "password" else repr(value)


def _int(key, value, problems, low, high, where):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{where}:{key} must be an integer between {low} and {high}, got {value!r}")
        return REDIS_KEYS[key][0]
    return value


def _host_port(text):
    host, sep, port = str(text).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host, int(port)


def settings_from_block(block, problems, where="callbacks:redis"):
    """Validate a ``callbacks: redis:`` mapping into ``RedisSettings``; appends to
    ``problems`` (each naming its key) and returns None when it is not valid."""
    if not isinstance(block, Mapping):
        problems.append(f"{where} must be a mapping of {', '.join(REDIS_KEYS)}, got {type(block).__name__}")
        return None
    before = len(problems)
    unknown = sorted(str(k) for k in block if k not in REDIS_KEYS)
    if unknown:
        problems.append(f"{where} has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(REDIS_KEYS)}")

    def get(key):
        return block[key] if key in block else REDIS_KEYS[key][0]

    values = {
        "host": _text("host", get("host"), problems, where) or "localhost",
        "port": _int("port", get("port"), problems, 1, 65535, where),
        "db": _int("db", get("db"), problems, 0, 100000, where),
        "password": _text("password", get("password"), problems, where),
        "username": _text("username", get("username"), problems, where),
        "service_name": _text("service_name", get("service_name"), problems, where),
    }
    ssl = get("ssl")
    if not isinstance(ssl, bool) and not (isinstance(ssl, str) and ssl):
        problems.append(f"{where}:ssl must be true, false or the path of a CA bundle, got {ssl!r}")
        ssl = False
    values["ssl"] = ssl
    timeout = get("socket_timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or not 0.05 <= timeout <= 60:
        problems.append(f"{where}:socket_timeout must be a number of seconds between 0.05 and 60, got {timeout!r}")
        timeout = REDIS_KEYS["socket_timeout"][0]
    values["socket_timeout"] = float(timeout)
    sentinels = get("sentinels")
    parsed = []
    if not isinstance(sentinels, (list, tuple)):
        problems.append(f"{where}:sentinels must be a list of host:port, got {sentinels!r}")
    else:
        for index, item in enumerate(sentinels):
            host_port = _host_port(item) if isinstance(item, str) else None
            if host_port is None:
                problems.append(f"{where}:sentinels[{index}] must be host:port, got {item!r}")
            else:
                parsed.append(host_port)
    values["sentinels"] = tuple(parsed)
    if parsed and not values["service_name"]:
        problems.append(f"{where}:service_name must name the Sentinel's primary when sentinels is set")
    if values["username"] and not values["password"]:
        problems.append(f"{where}:username needs a password (the ACL user's)")
    if len(problems) > before:
        return None
    return RedisSettings(**values, source=where)
