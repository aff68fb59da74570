"""Real salt-master + salt-minions (salt-factories) with the callbacks engine loaded
through the package's ``salt.loader`` entry point: no *_dirs settings anywhere."""

import uuid

import pytest

from tests.support import harness
from tests.support.receivers import Receiver

# Fixed values: this module is imported twice (as conftest and by tests), so
# anything random here would differ between the two copies.
SECRET = "test-secret-3f9c1e7a5b2d4c6e8f0a1b3c5d7e9f21"
ALICE_SECRET = "alice-secret-8e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b"


def callbacks_config(**overrides):
    config = {
        "secrets": {"default": SECRET, "alice": ALICE_SECRET},
        "max_retries": 5,
        "retry_delays": [0.2],
        "retry_jitter": 0,
        "attempt_timeout": 5,
        "allow_networks": ["127.0.0.0/8"],
    }
    config.update(overrides)
    return config


def start_master(salt_factories, event_listener, master_id, salt_overrides=None, **callbacks_overrides):
    overrides = {
        "engines": [{"callbacks": {}}],
        "callbacks": callbacks_config(**callbacks_overrides),
        "log_level_logfile": "debug",
    }
    overrides.update(salt_overrides or {})
    return salt_factories.salt_master_daemon(master_id, overrides=overrides)


def engine_starts(master):
    """How many times the callbacks engine has logged its start in the master log."""
    return harness.engine_starts(master.config["log_file"])


def wait_for_engine(master, starts_before=0, timeout=60):
    """Salt skips an engine it cannot load without a word, so prove ours runs
    (the harness's wait, on a salt-factories master's log)."""
    harness.wait_for_engine(master.config["log_file"], starts_before, timeout)


@pytest.fixture(scope="package")
def receiver():
    with Receiver() as server:
        yield server


@pytest.fixture(scope="package")
def master(salt_factories, event_listener):
    factory = start_master(salt_factories, event_listener, "cb-master")
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="package")
def minion(master):
    factory = master.salt_minion_daemon("cb-minion-1")
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def minion_2(master):
    factory = master.salt_minion_daemon("cb-minion-2")
    with factory.started():
        yield factory


@pytest.fixture(scope="package")
def down_minion(master):
    """A minion whose key is accepted but which is not running: it never answers."""
    factory = master.salt_minion_daemon("cb-down-1")
    with factory.started():
        pass
    return factory


@pytest.fixture(scope="package")
def salt_run(master, minion, minion_2, down_minion):
    return master.salt_run_cli(timeout=60)


@pytest.fixture
def hook(receiver):
    """A fresh callback path per test, so tests never see each other's webhooks."""
    path = "/hook/" + uuid.uuid4().hex
    return path, receiver.url(path)
