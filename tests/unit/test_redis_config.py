"""``callbacks: redis:``: validation naming the key, the cache.redis.* fallback, and the client it builds."""

import pytest
import redis.sentinel

from salt_callbacks.adapters.redis import redis_client, redis_settings
from salt_callbacks.config import CallbacksConfig
from salt_callbacks.exceptions import ConfigError


def config(block):
    return CallbacksConfig.from_mapping({"redis": block})[0]


def problems_of(block):
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping({"redis": block})
    return caught.value.problems if hasattr(caught.value, "problems") else str(caught.value)


def test_every_key_of_the_block_is_read():
    settings = config({"host": "r1", "port": 6380, "db": 2, "password": "pw", "username": "cb", "ssl": "/ca.pem",
                       "sentinels": ["s1:26379", "[::1]:26380"], "service_name": "mymaster",
                       "socket_timeout": 0.5}).redis

    assert (settings.host, settings.port, settings.db, settings.username) == ("r1", 6380, 2, "cb")
    assert settings.ssl == "/ca.pem" and settings.socket_timeout == 0.5
    assert settings.sentinels == (("s1", 26379), ("::1", 26380)) and settings.service_name == "mymaster"
    assert "pw" not in repr(settings) and "pw" not in settings.endpoint


@pytest.mark.parametrize("block, expected", [
    ({"port": 0}, "callbacks:redis:port must be an integer between 1 and 65535, got 0"),
    ({"port": "6379"}, "callbacks:redis:port must be an integer between 1 and 65535, got '6379'"),
    ({"db": -1}, "callbacks:redis:db must be an integer"),
    ({"ssl": ""}, "callbacks:redis:ssl must be true, false or the path of a CA bundle"),
    ({"sentinels": "s1:26379"}, "callbacks:redis:sentinels must be a list of host:port"),
    ({"sentinels": ["s1"], "service_name": "m"}, "callbacks:redis:sentinels[0] must be host:port, got 's1'"),
    ({"sentinels": ["s1:26379"]}, "callbacks:redis:service_name must name the Sentinel's primary"),
    ({"socket_timeout": 0}, "callbacks:redis:socket_timeout must be a number of seconds between 0.05 and 60"),
    ({"username": "cb"}, "callbacks:redis:username needs a password"),
    ({"sentinel": ["s1:26379"]}, "callbacks:redis has unknown key(s) sentinel"),
    ("r1:6379", "callbacks:redis must be a mapping"),
])
def test_a_bad_value_is_refused_naming_its_key(block, expected):
    problems = problems_of(block)

    assert any(expected in problem for problem in problems), problems


def test_a_bad_password_is_named_but_never_shown():
    problems = problems_of({"password": 12345})

    assert any("callbacks:redis:password" in p and "12345" not in p for p in problems), problems


def test_without_the_block_the_masters_cache_redis_settings_are_used():
    opts = {"cache.redis.host": "cachehost", "cache.redis.port": "6390", "cache.redis.db": "3",
            "cache.redis.password": "pw"}
    settings = redis_settings(opts, CallbacksConfig.from_mapping({})[0])

    assert (settings.host, settings.port, settings.db, settings.password) == ("cachehost", 6390, 3, "pw")
    assert settings.socket_timeout == 2.0 and settings.source == "cache.redis"


def test_the_block_wins_over_cache_redis_and_cluster_mode_is_refused_only_without_it():
    opts = {"cache.redis.host": "cachehost", "cache.redis.cluster_mode": True}

    assert redis_settings(opts, config({"host": "blockhost"})).host == "blockhost"
    with pytest.raises(ConfigError, match="cluster_mode is not supported"):
        redis_settings(opts, CallbacksConfig.from_mapping({})[0])


def test_the_client_has_timeouts_health_checks_tls_and_the_acl_user():
    client = redis_client(config({"host": "r1", "username": "cb", "password": "pw", "ssl": "/ca.pem",
                                  "socket_timeout": 0.5}).redis)
    kwargs = client.connection_pool.connection_kwargs

    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["health_check_interval"] > 0
    assert (kwargs["username"], kwargs["password"]) == ("cb", "pw")
    assert kwargs["ssl_ca_certs"] == "/ca.pem" and kwargs["ssl_cert_reqs"] == "required"


def test_with_sentinels_the_client_asks_them_for_the_primary():
    client = redis_client(config({"sentinels": ["s1:26379", "s2:26379"], "service_name": "mymaster",
                                  "socket_timeout": 0.5}).redis)
    pool = client.connection_pool

    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert [s.connection_pool.connection_kwargs["socket_timeout"] for s in pool.sentinel_manager.sentinels] == [0.5, 0.5]
