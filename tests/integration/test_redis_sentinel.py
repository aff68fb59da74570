"""Redis Sentinel: the primary dies with callbacks pending on two masters; a replica is promoted; all arrive.

Real parts: a redis-server primary, a replica and three Sentinels
(``tests/support/redis_sentinel.py``), two salt-masters whose callback store
and claims find the primary through the Sentinels (``callbacks: redis:
sentinels``), one minion of both masters, a receiver counting requests per
``webhook-id``. Salt's own job cache stays on each master's local disk: its
redis driver cannot follow a failover (docs/ha.md says what it does).
"""

import os
import shutil
import time
import uuid

import pytest

from salt_callbacks.adapters.cache import redis_driver_layout

from tests.integration.helpers import both_masters_minion, run_ok, start_master, wait_for_engine
from tests.support.redis_sentinel import SERVICE, SentinelSet

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(redis_driver_layout() != "hashes", reason="Salt before 3008: the callback store "
                                 "stays on Salt's redis driver, which has no socket timeouts and no Sentinel"),
              pytest.mark.timeout(300)]

LEASE_TTL = 3
SETTLE = 2  # seconds to keep listening for a duplicate after the last expected webhook


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    with SentinelSet(tmp_path_factory.mktemp("sentinel")) as running:
        yield running


def sentinel_master(salt_factories, event_listener, sentinels, master_id, keys_from=None):
    factory = start_master(
        salt_factories, event_listener, master_id,
        cache="redis", lease_ttl=LEASE_TTL, takeover_interval=1, retry_delays=[1], attempt_timeout=3,
        redis={"sentinels": sentinels.addresses, "service_name": SERVICE, "socket_timeout": 1},
    )
    if keys_from is not None:  # multi-master needs one master key pair on every master
        for name in ("master.pem", "master.pub"):
            shutil.copy(os.path.join(keys_from.config["pki_dir"], name), os.path.join(factory.config["pki_dir"], name))
    return factory


@pytest.fixture(scope="module")
def masters(salt_factories, event_listener, sentinels):
    first = sentinel_master(salt_factories, event_listener, sentinels, "cb-sen-a")
    with first.started():
        wait_for_engine(first)
        second = sentinel_master(salt_factories, event_listener, sentinels, "cb-sen-b", keys_from=first)
        with second.started():
            wait_for_engine(second)
            yield first, second


@pytest.fixture(scope="module")
def minions(masters):
    up = both_masters_minion(masters, "cb-sen-minion")
    down = both_masters_minion(masters, "cb-sen-down")
    with down.started():
        pass  # accepted on both masters, never running: it never answers (TIMEOUTs)
    with up.started():
        yield up, down


def per_webhook(receiver, paths):
    found = {}
    for path in paths:
        for request in receiver.at(path):
            entry = found.setdefault(request.headers["webhook-id"], {"state": request.json["state"], "requests": 0,
                                                                      "2xx": 0})
            entry["requests"] += 1
            entry["2xx"] += 200 <= request.answered < 300
    return found


def publish(runs, receiver, minion, down, sleep, timeout):
    """From each master: a return that comes after ``sleep`` s and a TIMEOUT after ``timeout`` s."""
    expected = []
    for run in runs:
        path = "/sentinel/" + uuid.uuid4().hex
        run_ok(run, "callbacks.execute", minion.id, "test.sleep", f"arg=[{sleep}]", f"callback_url={receiver.url(path)}",
               "callback_timeout=60")
        expected.append((path, "COMMAND_EXECUTED"))
        path = "/sentinel/" + uuid.uuid4().hex
        run_ok(run, "callbacks.execute", down.id, "test.ping", f"callback_url={receiver.url(path)}",
               f"callback_timeout={timeout}")
        expected.append((path, "TIMEOUT"))
    return expected


def arrive(receiver, expected, timeout=60):
    for path, state in expected:
        receiver.wait_for_state(path, state, 200, timeout=timeout)
    time.sleep(SETTLE)
    return per_webhook(receiver, [path for path, _ in expected])


def test_callbacks_pending_on_two_masters_survive_a_sentinel_failover(masters, minions, sentinels, receiver):
    runs = [master.salt_run_cli(timeout=60) for master in masters]
    minion, down = minions

    normal = arrive(receiver, publish(runs[:1], receiver, minion, down, sleep=0, timeout=2))
    print(f"\nbefore the failover: {normal}")
    assert len(normal) == 2 and all(e["requests"] == 1 for e in normal.values()), normal  # once each

    old_primary = sentinels.primary_port()
    pending = publish(runs, receiver, minion, down, sleep=5, timeout=5)  # due after the failover
    sentinels.kill_primary()
    killed = time.monotonic()
    sentinels.wait_for_failover()
    promoted = time.monotonic() - killed
    assert sentinels.primary_port() == sentinels.replica.port != old_primary

    found = arrive(receiver, pending)
    print(f"failover: replica promoted {promoted:.1f} s after the primary was killed; per webhook: {found}")
    assert len(found) == 4 and all(e["2xx"] >= 1 for e in found.values()), found  # every payload delivered
    assert all(e["requests"] == 1 for e in found.values()), found  # and, here, each once
    for index, (path, state) in enumerate(pending):  # the outcomes are in the promoted primary
        sent = receiver.at(path)[-1].json
        record = run_ok(runs[index % 2], "callbacks.get", sent["device_id"], sent["jid"])
        assert [d["status"] for d in record["deliveries"] if d["state"] == state] == ["delivered"], record
