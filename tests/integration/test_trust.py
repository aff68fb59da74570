"""Nothing a caller or a minion hands over reaches past what it names (issue 14):
store keys checked at the runner (14.3), raw command lines without YAML
aliases (14.4), on the shared master and minions."""

import json
import re
import secrets
import time
import uuid

import pytest
import salt.cache

from tests.support.attacks import BOMB

from tests.integration.helpers import get_record, run_ok

pytestmark = pytest.mark.integration


def new_hook(receiver):
    path = "/trust/" + uuid.uuid4().hex
    return path, receiver.url(path)


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
    since = time.time()
    before = len(run_ok(salt_run, "callbacks.list", "limit=100000"))
    error = refused(salt_run, "callbacks.execute_raw", minion.id, f"test.arg '{BOMB}'", "callback_url=http://127.0.0.1:9/x")
    assert error.startswith("command: ") and "anchors and aliases" in error
    assert len(run_ok(salt_run, "callbacks.list", "limit=100000")) == before
    assert not event_listener.get_events([(master.id, "salt/job/*/new")], after_time=since)


# -- 14.2: nothing a minion fires changes what the engine does --------------------------


def minion_fires(minion, tag, data):
    """``salt-call event.send`` on the minion: the event reaches the master bus
    under ``tag`` with ``data``'s keys at the top level (the issue's attack)."""
    ret = minion.salt_call_cli(timeout=60).run("event.send", tag, f"preload={json.dumps(data)}")
    assert ret.returncode == 0, ret.stderr


def test_what_a_minion_fires_registers_nothing_sends_nothing_and_redelivers_nothing(
        salt_run, master, receiver, minion, minion_2, down_minion, event_listener):
    done_path, done_url = new_hook(receiver)
    done = run_ok(salt_run, "callbacks.execute", minion_2.id, "test.ping", f"callback_url={done_url}")
    receiver.wait_for(done_path, 1)
    waiting_path, waiting_url = new_hook(receiver)
    waiting = run_ok(salt_run, "callbacks.execute", down_minion.id, "test.ping", f"callback_url={waiting_url}",
                     "callback_timeout=600")
    evil_path, evil_url = new_hook(receiver)
    forged_jid = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "123456"
    forged_ret = {"cmd": "_return", "id": down_minion.id, "jid": waiting["jid"], "fun": "test.ping", "fun_args": [],
                  "return": "FORGED", "retcode": 0, "success": True}

    # A new job of the attacker's making, signed for alice, to the attacker's URL:
    minion_fires(minion, f"salt/job/{forged_jid}/new", {"jid": forged_jid, "minions": [minion_2.id], "user": "alice",
                                                        "tgt": minion_2.id, "fun": "test.ping", "arg": []})
    minion_fires(minion, f"salt/job/{forged_jid}/publish", {
        "jid": forged_jid, "fun": "test.ping", "arg": [], "tgt": minion_2.id, "tgt_type": "glob", "user": "alice",
        "ret": "", "metadata": {"callback_url": evil_url, "callback_timeout": 1}})
    # The same for a job the runner published (its record exists, delivered):
    minion_fires(minion, f"salt/job/{done['jid']}/publish", {"jid": done["jid"], "user": "alice",
                                                              "metadata": {"callback_url": evil_url}})
    # Another device's result, for a record still waiting:
    minion_fires(minion, f"salt/job/{waiting['jid']}/ret/{down_minion.id}", forged_ret)
    master.salt_cli(timeout=60).run("event.send", f"salt/job/{waiting['jid']}/ret/{down_minion.id}",
                                    f"data={json.dumps(forged_ret)}", minion_tgt=minion.id)
    # The minion's own "return" for that job: the master fires it under the minion's own tag.
    minion_fires(minion, "x", dict(forged_ret, id=minion.id))
    # And three redeliveries of the delivered record:
    for _ in range(3):
        minion_fires(minion, f"salt/callbacks/{done['jid']}/{minion_2.id}/redeliver",
                     {"jid": done["jid"], "device_id": minion_2.id})

    # A genuine job after them all: once its webhook is in, the engine has seen every event before it.
    last_path, last_url = new_hook(receiver)
    run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={last_url}")
    receiver.wait_for(last_path, 1)
    assert len(receiver.settle(done_path, 2)) == 1  # not redelivered
    assert receiver.settle(waiting_path, 1) == []  # no forged COMMAND_EXECUTED
    assert receiver.settle(evil_path, 2) == []  # nothing registered, not even a TIMEOUT after 1 s
    assert "no callback record" in refused(salt_run, "callbacks.get", minion_2.id, forged_jid)
    assert get_record(salt_run, down_minion.id, waiting["jid"])["sent_requests"] == []
    assert [r["url"] for r in [get_record(salt_run, minion_2.id, done["jid"])]] == [done_url]
    with open(master.config["log_file"], encoding="utf-8") as log:
        text = log.read()
    assert f"ignoring a publish event for job {forged_jid}" in text
    assert "not signed by this master's runner" in text


def test_the_runners_own_redelivery_still_goes_out(salt_run, receiver, minion):
    path, url = new_hook(receiver)
    published = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    assert run_ok(salt_run, "callbacks.redeliver", minion.id, published["jid"])["redelivery"] == "queued"
    assert len(receiver.wait_for(path, 2)) == 2


def test_the_request_key_file_is_the_master_users_alone(master):
    import os  # pylint: disable=import-outside-toplevel
    import stat  # pylint: disable=import-outside-toplevel

    mode = os.stat(os.path.join(master.config["pki_dir"], "callbacks_requests.key")).st_mode
    assert stat.S_IMODE(mode) == 0o600
