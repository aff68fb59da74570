"""The engine's Prometheus endpoint on a real master: scraped while a receiver fails.

One master with ``callbacks: metrics_port``, one running minion and one
accepted but stopped (its callbacks time out); one receiver path that
answers 500 until the retries run out, one that answers 200. The scrape is
parsed with prometheus_client's own parser, as Prometheus would read it.
"""

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from salt_callbacks import __version__
from tests.integration.helpers import SECRET, run_ok, start_master, wait_for_engine
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

MASTER_ID = "cb-metrics-master"
WAIT = 60
ALLOWED_LABELS = {"master", "state", "outcome", "result", "le", "version"}


@pytest.fixture(scope="module")
def metrics_master(salt_factories, event_listener):
    factory = start_master(salt_factories, event_listener, MASTER_ID, metrics_port=free_port(),
                           max_retries=2, retry_delays=[0.2])
    with factory.started():
        wait_for_engine(factory)
        yield factory


@pytest.fixture(scope="module")
def minions(metrics_master):
    running = metrics_master.salt_minion_daemon("cb-metrics-minion")
    stopped = metrics_master.salt_minion_daemon("cb-metrics-down")
    with stopped.started():
        pass  # its key stays accepted: it is targeted and never answers
    with running.started():
        yield running, stopped


@pytest.fixture(scope="module")
def metrics_run(metrics_master, minions):
    return metrics_master.salt_run_cli(timeout=60)


def url(master, path):
    return f"http://127.0.0.1:{master.config['callbacks']['metrics_port']}{path}"


def get(master, path):
    try:
        with urllib.request.urlopen(url(master, path), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(master):
    status, text = get(master, "/metrics")
    assert status == 200, text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, found


def value(found, name, **labels):
    return found.get((name, tuple(sorted({"master": MASTER_ID, **labels}.items()))), 0)


def wait_until(master, condition, what):
    deadline = time.monotonic() + WAIT
    while True:
        text, found = scrape(master)
        if condition(found):
            return text, found
        assert time.monotonic() < deadline, f"{what}; last scrape:\n{text}"
        time.sleep(0.3)


def test_a_scrape_during_a_run_with_a_failing_receiver_shows_every_series(metrics_master, minions, metrics_run,
                                                                        receiver):
    running, stopped = minions
    failing, working = "/metrics-fail/" + uuid.uuid4().hex, "/metrics-ok/" + uuid.uuid4().hex
    receiver.script(failing, [500])
    _, before = scrape(metrics_master)
    assert value(before, "salt_callbacks_build_info", version=__version__) == 1

    run_ok(metrics_run, "callbacks.execute", running.id, "test.ping", f"callback_url={receiver.url(failing)}")
    run_ok(metrics_run, "callbacks.execute", running.id, "test.ping", f"callback_url={receiver.url(working)}")
    run_ok(metrics_run, "callbacks.execute", stopped.id, "test.ping", f"callback_url={receiver.url(working)}",
           "callback_timeout=2")
    # Mid-run: the stopped minion's record waits for its return.
    _, during = scrape(metrics_master)
    assert value(during, "salt_callbacks_pending") >= 1

    def done(found):
        return (value(found, "salt_callbacks_deliveries_total", state="COMMAND_EXECUTED", outcome="failed") >= 1
                and value(found, "salt_callbacks_deliveries_total", state="COMMAND_EXECUTED", outcome="delivered") >= 1
                and value(found, "salt_callbacks_deliveries_total", state="TIMEOUT", outcome="delivered") >= 1)

    text, found = wait_until(metrics_master, done, "the three payloads did not finish")
    receiver.wait_for(failing, 3)  # the first attempt and max_retries=2 retries

    assert value(found, "salt_callbacks_attempts_total", result="5xx") >= 3
    assert value(found, "salt_callbacks_attempts_total", result="2xx") >= 2
    assert value(found, "salt_callbacks_delivery_seconds_count") >= 2
    assert value(found, "salt_callbacks_delivery_seconds_bucket", le="+Inf") >= 2
    assert value(found, "salt_callbacks_timeout_lateness_seconds_count") >= 1
    assert value(found, "salt_callbacks_store_write_seconds_count") >= 3
    assert ("salt_callbacks_bus_gaps_total", (("master", MASTER_ID),)) in found
    assert value(found, "salt_callbacks_pending") == 0
    assert value(found, "salt_callbacks_retry_queue") == 0

    # Every series carries this master's id, and no label names a device, URL, path or secret.
    for (name, labels) in found:
        assert dict(labels).get("master") == MASTER_ID, name
        assert {key for key, _ in labels} <= ALLOWED_LABELS, (name, labels)
    for needle in (running.id, stopped.id, failing, working, "127.0.0.1", SECRET):
        assert needle not in text


def test_healthz_and_readyz_answer_on_the_same_port(metrics_master, minions):
    status, body = get(metrics_master, "/healthz")
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"
    deadline = time.monotonic() + WAIT
    while True:  # the first store probe may still be under way just after the start
        status, body = get(metrics_master, "/readyz")
        if status == 200:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
    assert json.loads(body) == {"status": "ready", "checks": {"loop": "ok", "started": "ok", "store": "ok",
                                                             "bus": "subscribed"}}
    assert get(metrics_master, "/nothing-here")[0] == 404
