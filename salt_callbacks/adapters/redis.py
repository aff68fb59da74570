"""Redis connection settings and clients, read from Salt's ``cache.redis.*`` options.

This module imports no Salt itself: it reads master opts. It lives with the
adapters because the settings are Salt's.
"""


def redis_settings(opts):
    """Salt's redis cache driver settings (``cache.redis.*``), with its defaults."""
    return {
        "host": opts.get("cache.redis.host", "localhost"),
        "port": int(opts.get("cache.redis.port", 6379)),
        "db": int(opts.get("cache.redis.db", "0")),
        "password": opts.get("cache.redis.password") or None,
        "unix_socket_path": opts.get("cache.redis.unix_socket_path") or None,
        "cluster_mode": bool(opts.get("cache.redis.cluster_mode", False)),
    }


def redis_endpoint(settings):
    """Where Redis is, for log lines: never the password."""
    if settings["unix_socket_path"]:
        return f"redis unix:{settings['unix_socket_path']} db {settings['db']}"
    return f"redis {settings['host']}:{settings['port']} db {settings['db']}"


def redis_client(settings, timeout=5.0):
    """A client on the same Redis the ``redis`` cache driver uses, for the
    engines' claims. Unlike the driver's own client it has socket timeouts,
    so an unreachable server fails a call instead of hanging it."""
    import redis  # pylint: disable=import-outside-toplevel

    return redis.Redis(
        host=settings["host"],
        port=settings["port"],
        db=settings["db"],
        password=settings["password"],
        unix_socket_path=settings["unix_socket_path"],
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        health_check_interval=30,
    )
