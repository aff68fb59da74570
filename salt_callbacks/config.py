"""The ``callbacks:`` block of the master config, validated once into a frozen object.

``CallbacksConfig.from_mapping()`` reports every problem at once, each with the
key's path (``callbacks:retry_delays[2] must be a number >= 0``), so an operator
fixes the whole block in one go. Unknown keys are not errors (a typo must not
stop a master), but they are returned so the engine and runner can log them.

``KEYS`` is the one documented list of settings; the README's configuration
table mirrors it.
"""

import dataclasses
import ipaddress
import math
from typing import Mapping

from salt_callbacks.exceptions import ConfigError
from salt_callbacks.redis_config import REDIS_KEYS, RedisSettings, settings_from_block

#: Settings, their defaults and a one-line meaning. Keep the README table in step.
KEYS = {
    "secrets": ({}, "user name -> secret, or [current, previous, ...]; literal or sdb://; 'default' signs for users without their own"),
    "default_timeout": (120, "seconds to wait for a return before TIMEOUT (1..600)"),
    "max_retries": (5, "retries after the first attempt of each payload"),
    "retry_delays": (
        [5, 60, 300, 1800, 7200],
        "seconds before retry 1, 2, ...; the last repeats",
    ),
    "retry_jitter": (0.2, "each retry delay is scaled by a random factor in [1-j, 1+j]"),
    "attempt_timeout": (10, "wall-clock seconds one attempt may take, end to end"),
    "retention": (172800, "seconds a callback record is kept after creation"),
    "store": (
        "auto",
        "where callback records live: auto (redis when the store's cache driver is redis, else embedded), "
        "embedded (a SQLite file), redis, salt_cache",
    ),
    "store_path": (None, "the embedded store's database file (default: <cachedir>/callbacks/callbacks.db)"),
    "cache": (None, "salt.cache driver of the redis and salt_cache stores (default: the master's 'cache')"),
    "max_pending": (100000, "unfinished callback records, all users together, past which new requests are refused"),
    "max_pending_per_user": (None, "unfinished callback records per user past which that user is refused (default: no limit)"),
    "allow_networks": ([], "CIDRs the outbound address guard lets through"),
    "max_concurrency": (200, "deliveries in flight at once, all receivers together"),
    "per_host_limit": (20, "deliveries in flight at once to one receiver host"),
    "max_body_bytes": (1048576, "largest webhook body; a bigger result is replaced by a marker"),
    "coordination": (
        "auto",
        "how engines on several masters agree who delivers: auto (redis when the store is on redis), local, redis",
    ),
    "lease_ttl": (10, "seconds a master's claims outlive its last heartbeat; a dead master's work moves after this"),
    "takeover_interval": (2, "seconds between an engine's scans for callbacks no live master holds"),
    "metrics_port": (None, "port of the engine's Prometheus /metrics, /healthz and /readyz (default: off)"),
    "metrics_host": ("127.0.0.1", "address the metrics port listens on"),
    "redis": (
        None,
        "Redis for the store and the claims: a mapping of " + ", ".join(REDIS_KEYS)
        + "; none: the master's cache.redis.* settings",
    ),
    "admins": ([], "callers who see every record in full: 'name' (system user, salt-run) or 'backend:name' (eauth user)"),
    "ca_bundle": (None, "PEM file of extra CAs trusted for https receivers, beside the system's"),
    "client_cert": (None, "PEM client certificate (and key, unless client_key) for receivers that require one"),
    "client_key": (None, "PEM private key of client_cert"),
    "proxy": (None, "http://host:port of an HTTP proxy for deliveries (https through CONNECT)"),
    "no_proxy": ([], "hosts, domains, addresses or CIDRs delivered to directly (a list or a comma-separated string)"),
    "breaker_failures": (10, "failed attempts in a row that hold a receiver's deliveries and probe it (0: never)"),
    "breaker_probe_after": (5, "seconds before the first probe of a held receiver; doubles per failed probe, to 300"),
}

