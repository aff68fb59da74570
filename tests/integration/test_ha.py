"""Two salt-masters on one Redis: each payload once, nothing lost when one dies.

Real parts: a redis-server started here (temp dir, free port), two
salt-masters sharing a master key pair, the callbacks store
(``callbacks: cache: redis``) and the master job cache
(``master_job_cache: salt_cache`` on ``cache: redis``; on 3006/3007, which
have no ``salt_cache`` returner, ``master_job_cache: redis``) in that Redis, one
minion connected to both masters, and a receiver that counts requests per
``webhook-id``. Both masters are on 127.0.0.1, so both see every return:
the worst case for duplicates.

The master kill comes last: it leaves one master.
"""

import collections
import importlib.util
import os
import shutil
import signal
import time
import uuid

import psutil
import pytest

from tests.integration.helpers import start_master, wait_for_engine
from tests.integration.helpers import run_ok
from tests.integration.helpers import engine_process
from tests.integration.helpers import both_masters_minion
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

LEASE_TTL = 3
TAKEOVER_INTERVAL = 1
RETRY_DELAY = 3
#: Seconds to keep listening after the last expected webhook, so that a duplicate would show.
SETTLE = 4
REPORT = collections.OrderedDict()  # test name -> per-delivery-id counts, printed at the end


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("ha-redis")) as server:
        yield server


def ha_overrides(redis_server):
    overrides = {"cache": "redis", "cache.redis.host": "127.0.0.1", "cache.redis.port": redis_server.port}
    if importlib.util.find_spec("salt.returners.salt_cache") is not None:  # Salt 3008
        overrides["master_job_cache"] = "salt_cache"
    else:  # 3006, 3007: no salt_cache returner; Salt's redis returner shares the job cache
        overrides.update({"master_job_cache": "redis", "redis.host": "127.0.0.1", "redis.port": redis_server.port})
    return overrides


def start_ha_master(salt_factories, event_listener, redis_server, master_id, keys_from=None):
    factory = start_master(
        salt_factories, event_listener, master_id, salt_overrides=ha_overrides(redis_server),
        cache="redis", lease_ttl=LEASE_TTL, takeover_interval=TAKEOVER_INTERVAL, retry_delays=[RETRY_DELAY],
        attempt_timeout=3,
    )
    if keys_from is not None:  # multi-master needs one master key pair on every master
        for name in ("master.pem", "master.pub"):
            shutil.copy(os.path.join(keys_from.config["pki_dir"], name), os.path.join(factory.config["pki_dir"], name))
    return factory


@pytest.fixture(scope="module")
def masters(salt_factories, event_listener, redis_server):
    first = start_ha_master(salt_factories, event_listener, redis_server, "cb-ha-a")
    with first.started():
        wait_for_engine(first)
        second = start_ha_master(salt_factories, event_listener, redis_server, "cb-ha-b", keys_from=first)
        with second.started():
            wait_for_engine(second)
            yield first, second


@pytest.fixture(scope="module")
def minion(masters):
    factory = both_masters_minion(masters, "cb-ha-minion")
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def down_minion(masters):
    """Accepted on both masters, never running: it never answers (TIMEOUTs)."""
    factory = both_masters_minion(masters, "cb-ha-down")
    with factory.started():
        pass
    return factory


@pytest.fixture(scope="module")
def runs(masters, minion, down_minion):
    first, second = masters
    return first.salt_run_cli(timeout=60), second.salt_run_cli(timeout=60)


def new_path(receiver):
    path = "/ha/" + uuid.uuid4().hex
    return path, receiver.url(path)


def counts(receiver, paths):
    """``{webhook-id: {"requests": n, "2xx": n, "state": ..}}`` over ``paths``."""
    found = {}
    for path in paths:
        for request in receiver.at(path):
            entry = found.setdefault(request.headers["webhook-id"],
                                     {"state": request.json["state"], "requests": 0, "2xx": 0})
            entry["requests"] += 1
            entry["2xx"] += 200 <= request.answered < 300
    return found


