"""Real salt-master + salt-minions (salt-factories) with the callbacks engine loaded
through the package's ``salt.loader`` entry point: no *_dirs settings anywhere."""

import pathlib
import tempfile
import uuid

import pytest
import salt.version

from tests.integration.helpers import start_master, wait_for_engine
from tests.support.receivers import Receiver

@pytest.fixture(scope="session")
def salt_factories_default_root_dir():
    """A root of this checkout's and this Salt release's own: salt-factories
    writes its daemon launch scripts (naming the venv to run) to
    ``<root>/scripts`` once and reuses them, so checkouts sharing /tmp would
    start each other's Salt, and ``make matrix`` (the releases one after the
    other in one checkout) ran every release's daemons on the first one's."""
    checkout = pathlib.Path(__file__).resolve().parents[2].name
    root = pathlib.Path(tempfile.gettempdir()).resolve() / f"sf-{checkout[:24]}-{salt.version.__version__}"
    root.mkdir(exist_ok=True)
    return root


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