COORDINATION_MODES = ("auto", "local", "redis")
STORE_KINDS = ("auto", "embedded", "redis", "salt_cache")

MIN_TIMEOUT = 1
MAX_TIMEOUT = 600


@dataclasses.dataclass(frozen=True)
class CallbacksConfig:
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_timeout: int = KEYS["default_timeout"][0]
    max_retries: int = KEYS["max_retries"][0]
    retry_delays: tuple = tuple(KEYS["retry_delays"][0])
    retry_jitter: float = KEYS["retry_jitter"][0]
    attempt_timeout: float = KEYS["attempt_timeout"][0]
    retention: float = KEYS["retention"][0]
    store: str = KEYS["store"][0]
    store_path: str | None = None
    cache: str | None = None
    max_pending: int | None = KEYS["max_pending"][0]
    max_pending_per_user: int | None = None
    allow_networks: tuple = ()
    max_concurrency: int = KEYS["max_concurrency"][0]
    per_host_limit: int = KEYS["per_host_limit"][0]
    max_body_bytes: int = KEYS["max_body_bytes"][0]
    coordination: str = KEYS["coordination"][0]
    lease_ttl: float = KEYS["lease_ttl"][0]
    takeover_interval: float = KEYS["takeover_interval"][0]
    metrics_port: int | None = None
    metrics_host: str = KEYS["metrics_host"][0]
    redis: RedisSettings | None = None  # None: the master's cache.redis.* settings
    admins: tuple = ()
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str | None = None
    no_proxy: tuple = ()
    breaker_failures: int = KEYS["breaker_failures"][0]
    breaker_probe_after: float = KEYS["breaker_probe_after"][0]

    def __repr__(self):
        # Secrets never reach a log line, even through a debug repr of the config.
        fields = [
            f"{f.name}={_redacted_proxy(self.proxy) if f.name == 'proxy' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name != "secrets"
        ]
        return f"CallbacksConfig(secrets=<{len(self.secrets)} users>, {', '.join(fields)})"

    @classmethod
    def from_mapping(cls, block):
        """Validate a ``callbacks:`` mapping. Returns ``(config, unknown_keys)``.

        Raises ``ConfigError`` listing every invalid value.
        """
        if block is None:
            block = {}
        if not isinstance(block, Mapping):
            raise ConfigError([f"callbacks must be a mapping, got {type(block).__name__}"])
        problems = []
        unknown = sorted(str(key) for key in block if key not in KEYS)
        values = {}

        def get(key):
            return block[key] if key in block else KEYS[key][0]

        values["secrets"] = _secrets(get("secrets"), problems)
        values["default_timeout"] = _int(
            "default_timeout", get("default_timeout"), problems, MIN_TIMEOUT, MAX_TIMEOUT
        )
        values["max_retries"] = _int("max_retries", get("max_retries"), problems, 0, 100)
        values["retry_delays"] = _delays(get("retry_delays"), problems)
        values["retry_jitter"] = _number("retry_jitter", get("retry_jitter"), problems, 0, 1)
        values["attempt_timeout"] = _number(
            "attempt_timeout", get("attempt_timeout"), problems, 0.001, 3600
        )
        values["retention"] = _number("retention", get("retention"), problems, 1, None)
        values["store"] = _choice("store", get("store"), problems, STORE_KINDS)
        values["store_path"] = _optional_str("store_path", get("store_path"), problems)
        values["cache"] = _optional_str("cache", get("cache"), problems)
        values["max_pending"] = _optional_int("max_pending", get("max_pending"), problems, 1, 10**9)
        values["max_pending_per_user"] = _optional_int(
            "max_pending_per_user", get("max_pending_per_user"), problems, 1, 10**9)
        values["allow_networks"] = _networks(get("allow_networks"), problems)
        values["max_concurrency"] = _int(
            "max_concurrency", get("max_concurrency"), problems, 1, 100000
        )
        values["per_host_limit"] = _int("per_host_limit", get("per_host_limit"), problems, 1, 100000)
        values["max_body_bytes"] = _int("max_body_bytes", get("max_body_bytes"), problems, 4096, 64 * 1024 * 1024)
        values["coordination"] = _choice("coordination", get("coordination"), problems, COORDINATION_MODES)
        values["lease_ttl"] = _number("lease_ttl", get("lease_ttl"), problems, 1, 600)
        values["takeover_interval"] = _number("takeover_interval", get("takeover_interval"), problems, 0.1, 600)
        port = get("metrics_port")
        values["metrics_port"] = None if port is None else _int("metrics_port", port, problems, 1, 65535)
        values["metrics_host"] = _host("metrics_host", get("metrics_host"), problems)
        redis = get("redis")
        values["redis"] = None if redis is None else settings_from_block(redis, problems)
        values["admins"] = _admins(get("admins"), problems)
        values.update(_transport(get, problems))
        values["breaker_failures"] = _int("breaker_failures", get("breaker_failures"), problems, 0, 100000)
        values["breaker_probe_after"] = _number("breaker_probe_after", get("breaker_probe_after"), problems, 0.1, 300)
        if problems:
            raise ConfigError(problems)
        return cls(**values), unknown

    @classmethod
    def from_opts(cls, opts):
        """Validate ``opts["callbacks"]`` (master opts). Returns ``(config, unknown_keys)``."""
        return cls.from_mapping(opts.get("callbacks"))


