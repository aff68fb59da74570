"""The ``callbacks:`` block: defaults, one report of every problem, unknown keys, no secret leaks."""

import ipaddress

import pytest

from salt_callbacks.config import KEYS, CallbacksConfig, unknown_keys_message
from salt_callbacks.exceptions import CallbackError, ConfigError


def test_an_absent_block_gives_the_documented_defaults():
    config, unknown = CallbacksConfig.from_mapping(None)

    assert unknown == []
    assert config.secrets == {}
    assert config.default_timeout == 120
    assert config.max_retries == 5
    assert config.retry_delays == (5, 60, 300, 1800, 7200)
    assert config.retry_jitter == 0.2
    assert config.attempt_timeout == 10
    assert config.retention == 172800
    assert config.cache is None
    assert config.allow_networks == ()
    assert config.max_concurrency == 200
    assert config.per_host_limit == 20
    assert config.max_body_bytes == 1048576


def test_an_empty_block_and_an_absent_block_are_the_same_config():
    assert CallbacksConfig.from_mapping({})[0] == CallbacksConfig.from_mapping(None)[0]


def test_from_opts_reads_the_callbacks_key_of_master_opts():
    config, _ = CallbacksConfig.from_opts({"callbacks": {"default_timeout": 30}, "cache": "localfs"})

    assert config.default_timeout == 30


def test_from_opts_without_a_callbacks_key_gives_defaults():
    config, unknown = CallbacksConfig.from_opts({"cache": "localfs"})

    assert config.default_timeout == KEYS["default_timeout"][0]
    assert unknown == []


def test_every_documented_key_has_a_field_and_a_meaning():
    fields = {f for f in CallbacksConfig.__dataclass_fields__}

    assert set(KEYS) == fields
    assert all(isinstance(meaning, str) and meaning for _, meaning in KEYS.values())


def test_valid_values_are_kept():
    config, unknown = CallbacksConfig.from_mapping(
        {
            "secrets": {"alice": "a-secret", "default": "d-secret"},
            "default_timeout": 600,
            "max_retries": 2,
            "retry_delays": [1, 2.5],
            "retry_jitter": 0,
            "attempt_timeout": 0.5,
            "retention": 60,
            "cache": "redis",
            "allow_networks": ["10.0.0.0/8", "::1"],
            "max_concurrency": 5,
            "per_host_limit": 1,
            "max_body_bytes": 4096,
        }
    )

    assert unknown == []
    assert config.secrets == {"alice": "a-secret", "default": "d-secret"}
    assert config.default_timeout == 600
    assert config.max_retries == 2
    assert config.retry_delays == (1.0, 2.5)
    assert config.retry_jitter == 0
    assert config.attempt_timeout == 0.5
    assert config.retention == 60
    assert config.cache == "redis"
    assert config.allow_networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert config.max_concurrency == 5
    assert config.per_host_limit == 1
    assert config.max_body_bytes == 4096


def test_every_invalid_value_is_reported_at_once_with_its_key_path():
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping(
            {
                "secrets": {"bob": ""},
                "default_timeout": 0,
                "max_retries": -1,
                "retry_delays": [5, 60, -1, "soon"],
                "retry_jitter": 1.5,
                "attempt_timeout": 0,
                "retention": 0,
                "cache": "",
                "allow_networks": ["10.0.0.0/8", "not-a-net"],
                "max_concurrency": 0,
                "per_host_limit": "20",
                "max_body_bytes": 4095,
            }
        )

    problems = caught.value.problems
    assert problems == [
        "callbacks:secrets:bob must be a non-empty string (or a list of them: current key first)",
        "callbacks:default_timeout must be an integer between 1 and 600, got 0",
        "callbacks:max_retries must be an integer between 0 and 100, got -1",
        "callbacks:retry_delays[2] must be a number >= 0, got -1",
        "callbacks:retry_delays[3] must be a number >= 0, got 'soon'",
        "callbacks:retry_jitter must be a number between 0 and 1, got 1.5",
        "callbacks:attempt_timeout must be a number between 0.001 and 3600, got 0",
        "callbacks:retention must be a number >= 1, got 0",
        "callbacks:cache must be a non-empty string or null, got ''",
        "callbacks:allow_networks[1] is not a CIDR: 'not-a-net'",
        "callbacks:max_concurrency must be an integer between 1 and 100000, got 0",
        "callbacks:per_host_limit must be an integer between 1 and 100000, got '20'",
        "callbacks:max_body_bytes must be an integer between 4096 and 67108864, got 4095",
    ]
    # The exception's message carries them all too, for a log line.
    for problem in problems:
        assert problem in str(caught.value)


