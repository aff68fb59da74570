"""The callbacks_api: block."""

import pytest

from salt_callbacks.api.config import ApiConfig, key_file_path
from salt_callbacks.exceptions import ConfigError


def test_plain_http_needs_only_a_port_and_disable_ssl():
    config, unknown = ApiConfig.from_mapping({"port": 8100, "disable_ssl": True})
    assert (config.host, config.port, config.disable_ssl, config.page_size, unknown) == ("0.0.0.0", 8100, True, 100, [])


def test_https_is_the_default_and_needs_a_certificate_and_key():
    with pytest.raises(ConfigError, match="ssl_crt and ssl_key must be set"):
        ApiConfig.from_mapping({"port": 8100})
    config, _ = ApiConfig.from_mapping({"port": 8100, "ssl_crt": "/c.pem", "ssl_key": "/k.pem"})
    assert (config.ssl_crt, config.ssl_key, config.disable_ssl) == ("/c.pem", "/k.pem", False)


def test_every_problem_is_reported_at_once_with_its_key_path():
    with pytest.raises(ConfigError) as caught:
        ApiConfig.from_mapping({"port": 0, "host": "", "disable_ssl": "yes", "page_size": 0, "key_file": 3})
    problems = caught.value.problems
    for key in ("port", "host", "disable_ssl", "page_size", "key_file"):
        assert any(p.startswith(f"callbacks_api:{key} ") for p in problems), (key, problems)


def test_unknown_keys_are_returned_not_fatal():
    _, unknown = ApiConfig.from_mapping({"port": 1, "disable_ssl": True, "prot": 2})
    assert unknown == ["prot"]


def test_the_key_file_defaults_to_the_masters_pki_dir():
    assert key_file_path({"pki_dir": "/etc/salt/pki/master"}) == "/etc/salt/pki/master/callbacks_api.key"
    assert key_file_path({"pki_dir": "/p", "callbacks_api": {"key_file": "/srv/k"}}) == "/srv/k"
    assert key_file_path({"pki_dir": "/p", "callbacks_api": "junk"}) == "/p/callbacks_api.key"