def unknown_keys_message(unknown):
    """The log line for misspelt keys: names them and every valid key."""
    return "unknown key(s) under callbacks: {}; they are ignored. Valid keys: {}".format(
        ", ".join(unknown), ", ".join(sorted(KEYS))
    )


def _is_number(value):
    # bool is an int subclass; ``max_retries: true`` is a mistake, not 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds_text(low, high):
    if high is None:
        return f">= {low}"
    return f"between {low} and {high}"


def _int(key, value, problems, low, high):
    if not (isinstance(value, int) and not isinstance(value, bool)) or not low <= value <= high:
        problems.append(f"callbacks:{key} must be an integer {_bounds_text(low, high)}, got {value!r}")
        return KEYS[key][0]
    return value


def _optional_int(key, value, problems, low, high):
    if value is None:
        return None
    if not (isinstance(value, int) and not isinstance(value, bool)) or not low <= value <= high:
        problems.append(f"callbacks:{key} must be an integer {_bounds_text(low, high)}, or null for no limit, "
                        f"got {value!r}")
        return KEYS[key][0]
    return value


def _number(key, value, problems, low, high):
    if not _is_number(value) or value < low or (high is not None and value > high):
        problems.append(f"callbacks:{key} must be a number {_bounds_text(low, high)}, got {value!r}")
        return KEYS[key][0]
    return value


def _optional_str(key, value, problems):
    if value is not None and (not isinstance(value, str) or not value):
        problems.append(f"callbacks:{key} must be a non-empty string or null, got {value!r}")
        return None
    return value


def _choice(key, value, problems, choices):
    if value not in choices:
        problems.append(f"callbacks:{key} must be one of {', '.join(choices)}, got {value!r}")
        return KEYS[key][0]
    return value


def _host(key, value, problems):
    if not isinstance(value, str) or not value.strip() or any(ch.isspace() for ch in value):
        problems.append(f"callbacks:{key} must be a host name or IP address, got {value!r}")
        return KEYS[key][0]
    return value


def _delays(value, problems):
    if not isinstance(value, (list, tuple)) or not value:
        problems.append(f"callbacks:retry_delays must be a non-empty list of seconds, got {value!r}")
        return tuple(KEYS["retry_delays"][0])
    delays = []
    for index, delay in enumerate(value):
        if not _is_number(delay) or delay < 0:
            problems.append(f"callbacks:retry_delays[{index}] must be a number >= 0, got {delay!r}")
        else:
            delays.append(float(delay))
    return tuple(delays)


