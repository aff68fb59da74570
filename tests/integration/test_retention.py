"""A master with a short retention: records expire and pending work is dropped.
Its config also carries a misspelt key, which must be reported, not fatal."""

import contextlib
import sqlite3
import time

import pytest

from tests.integration.helpers import start_master, wait_for_engine
from tests.integration.helpers import run_ok

pytestmark = pytest.mark.integration

RETENTION = 4


@pytest.fixture(scope="module")
def short_master(salt_factories, event_listener):
    factory = start_master(
        salt_factories, event_listener, "cb-short-master", retention=RETENTION, retry_delays=[30], retry_delay=5
    )
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def short_minion(short_master):
    factory = short_master.salt_minion_daemon("cb-short-minion")
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def short_run(short_master, short_minion):
    return short_master.salt_run_cli(timeout=60)


def master_log(master):
    with open(master.config["log_file"], encoding="utf-8", errors="replace") as log:
        return log.read()


def test_a_record_expires_after_the_retention(short_run, receiver, hook, short_minion):
    path, url = hook
    published = run_ok(short_run, "callbacks.execute", short_minion.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    assert run_ok(short_run, "callbacks.get", short_minion.id, published["jid"])["state"] == "COMMAND_EXECUTED"
    time.sleep(RETENTION + 1)
    ret = short_run.run("callbacks.get", short_minion.id, published["jid"])
    assert ret.returncode != 0
    assert "no callback record" in ret.data["error"]
    assert published["jid"] not in [r["jid"] for r in run_ok(short_run, "callbacks.list")]


def test_the_sweep_removes_expired_records_from_the_store(short_master, short_run, receiver, hook, short_minion):
    path, url = hook
    published = run_ok(short_run, "callbacks.execute", short_minion.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    database = f"{short_master.config['cachedir']}/callbacks/callbacks.db"  # the embedded store, the default

    def stored():
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
            return conn.execute("SELECT count(*) FROM records WHERE jid = ? AND device_id = ?",
                                (published["jid"], short_minion.id)).fetchone()[0]

    assert stored() == 1
    deadline = time.monotonic() + RETENTION + 10
    while stored() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stored(), "the engine's sweep did not remove the expired record"


def test_pending_retries_of_an_expired_record_are_dropped_with_a_log_line(short_master, short_run, receiver, hook, short_minion):
    path, url = hook
    receiver.script(path, [500])  # the first retry would come after 30 s, long past the retention
    published = run_ok(short_run, "callbacks.execute", short_minion.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    time.sleep(RETENTION + 4)
    assert len(receiver.at(path)) == 1
    assert f"dropping pending COMMAND_EXECUTED for job {published['jid']}" in master_log(short_master)


def test_a_misspelt_config_key_is_logged_with_the_valid_keys(short_master, short_run):
    run_ok(short_run, "callbacks.list")  # the runner reads (and checks) the config too
    log = master_log(short_master)
    assert "callbacks engine: unknown key(s) under callbacks: retry_delay;" in log
    assert "callbacks runner: unknown key(s) under callbacks: retry_delay;" in log
    assert "Valid keys:" in log and "retry_delays" in log
