"""``max_pending`` and ``max_pending_per_user`` through a real master: salt-run exits 2
naming the limit, and nothing is stored or published.

Records stay unfinished because their minion never answers (its key is
accepted, it is not running) and the callback timeout is long.
"""

import time

import pytest

from salt_callbacks.model.records import Record
from salt_callbacks.store import EmbeddedStore

from tests.integration.helpers import run_ok, start_master, wait_for_engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def limits_master(salt_factories, event_listener):
    factory = start_master(salt_factories, event_listener, "cb-limits-master", max_pending=3, max_pending_per_user=2)
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def quiet_minion(limits_master):
    """Accepted, then stopped: its callbacks wait for their timeout."""
    factory = limits_master.salt_minion_daemon("cb-limits-quiet")
    with factory.started():
        pass
    return factory


@pytest.fixture(scope="module")
def limits_run(limits_master, quiet_minion):
    return limits_master.salt_run_cli(timeout=60)


def execute(salt_run, minion, hook):
    return salt_run.run("callbacks.execute", minion.id, "test.ping", f"callback_url={hook[1]}", "callback_timeout=600")


def published_jobs(event_listener, master, since):
    return [e for e in event_listener.get_events([(master.id, "salt/job/*/new")], after_time=since)]


def test_past_a_limit_salt_run_exits_2_naming_it_and_nothing_is_published(
        limits_master, limits_run, quiet_minion, hook, event_listener):
    for _ in range(2):
        assert execute(limits_run, quiet_minion, hook).returncode == 0

    since = time.time()
    refused = execute(limits_run, quiet_minion, hook)  # root's third: past max_pending_per_user (2)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.data["error"].startswith("max_pending_per_user: 2 callback record(s) of user ")
    assert "Traceback" not in refused.stderr
    assert len(run_ok(limits_run, "callbacks.list")) == 2
    assert published_jobs(event_listener, limits_master, since) == []

    # Another user's unfinished record, as the HTTP API would store it: 3 in all.
    store = EmbeddedStore(f"{limits_master.config['cachedir']}/callbacks/callbacks.db")
    other = Record(jid="20200101000000000001", device_id=quiet_minion.id, url=hook[1], created=time.time(),
                   timeout=600, command={"command": "test.ping", "arg": [], "returner": None},
                   signer="default", user="bob")
    store.add_job(other.jid, [other], other.created)
    store.close()

    since = time.time()
    refused = execute(limits_run, quiet_minion, hook)
    assert refused.returncode == 2
    assert refused.data["error"].startswith("max_pending: 3 callback record(s) are unfinished")
    assert len(run_ok(limits_run, "callbacks.list")) == 3
    assert published_jobs(event_listener, limits_master, since) == []
