"""AutoPi's behaviour on a real master, minions and HTTP receiver.

Each test asks for a callback through the real ``salt-run`` and watches what
reaches a real receiver on 127.0.0.1.
"""

import time

import pytest

from salt_callbacks.webhook import signing
from tests.integration.helpers import SECRET
from tests.integration.helpers import get_record, run_ok, autopi_signature

pytestmark = pytest.mark.integration

SEED_RETURN_KEYS = {"fun_args", "jid", "return", "retcode", "success", "cmd", "_stamp", "fun", "id"}


def execute(salt_run, device, command, url, *args):
    return run_ok(salt_run, "callbacks.execute", device, command, f"callback_url={url}", *args)


def test_command_executed_webhook_carries_the_result_signed_as_autopis_page_says(salt_run, receiver, hook, minion):
    path, url = hook
    published = execute(salt_run, minion.id, "test.ping", url, "callback_timeout=30")
    assert published["minions"] == [minion.id]

    (request,) = receiver.wait_for(path, 1)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-request-signature"] == autopi_signature(SECRET, request.body)
    assert signing.verify(request.body, request.headers, SECRET, now=time.time())
    body = request.json
    assert list(body) == ["response", "jid", "state", "success", "device_id"]
    assert body["state"] == "COMMAND_EXECUTED"
    assert body["jid"] == published["jid"]
    assert body["device_id"] == minion.id
    assert body["success"] is True
    assert body["response"]["tag"] == f"salt/job/{published['jid']}/ret/{minion.id}"
    data = body["response"]["data"]
    assert SEED_RETURN_KEYS <= set(data)
    assert data["return"] is True
    assert data["fun"] == "test.ping"
    assert data["id"] == minion.id


def test_no_timeout_is_sent_after_a_timely_result(salt_run, receiver, hook, minion):
    path, url = hook
    execute(salt_run, minion.id, "test.ping", url, "callback_timeout=2")
    receiver.wait_for(path, 1)
    states = [r.json["state"] for r in receiver.settle(path, 3)]
    assert states == ["COMMAND_EXECUTED"]


def test_failing_command_reports_success_false(salt_run, receiver, hook, minion):
    path, url = hook
    run_ok(salt_run, "callbacks.execute_raw", minion.id, "cmd.run 'exit 3'", f"callback_url={url}")
    (request,) = receiver.wait_for(path, 1)
    body = request.json
    assert body["state"] == "COMMAND_EXECUTED"
    assert body["success"] is False
    assert body["response"]["data"]["retcode"] == 3


def test_glob_target_writes_one_record_and_sends_one_webhook_per_device(salt_run, receiver, hook, minion, minion_2):
    path, url = hook
    published = execute(salt_run, "cb-minion-*", "test.ping", url)
    assert sorted(published["minions"]) == sorted([minion.id, minion_2.id])
    requests = receiver.wait_for(path, 2)
    assert sorted(r.json["device_id"] for r in requests) == sorted([minion.id, minion_2.id])
    for device in published["minions"]:
        record = get_record(salt_run, device, published["jid"])
        assert record["device_id"] == device
        assert [s["state"] for s in record["sent_requests"]] == ["COMMAND_EXECUTED"]


def test_execute_raw_splits_and_types_the_line_like_the_salt_cli(salt_run, receiver, hook, minion):
    path, url = hook
    published = run_ok(salt_run, "callbacks.execute_raw", minion.id, "test.arg a 'b c' 3 d=1 'e=[x, y]'", f"callback_url={url}")
    (request,) = receiver.wait_for(path, 1)
    returned = request.json["response"]["data"]["return"]
    assert returned["args"] == ["a", "b c", 3]
    assert returned["kwargs"]["d"] == 1
    assert returned["kwargs"]["e"] == ["x", "y"]
    command = get_record(salt_run, minion.id, published["jid"])["command"]
    assert command["command"] == "test.arg"
    assert command["arg"] == ["a", "b c", 3]
    assert command["kwarg"] == {"d": 1, "e": ["x", "y"]}
    assert command["raw"] == "test.arg a 'b c' 3 d=1 'e=[x, y]'"
    assert command["returner"] is None


def test_execute_passes_arg_and_kwarg_through(salt_run, receiver, hook, minion):
    path, url = hook
    execute(salt_run, minion.id, "test.arg", url, "arg=[1, two]", "kwarg={k: v}")
    (request,) = receiver.wait_for(path, 1)
    returned = request.json["response"]["data"]["return"]
    assert returned["args"] == [1, "two"]
    assert returned["kwargs"]["k"] == "v"


def test_timeout_is_sent_when_the_device_does_not_answer(salt_run, receiver, hook, down_minion):
    path, url = hook
    started = time.time()
    published = execute(salt_run, down_minion.id, "test.ping", url, "callback_timeout=1")
    assert published["minions"] == [down_minion.id]
    (request,) = receiver.wait_for(path, 1)
    assert request.at - started >= 1
    assert request.json == {
        "response": None,
        "jid": published["jid"],
        "state": "TIMEOUT",
        "success": False,
        "device_id": down_minion.id,
    }
    assert request.headers["x-request-signature"] == autopi_signature(SECRET, request.body)
    record = get_record(salt_run, down_minion.id, published["jid"])
    assert record["state"] == "TIMEOUT"
    assert record["timeout"] == 1