def _secrets(value, problems):
    if not isinstance(value, Mapping):
        problems.append("callbacks:secrets must be a mapping of user name to secret")
        return {}
    secrets = {}
    for user, spec in value.items():
        if str(user).startswith("sealed:"):
            # Records of the HTTP API name their signer "sealed:..." (see sealing.py).
            problems.append(f"callbacks:secrets:{user}: user names starting with 'sealed:' are reserved")
            continue
        # Messages name the user and the position, never the secret.
        items = spec if isinstance(spec, (list, tuple)) else [spec]
        bad = [i for i, item in enumerate(items) if _secret_problem(item)]
        if not items or bad:
            where = f"callbacks:secrets:{user}" + (f"[{bad[0]}]" if isinstance(spec, (list, tuple)) and bad else "")
            reason = _secret_problem(items[bad[0]]) if bad else "must not be an empty list"
            problems.append(f"{where} {reason}")
            continue
        secrets[str(user)] = list(items) if isinstance(spec, (list, tuple)) else spec
    return secrets


def _secret_problem(item):
    if not isinstance(item, str) or not item:
        return "must be a non-empty string (or a list of them: current key first)"
    if item.startswith("whsec_"):
        import base64  # pylint: disable=import-outside-toplevel
        import binascii  # pylint: disable=import-outside-toplevel

        try:
            if not base64.b64decode(item[len("whsec_"):], validate=True):
                return "is a whsec_ secret with no key bytes"
        except (binascii.Error, ValueError):
            return "is a whsec_ secret whose part after whsec_ is not valid base64"
    return None


def _networks(value, problems):
    if not isinstance(value, (list, tuple)):
        problems.append(f"callbacks:allow_networks must be a list of CIDRs, got {value!r}")
        return ()
    networks = []
    for index, cidr in enumerate(value):
        try:
            networks.append(ipaddress.ip_network(str(cidr), strict=False))
        except ValueError:
            problems.append(f"callbacks:allow_networks[{index}] is not a CIDR: {cidr!r}")
    return tuple(networks)


def _admins(value, problems):
    if not isinstance(value, (list, tuple)):
        problems.append(f"callbacks:admins must be a list of 'name' or 'backend:name', got {value!r}")
        return ()
    admins = []
    for index, entry in enumerate(value):
        backend, sep, name = entry.partition(":") if isinstance(entry, str) else ("", "", "")
        if not isinstance(entry, str) or not entry.strip() or entry != entry.strip() or (sep and not (backend and name)):
            problems.append(f"callbacks:admins[{index}] must be 'name' or 'backend:name' (e.g. pam:alice), got {entry!r}")
        else:
            admins.append(entry)
    return tuple(admins)


def _transport(get, problems):
    """TLS files (loaded, and so checked, when the engine builds its transport),
    the proxy and ``no_proxy``."""
    from salt_callbacks.delivery import proxy  # pylint: disable=import-outside-toplevel

    values = {key: _optional_str(key, get(key), problems) for key in ("ca_bundle", "client_cert", "client_key")}
    if values["client_key"] is not None and values["client_cert"] is None:
        problems.append("callbacks:client_key is set without callbacks:client_cert (the certificate it belongs to)")
    values["proxy"] = get("proxy")
    if values["proxy"] is not None:
        try:
            proxy.parse_proxy(values["proxy"])
        except ValueError as exc:
            problems.append(f"callbacks:proxy {exc}")
            values["proxy"] = None
    try:
        everything, names, networks = proxy.parse_no_proxy(get("no_proxy"))
        values["no_proxy"] = (("*",) if everything else ()) + names + tuple(str(n) for n in networks)
    except ValueError as exc:
        problems.append(f"callbacks:no_proxy{exc if str(exc).startswith('[') else ' ' + str(exc)}")
        values["no_proxy"] = ()
    return values


def _redacted_proxy(value):
    if not value or "@" not in value:
        return value
    scheme, _, rest = value.partition("://")
    return f"{scheme}://<credentials>@{rest.rsplit('@', 1)[1]}"
