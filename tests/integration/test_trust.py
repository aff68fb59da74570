"""Nothing a caller or a minion hands over reaches past what it names (issue 14):
store keys checked at the runner (14.3), raw command lines without YAML
aliases (14.4), on the shared master and minions."""

import re
import secrets

import pytest
import salt.cache

from tests.unit.model.test_raw_value import BOMB

from tests.integration.helpers import get_record, run_ok

pytestmark = pytest.mark.integration


def refused(salt_run, *args):
    ret = salt_run.run(*args)
    assert ret.returncode == 2, (ret.returncode, ret.stdout, ret.stderr)
    assert "Traceback" not in ret.stdout + ret.stderr
    return ret.data["error"]


def test_a_jid_that_walks_into_another_devices_record_is_refused_naming_jid(salt_run, receiver, hook, minion, minion_2):
    path, url = hook
    published = run_ok(salt_run, "callbacks.execute", minion_2.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    assert get_record(salt_run, minion_2.id, published["jid"])["device_id"] == minion_2.id  # it is there

    for use_case in ("callbacks.get", "callbacks.redeliver"):
        error = refused(salt_run, use_case, minion.id, f"../{minion_2.id}/{published['jid']}")
        assert error.startswith("jid: ") and minion_2.id not in error.split("got", 1)[0]
    assert len(receiver.settle(path, 1)) == 1  # nothing redelivered


def test_a_jid_that_walks_into_the_token_store_gives_no_existence_oracle(salt_run, master, minion):
    cache = salt.cache.factory(master.config)
    present, absent = secrets.token_hex(32), secrets.token_hex(32)
    cache.store("tokens", present, {"name": "someone", "eauth": "auto", "expire": 4102444800})
    try:
        answers = [re.sub("[0-9a-f]{20,}", "T", refused(salt_run, "callbacks.get", minion.id, f"../../../tokens/{token}"))
                   for token in (present, absent)]
    finally:
        cache.flush("tokens", present)
    assert answers[0] == answers[1]
    assert answers[0].startswith("jid: ")


@pytest.mark.parametrize("device", ["../cb-minion-2", "cb-minion-1/..", "..", "a\\b"])
def test_a_device_with_path_characters_is_refused_naming_device_id(salt_run, minion, device):
    error = refused(salt_run, "callbacks.get", device, "20260101000000000000")
    assert error.startswith("device_id: ")


def test_a_unique_jid_form_is_accepted_as_a_key(salt_run, minion):
    error = refused(salt_run, "callbacks.get", minion.id, "20260101000000000000_4242")
    assert "no callback record" in error


def test_the_yaml_alias_bomb_in_execute_raw_exits_2_naming_command_and_nothing_is_published(
        salt_run, master, minion, event_listener):
    import time  # pylint: disable=import-outside-toplevel

    since = time.time()
    before = len(run_ok(salt_run, "callbacks.list", "limit=100000"))
    error = refused(salt_run, "callbacks.execute_raw", minion.id, f"test.arg '{BOMB}'", "callback_url=http://127.0.0.1:9/x")
    assert error.startswith("command: ") and "anchors and aliases" in error
    assert len(run_ok(salt_run, "callbacks.list", "limit=100000")) == before
    assert not event_listener.get_events([(master.id, "salt/job/*/new")], after_time=since)
