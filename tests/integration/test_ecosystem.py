"""At home in Salt: callbacks for jobs that never call the runner (metadata),
events for reactors, redelivery, and Salt's outputters."""

import json
import time

import pytest
import yaml

from tests.integration.helpers import SECRET
from tests.integration.helpers import get_record, run_ok, autopi_signature

pytestmark = pytest.mark.integration


def publish_with_metadata(master, minion, metadata, *args):
    cli = master.salt_cli(timeout=60)
    ret = cli.run("--async", f"--metadata={json.dumps(metadata)}", *args, minion_tgt=minion.id)
    assert ret.returncode == 0, ret
    return ret.stdout.strip().split()[-1]  # "Executed command with job ID: <jid>"


def test_a_job_published_with_callback_metadata_gets_a_record_and_webhooks(master, minion, salt_run, receiver, hook):
    path, url = hook
    jid = publish_with_metadata(master, minion, {"callback_url": url, "callback_timeout": 30}, "test.arg", "x", "k=v")
    (request,) = receiver.wait_for(path, 1)
    assert request.json["jid"] == jid and request.json["state"] == "COMMAND_EXECUTED"
    assert request.headers["x-request-signature"] == autopi_signature(SECRET, request.body)  # root -> default
    record = get_record(salt_run, minion.id, jid)
    assert record["timeout"] == 30
    assert record["command"] == {"returner": None, "command": "test.arg", "arg": ["x"], "kwarg": {"k": "v"}}


def test_a_metadata_job_times_out_from_its_publish_time(master, down_minion, salt_run, receiver, hook):
    path, url = hook
    cli = master.salt_cli(timeout=60)
    published = time.time()
    ret = cli.run("--async", f"--metadata={json.dumps({'callback_url': url, 'callback_timeout': 2})}", "test.ping",
                  minion_tgt=down_minion.id)
    assert ret.returncode == 0
    (request,) = receiver.wait_for(path, 1)
    assert request.json["state"] == "TIMEOUT"
    assert 2 <= request.at - published < 5


def test_a_job_the_runner_published_is_not_registered_twice(salt_run, receiver, hook, minion):
    path, url = hook
    published = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
    receiver.wait_for(path, 1)
    assert len(receiver.settle(path, 2)) == 1
    assert len(get_record(salt_run, minion.id, published["jid"])["sent_requests"]) == 1


def test_invalid_metadata_is_reported_in_an_event_and_the_log_without_crashing(master, minion, event_listener, receiver, hook):
    path, url = hook
    since = time.time()
    jid = publish_with_metadata(master, minion, {"callback_url": "ftp://example.com/x"}, "test.ping")
    matched = event_listener.wait_for_events([(master.id, f"salt/callbacks/{jid}/invalid")], after_time=since, timeout=30)
    assert matched.found_all_events
    (event,) = matched.matches
    assert "callback_url" in event.data["error"]
    with open(master.config["log_file"], encoding="utf-8", errors="replace") as log:
        assert f"job {jid} has invalid callback metadata" in log.read()
    # The engine is still at work.
    publish_with_metadata(master, minion, {"callback_url": url}, "test.ping")
    receiver.wait_for(path, 1)


def test_delivery_outcomes_fire_events_for_reactors_without_body_or_secret(master, salt_run, event_listener, receiver, hook, minion, down_minion):
    path, url = hook
    since = time.time()
    ok = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
    late = run_ok(salt_run, "callbacks.execute", down_minion.id, "test.ping", f"callback_url={url}", "callback_timeout=1")
    failing_path = path + "-failing"
    receiver.script(failing_path, [500])
    bad = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={receiver.url(failing_path)}")
    matched = event_listener.wait_for_events(
        [
            (master.id, f"salt/callbacks/{ok['jid']}/{minion.id}/delivered"),
            (master.id, f"salt/callbacks/{late['jid']}/{down_minion.id}/timeout"),
            (master.id, f"salt/callbacks/{bad['jid']}/{minion.id}/failed"),
        ],
        after_time=since,
        timeout=60,
    )
    assert matched.found_all_events, matched.missed
    for event in matched.matches:
        text = repr(event.full_data)
        assert SECRET not in text
        assert "response" not in event.data and "body" not in event.data
    failed = [e for e in matched.matches if e.tag.endswith("/failed")][0]
    assert failed.data["attempts"] == 6 and failed.data["status"] == 500


def test_redeliver_sends_the_latest_payload_again_as_a_new_attempt(salt_run, receiver, hook, minion):
    path, url = hook
    published = run_ok(salt_run, "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
    (first,) = receiver.wait_for(path, 1)
    answer = run_ok(salt_run, "callbacks.redeliver", minion.id, published["jid"])
    assert answer["state"] == "COMMAND_EXECUTED" and answer["redelivery"] == "queued"
    first, second = receiver.wait_for(path, 2)
    assert second.body == first.body
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    record = get_record(salt_run, minion.id, published["jid"])
    assert [s["attempt"] for s in record["sent_requests"]] == [1, 2]


def test_redeliver_of_a_record_with_nothing_sent_is_a_clear_error(salt_run, receiver, hook, down_minion):
    path, url = hook
    published = run_ok(salt_run, "callbacks.execute", down_minion.id, "test.ping", f"callback_url={url}",
                       "callback_timeout=600")
    ret = salt_run.run("callbacks.redeliver", down_minion.id, published["jid"])
    assert ret.returncode != 0 and "nothing to redeliver" in ret.data["error"]


@pytest.mark.parametrize("outputter", ["json", "yaml", "nested"])
def test_runner_output_works_with_salts_outputters(master, minion, outputter):
    cli = master.salt_run_cli(timeout=60)
    ret = cli.run(f"--out={outputter}", "callbacks.execute", minion.id, "test.ping")
    assert ret.returncode == 0
    if outputter == "json":
        assert set(json.loads(ret.stdout)) == {"jid", "minions"}
    elif outputter == "yaml":
        assert yaml.safe_load(ret.stdout)["minions"] == [minion.id]
    else:
        assert "jid:" in ret.stdout and minion.id in ret.stdout
    bad = cli.run(f"--out={outputter}", "callbacks.execute", minion.id, "test.ping", "callback_timeout=0")
    assert bad.returncode == 2
    assert "callback_timeout" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr


def test_a_local_client_job_with_callback_metadata_gets_webhooks(master, minion, salt_run, receiver, hook):
    import salt.client

    path, url = hook
    with salt.client.get_local_client(mopts=dict(master.config)) as client:  # a copy: it writes into mopts
        published = client.run_job(minion.id, "test.ping", metadata={"callback_url": url, "callback_timeout": 20})
    (request,) = receiver.wait_for(path, 1)
    assert request.json["jid"] == published["jid"] and request.json["state"] == "COMMAND_EXECUTED"
    assert get_record(salt_run, minion.id, published["jid"])["timeout"] == 20
