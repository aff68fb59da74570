"""Redis for the callback store and the engines' claims: the settings and the one client builder.

The settings come from ``callbacks: redis:`` (validated in ``redis_config``)
or, when that block is absent, from Salt's ``cache.redis.*`` options (what the
``redis`` cache driver reads). Either way the client is built here, once, and
unlike the driver's own client it has connect and socket timeouts, health
checks, Sentinel, TLS and ACL users. This module imports no Salt: it reads
master opts; it lives with the adapters because those settings are Salt's.
"""

from salt_callbacks.exceptions import ConfigError
from salt_callbacks.redis_config import REDIS_KEYS, RedisSettings

#: Seconds between the client's health checks (a PING before a command on a connection idle that long).
HEALTH_CHECK_INTERVAL = 15
#: ``cache.redis.*`` layout options of Salt's redis cache driver, with its defaults.
LAYOUT_DEFAULTS = {"banks_prefix": "$BANKS", "keys_prefix": "$KEYS", "timestamp_prefix": "$TSTAMP", "separator": "_"}


def redis_settings(opts, config=None):
    """``RedisSettings`` for the store and the claims: ``callbacks: redis:`` when
    set, else the master's ``cache.redis.*`` settings (with the driver's defaults)."""
    if config is not None and config.redis is not None:
        return config.redis
    if opts.get("cache.redis.cluster_mode"):
        raise ConfigError(["cache.redis.cluster_mode is not supported for the callback store and claims "
                           "(they need one Redis primary, with replicas and Sentinel if you like); "
                           "set callbacks:redis to a standalone or Sentinel-managed Redis"])
    problems = []
    try:
        port, db = int(opts.get("cache.redis.port", 6379)), int(opts.get("cache.redis.db", 0))
    except (TypeError, ValueError):
        problems.append("cache.redis.port and cache.redis.db must be integers")
        port, db = 6379, 0
    if problems:
        raise ConfigError(problems)
    return RedisSettings(
        host=opts.get("cache.redis.host") or "localhost",
        port=port,
        db=db,
        password=opts.get("cache.redis.password") or None,
        unix_socket_path=opts.get("cache.redis.unix_socket_path") or None,
        socket_timeout=REDIS_KEYS["socket_timeout"][0],
        source="cache.redis",
    )


def redis_endpoint(settings):
    """Where Redis is, for log lines: never the password."""
    return settings.endpoint


def layout(opts):
    """The key prefixes Salt's redis cache driver uses (``cache.redis.*_prefix``,
    ``cache.redis.separator``), so the store reads what the driver wrote."""
    sep = opts.get("cache.redis.separator", LAYOUT_DEFAULTS["separator"])
    return {name: opts.get(f"cache.redis.{name}", default) + sep
            for name, default in LAYOUT_DEFAULTS.items() if name != "separator"}


def _connection_kwargs(settings, timeout):
    kwargs = {
        "db": settings.db,
        "password": settings.password,
        "username": settings.username,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry_on_timeout": False,  # a timeout fails the call: the caller decides when to try again
    }
    kwargs.update(_tls_kwargs(settings))
    return kwargs


def _tls_kwargs(settings):
    if settings.ssl is False:
        return {}
    tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if isinstance(settings.ssl, str):
        tls["ssl_ca_certs"] = settings.ssl
    return tls


def redis_client(settings, timeout=None):
    """A ``redis.Redis`` for ``settings``: through Sentinel (``master_for``) when
    sentinels are set, so a failover moves it to the promoted replica. Every
    call is bounded: connect, read and write each fail after ``timeout`` s
    (default: the settings' ``socket_timeout``)."""
    import redis  # pylint: disable=import-outside-toplevel
    import redis.sentinel  # pylint: disable=import-outside-toplevel

    timeout = settings.socket_timeout if timeout is None else timeout
    kwargs = _connection_kwargs(settings, timeout)
    if settings.sentinels:
        sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        sentinel_kwargs.update(_tls_kwargs(settings))
        sentinel = redis.sentinel.Sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **kwargs)
        return sentinel.master_for(settings.service_name, **kwargs)
    if settings.unix_socket_path:
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ssl")}
        return redis.Redis(unix_socket_path=settings.unix_socket_path, **kwargs)
    return redis.Redis(host=settings.host, port=settings.port, **kwargs)