def test_late_result_after_timeout_is_still_delivered(salt_run, receiver, hook, minion):
    path, url = hook
    published = execute(salt_run, minion.id, "test.sleep", url, "arg=[4]", "callback_timeout=1")
    first, second = receiver.wait_for(path, 2, timeout=30)
    assert first.json["state"] == "TIMEOUT"
    assert second.json["state"] == "COMMAND_EXECUTED"
    assert second.json["success"] is True
    assert second.at - first.at >= 2
    record = get_record(salt_run, minion.id, published["jid"])
    assert [s["state"] for s in record["sent_requests"]] == ["TIMEOUT", "COMMAND_EXECUTED"]
    assert record["state"] == "COMMAND_EXECUTED"


def test_receiver_errors_are_retried_until_a_2xx(salt_run, receiver, hook, minion):
    path, url = hook
    receiver.script(path, [500, 500, 200])
    published = execute(salt_run, minion.id, "test.ping", url)
    receiver.wait_for(path, 3)
    record = get_record(salt_run, minion.id, published["jid"])
    sent = record["sent_requests"]
    assert [(s["response_statuscode"], s["success"]) for s in sent] == [(500, False), (500, False), (200, True)]
    assert all(s["state"] == "COMMAND_EXECUTED" for s in sent)
    assert len(receiver.settle(path, 1)) == 3


def test_a_receiver_that_always_fails_gets_one_attempt_plus_max_retries(salt_run, receiver, hook, minion):
    path, url = hook
    receiver.script(path, [503])
    published = execute(salt_run, minion.id, "test.ping", url)
    receiver.wait_for(path, 6)  # 1 + max_retries (5)
    assert len(receiver.settle(path, 2)) == 6
    record = get_record(salt_run, minion.id, published["jid"])
    assert [s["response_statuscode"] for s in record["sent_requests"]] == [503] * 6
    (delivery,) = record["deliveries"]
    assert delivery["status"] == "failed"
    assert "6 attempt" in delivery["reason"]
    # Every retry signs the same bytes with the same delivery id.
    bodies = {r.body for r in receiver.at(path)}
    ids = {r.headers["webhook-id"] for r in receiver.at(path)}
    assert len(bodies) == 1 and len(ids) == 1


def test_a_state_run_delivers_its_whole_result(salt_run, receiver, hook, master, minion):
    path, url = hook
    sls = """
first:
  test.succeed_without_changes:
    - name: one
second:
  test.fail_without_changes:
    - name: two
"""
    with master.state_tree.base.temp_file("cbpending.sls", sls):
        run_ok(salt_run, "callbacks.execute_raw", minion.id, "state.sls cbpending", f"callback_url={url}")
        (request,) = receiver.wait_for(path, 1, timeout=60)
    data = request.json["response"]["data"]
    assert data["fun"] == "state.sls"
    states = data["return"]
    assert isinstance(states, dict) and len(states) == 2
    results = sorted(v["result"] for v in states.values())
    assert results == [False, True]
    assert data["retcode"] == 2


def test_a_duplicate_return_event_sends_nothing_more(salt_run, receiver, hook, master, minion):
    from tests.integration.helpers import fire_master_event

    path, url = hook
    published = execute(salt_run, minion.id, "test.ping", url)
    (request,) = receiver.wait_for(path, 1)
    data = request.json["response"]["data"]
    fire_master_event(master, request.json["response"]["tag"], data)
    assert len(receiver.settle(path, 2)) == 1
    record = get_record(salt_run, minion.id, published["jid"])
    assert len(record["sent_requests"]) == 1


def test_get_returns_the_record_in_autopis_shape(salt_run, receiver, hook, minion):
    path, url = hook
    published = execute(salt_run, minion.id, "test.arg", url, "arg=[x]", "callback_timeout=45")
    receiver.wait_for(path, 1)
    record = get_record(salt_run, minion.id, published["jid"])
    for key in ("sent_requests", "url", "timestamp", "timeout_task_id", "command", "timeout", "device_id"):
        assert key in record
    assert record["url"] == url
    assert record["timeout"] == 45
    assert record["device_id"] == minion.id
    assert record["command"] == {"returner": None, "command": "test.arg", "arg": ["x"]}
    assert record["timestamp"].endswith("Z") and len(record["timestamp"]) == len("2022-01-01T00:00:00.000000Z")
    (sent,) = record["sent_requests"]
    assert set(sent) >= {"timestamp", "state", "success", "response_statuscode"}
    assert sent["response_statuscode"] == 200 and sent["success"] is True
    assert sent["timestamp"].endswith("Z")
    assert len(record["timeout_task_id"]) == 36


def test_list_shows_recent_records_newest_first_and_filters_by_state(salt_run, receiver, hook, minion, down_minion):
    path, url = hook
    done = execute(salt_run, minion.id, "test.ping", url)
    waiting = execute(salt_run, down_minion.id, "test.ping", url, "callback_timeout=600")
    receiver.wait_for(path, 1)
    recent = run_ok(salt_run, "callbacks.list", "limit=5")
    assert recent[0]["jid"] == waiting["jid"]
    assert [r["jid"] for r in recent] == sorted((r["jid"] for r in recent), reverse=True)
    pending = run_ok(salt_run, "callbacks.list", "state=PENDING", "limit=50")
    assert waiting["jid"] in [r["jid"] for r in pending]
    assert done["jid"] not in [r["jid"] for r in pending]
    executed = run_ok(salt_run, "callbacks.list", f"device_id={minion.id}", "state=COMMAND_EXECUTED")
    assert done["jid"] in [r["jid"] for r in executed]
    assert all(r["device_id"] == minion.id for r in executed)


def test_without_callback_url_the_job_is_only_published(salt_run, minion):
    published = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping")
    assert published["minions"] == [minion.id]
    ret = salt_run.run("callbacks.get", minion.id, published["jid"])
    assert ret.returncode != 0
    assert "no callback record" in ret.data["error"]