def expect(receiver, expected, timeout=60):
    """Wait for every ``(path, state)`` to be answered 2xx, then ``SETTLE`` s more."""
    deadline = time.monotonic() + timeout
    for path, state in expected:
        receiver.wait_for_state(path, state, 200, timeout=max(1, deadline - time.monotonic()))
    time.sleep(SETTLE)  # anything a second master sent would arrive within this
    return counts(receiver, sorted({path for path, _ in expected}))


def report(name, found):
    REPORT[name] = found
    print(f"\n{name}: per delivery id -> " + ", ".join(
        f"{entry['state']} {entry['requests']} request(s), {entry['2xx']} answered 2xx" for entry in found.values()))


def engine_pids(masters):
    return [engine_process(master).pid for master in masters]


# -- normal operation -------------------------------------------------------------------


def test_each_payload_is_delivered_once_across_two_masters(masters, runs, receiver, minion, down_minion):
    expected = []
    for index in range(6):
        run = runs[index % 2]  # jobs published from either master
        path, url = new_path(receiver)
        run_ok(run, "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
        expected.append((path, "COMMAND_EXECUTED"))
    for index in range(2):
        path, url = new_path(receiver)
        run_ok(runs[index], "callbacks.execute", down_minion.id, "test.ping", f"callback_url={url}", "callback_timeout=2")
        expected.append((path, "TIMEOUT"))
    found = expect(receiver, expected)
    report("normal operation", found)
    assert len(found) == len(expected)
    assert all(entry["requests"] == 1 for entry in found.values()), found


def test_every_runner_function_works_against_redis_from_either_master(runs, receiver, minion):
    first, second = runs
    path, url = new_path(receiver)
    published = run_ok(first, "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
    raw = run_ok(second, "callbacks.execute_raw", minion.id, "test.arg a b=1", f"callback_url={url}")
    receiver.wait_for(path, 2)
    for run in runs:
        for jid in (published["jid"], raw["jid"]):
            record = run_ok(run, "callbacks.get", minion.id, jid)
            assert [d["status"] for d in record["deliveries"]] == ["delivered"], record
            assert len(record["sent_requests"]) == 1
        listed = run_ok(run, "callbacks.list", f"device_id={minion.id}", "limit=50")
        assert {published["jid"], raw["jid"]} <= {entry["jid"] for entry in listed}
    # Asked on the master that does not hold it (or does): sent once more, same webhook-id.
    queued = run_ok(second, "callbacks.redeliver", minion.id, published["jid"])
    assert queued["redelivery"] == "queued"
    deadline = time.monotonic() + 30
    while len(run_ok(first, "callbacks.get", minion.id, published["jid"])["sent_requests"]) < 2:
        assert time.monotonic() < deadline, "the redelivery was not recorded"
        time.sleep(0.2)
    found = counts(receiver, [path])
    report("runner functions (one redelivery)", found)
    by_id = {entry["state"]: entry for entry in found.values()}
    assert sorted(entry["requests"] for entry in found.values()) == [1, 2]  # the redelivered one twice
    assert by_id["COMMAND_EXECUTED"]["2xx"] >= 1


# -- Redis restarted, Redis unreachable ---------------------------------------------------------


def test_a_redis_restart_loses_nothing_and_duplicates_nothing(masters, runs, redis_server, receiver, minion, down_minion):
    pids = engine_pids(masters)
    expected = []
    path, url = new_path(receiver)
    run_ok(runs[0], "callbacks.execute", minion.id, "test.sleep", "arg=[3]", f"callback_url={url}", "callback_timeout=30")
    expected.append((path, "COMMAND_EXECUTED"))
    path, url = new_path(receiver)
    run_ok(runs[1], "callbacks.execute", down_minion.id, "test.ping", f"callback_url={url}", "callback_timeout=3")
    expected.append((path, "TIMEOUT"))
    redis_server.restart()  # the return and the deadline both come after it
    found = expect(receiver, expected)
    report("redis restarted", found)
    assert len(found) == 2 and all(entry["requests"] == 1 for entry in found.values()), found
    assert engine_pids(masters) == pids  # no engine crashed or was restarted


def test_redis_unreachable_for_a_while_is_survived_with_clear_errors(masters, runs, redis_server, receiver, minion, down_minion):
    pids = engine_pids(masters)
    log_sizes = [os.path.getsize(m.config["log_file"]) for m in masters]
    expected = []
    path, url = new_path(receiver)
    run_ok(runs[0], "callbacks.execute", minion.id, "test.sleep", "arg=[2]", f"callback_url={url}", "callback_timeout=60")
    expected.append((path, "COMMAND_EXECUTED"))
    path, url = new_path(receiver)
    run_ok(runs[1], "callbacks.execute", down_minion.id, "test.ping", f"callback_url={url}", "callback_timeout=3")
    expected.append((path, "TIMEOUT"))
    redis_server.kill()
    time.sleep(2 * LEASE_TTL + 2)  # the return and the deadline fall in the outage; leases lapse
    redis_server.start()
    found = expect(receiver, expected)
    report("redis unreachable for 8 s", found)
    assert len(found) == 2 and all(entry["2xx"] >= 1 for entry in found.values()), found
    assert engine_pids(masters) == pids, "an engine crashed during the outage"
    for master, size in zip(masters, log_sizes):
        with open(master.config["log_file"], encoding="utf-8", errors="replace") as handle:
            handle.seek(size)
            text = handle.read()
        ours = [line for line in text.splitlines() if "[salt_callbacks" in line and "[ERROR" in line]
        assert any(f"127.0.0.1:{redis_server.port}" in line and "could not" in line for line in ours), (master.id, ours)
        assert len(ours) <= 20, (master.id, len(ours), ours[:30])  # clear errors, not one per tick
        assert "reachable again" in text, master.id
    REPORT["redis unreachable: masters that logged the outage and its end"] = [m.id for m in masters]
    # Exactly once is what the design gives here (each record stays with its master), so hold it to that.
    assert all(entry["requests"] == 1 for entry in found.values()), found


# -- a master dies ---------------------------------------------------------------------------------


def test_a_killed_master_pending_timeouts_retries_and_returns_are_delivered_by_the_other(masters, runs, receiver, minion, down_minion):
    first, second = masters
    expected = []
    path, url = new_path(receiver)  # a TIMEOUT the killed master would have sent
    run_ok(runs[0], "callbacks.execute", down_minion.id, "test.ping", f"callback_url={url}", "callback_timeout=6")
    expected.append((path, "TIMEOUT"))
    retry_path, url = new_path(receiver)  # first attempt fails on the killed master; the retry is pending
    receiver.script(retry_path, [500, 200])
    run_ok(runs[0], "callbacks.execute", minion.id, "test.ping", f"callback_url={url}")
    expected.append((retry_path, "COMMAND_EXECUTED"))
    path, url = new_path(receiver)  # the result comes after the kill
    run_ok(runs[0], "callbacks.execute", minion.id, "test.sleep", "arg=[3]", f"callback_url={url}", "callback_timeout=60")
    expected.append((path, "COMMAND_EXECUTED"))
    receiver.wait_for(retry_path, 1)
    killed_at = time.time()
    process = psutil.Process(first.pid)
    for child in [process, *process.children(recursive=True)]:
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs([process], timeout=10)
    first.terminate()
    found = expect(receiver, expected)
    report("one master SIGKILLed", found)
    arrived = {p: receiver.at(p)[-1].at for p, _ in expected}
    REPORT["takeover: seconds from kill to each terminal webhook"] = {
        state: round(arrived[p] - killed_at, 2) for p, state in expected}
    assert len(found) == 3
    assert all(entry["2xx"] == 1 for entry in found.values()), found
    retry = counts(receiver, [retry_path])
    assert [entry["requests"] for entry in retry.values()] == [2]  # the 500 on the dead master, the 200 on the other
    # Every record is finished in the shared store, read through the surviving master.
    for run_path, state in expected:
        jid = receiver.at(run_path)[-1].json["jid"]
        device = receiver.at(run_path)[-1].json["device_id"]
        record = run_ok(runs[1], "callbacks.get", device, jid)
        assert [d["status"] for d in record["deliveries"] if d["state"] == state] == ["delivered"], record


def test_report_the_delivery_counts(capsys):
    """Print the counts gathered by the tests above (pytest runs a file's tests
    in order, so this one comes last); shown with -s or -rA."""
    with capsys.disabled():
        print("\nHA delivery counts:")
        for name, value in REPORT.items():
            print(f"  {name}: {value}")