def test_config_error_is_a_callback_error():
    with pytest.raises(CallbackError):
        CallbacksConfig.from_mapping({"default_timeout": 601})


@pytest.mark.parametrize(
    "block, expected",
    [
        ({"retry_delays": []}, "callbacks:retry_delays must be a non-empty list of seconds, got []"),
        ({"retry_delays": 5}, "callbacks:retry_delays must be a non-empty list of seconds, got 5"),
        ({"retry_delays": [1, float("nan")]}, "callbacks:retry_delays[1] must be a number >= 0, got nan"),
        ({"retry_delays": [True]}, "callbacks:retry_delays[0] must be a number >= 0, got True"),
        ({"secrets": ["a"]}, "callbacks:secrets must be a mapping of user name to secret"),
        ({"allow_networks": "10.0.0.0/8"}, "callbacks:allow_networks must be a list of CIDRs, got '10.0.0.0/8'"),
        ({"retry_jitter": float("inf")}, "callbacks:retry_jitter must be a number between 0 and 1, got inf"),
        ({"default_timeout": 30.0}, "callbacks:default_timeout must be an integer between 1 and 600, got 30.0"),
    ],
)
def test_each_kind_of_invalid_value_has_its_own_message(block, expected):
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping(block)

    assert caught.value.problems == [expected]


def test_a_block_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping(["secrets"])

    assert caught.value.problems == ["callbacks must be a mapping, got list"]


def test_max_retries_true_is_rejected_because_a_bool_is_not_an_integer():
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping({"max_retries": True})

    assert caught.value.problems == ["callbacks:max_retries must be an integer between 0 and 100, got True"]


def test_an_explicit_zero_for_max_retries_is_kept_not_replaced_by_the_default():
    config, _ = CallbacksConfig.from_mapping({"max_retries": 0})

    assert config.max_retries == 0


def test_an_explicit_zero_jitter_and_zero_delay_are_kept():
    config, _ = CallbacksConfig.from_mapping({"retry_jitter": 0, "retry_delays": [0]})

    assert config.retry_jitter == 0
    assert config.retry_delays == (0.0,)


def test_unknown_keys_are_returned_sorted_and_are_not_errors():
    config, unknown = CallbacksConfig.from_mapping({"max_retry": 3, "defualt_timeout": 5, "max_retries": 1})

    assert unknown == ["defualt_timeout", "max_retry"]
    assert config.max_retries == 1
    assert config.default_timeout == 120


def test_unknown_keys_message_names_the_unknown_keys_and_every_valid_key():
    message = unknown_keys_message(["defualt_timeout", "max_retry"])

    assert "defualt_timeout, max_retry" in message
    assert "ignored" in message
    valid = message.split("Valid keys: ", 1)[1]
    assert valid == ", ".join(sorted(KEYS))


def test_the_repr_never_contains_a_secret():
    config, _ = CallbacksConfig.from_mapping(
        {"secrets": {"alice": "alice-very-secret", "default": "default-very-secret"}}
    )

    text = repr(config)
    assert "very-secret" not in text
    assert str(config) == text
    assert "secrets=<2 users>" in text
    assert "default_timeout=120" in text


def test_config_errors_name_the_user_but_never_a_secret():
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping(
            {"secrets": {"alice": "alice-very-secret", "bob": 12345678}, "default_timeout": 0}
        )

    text = str(caught.value)
    assert "callbacks:secrets:bob must be a non-empty string" in text
    assert "alice-very-secret" not in text
    assert "12345678" not in text


def test_the_config_is_frozen():
    config, _ = CallbacksConfig.from_mapping({})

    with pytest.raises(AttributeError):
        config.max_retries = 9  # type: ignore[misc]


def test_coordination_defaults_follow_the_store_and_bad_values_are_reported_together():
    config, _ = CallbacksConfig.from_mapping({})
    assert (config.coordination, config.lease_ttl, config.takeover_interval) == ("auto", 10, 2)
    with pytest.raises(ConfigError) as caught:
        CallbacksConfig.from_mapping({"coordination": "zookeeper", "lease_ttl": 0, "takeover_interval": "2"})
    problems = caught.value.problems
    assert "callbacks:coordination must be one of auto, local, redis, got 'zookeeper'" in problems
    assert any(p.startswith("callbacks:lease_ttl must be a number between 1 and 600") for p in problems)
    assert any(p.startswith("callbacks:takeover_interval must be a number") for p in problems)
