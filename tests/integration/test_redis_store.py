"""RedisStore on a real redis-server: Salt's driver layout both ways, batched writes, TLS and ACL users.

No Salt daemons: Salt's redis cache driver is loaded in process (the path the
current release writes records through), and the client is the one
``adapters.redis.redis_client`` builds for the engine.
"""

import logging
import subprocess
import time

import pytest
import redis
import salt.cache
import salt.config

from salt_callbacks.adapters import cache as cache_adapter
from salt_callbacks.adapters import redis as redis_adapter
from salt_callbacks.config import CallbacksConfig
from salt_callbacks.exceptions import InputError, StoreError
from salt_callbacks.store import SaltCacheStore
from salt_callbacks.store.redis_store import RedisStore

from tests.support.fakes import make_record
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)
needs_hash_layout = pytest.mark.skipif(
    cache_adapter.redis_driver_layout() != "hashes",
    reason="this Salt's redis driver keeps the pre-3008 layout: the callback store stays on Salt's driver")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis-store")) as running:
        yield running


@pytest.fixture
def opts(server, tmp_path):
    server.client().flushdb()
    master = salt.config.master_config(None)
    master.update({"cachedir": str(tmp_path), "cache": "redis", "cache.redis.host": "127.0.0.1",
                   "cache.redis.port": server.port})
    return master


def new_store(opts, block=None):
    config, _ = CallbacksConfig.from_mapping({"redis": block} if block else {})
    settings = redis_adapter.redis_settings(opts, config)
    return RedisStore(redis_adapter.redis_client(settings), endpoint=settings.endpoint,
                      layout=redis_adapter.layout(opts))


def salt_store(opts):
    """The store as the current release builds it on ``cache: redis``: Salt's driver."""
    return SaltCacheStore(salt.cache.Cache(opts, driver="redis"))


@needs_hash_layout
def test_records_the_current_release_wrote_through_salts_driver_are_read_as_they_are(opts):
    old = salt_store(opts)
    first, second = make_record(1, "dev1"), make_record(1, "dev2")
    old.add_job(first.jid, [first, second], first.created)
    done = make_record(2, "dev1")
    old.add_job(done.jid, [done], done.created)

    new = new_store(opts)

    assert new.jids() == [first.jid, done.jid]
    assert new.job(first.jid) == old.job(first.jid)
    assert new.get("dev1", first.jid).to_dict() == first.to_dict()
    assert [r.to_dict() for r in new.records_of_job(first.jid)] == [first.to_dict(), second.to_dict()]
    assert new.devices() == ["dev1", "dev2"]
    assert new.device_jids("dev1") == [first.jid, done.jid]
    assert [r.jid for r in new.recent(device_id="dev1")] == [done.jid, first.jid]
    assert new.expired_jobs(first.created) == old.expired_jobs(first.created)


@needs_hash_layout
def test_salts_driver_reads_what_the_new_store_wrote_and_removal_leaves_no_empty_bank(opts, server):
    new = new_store(opts)
    record = make_record(3, "dev9", command={"returner": None, "command": "cmd.run", "arg": ["echo é\u2028"]})
    new.add_job(record.jid, [record], record.created)
    old = salt_store(opts)

    assert old.get("dev9", record.jid).to_dict() == record.to_dict()
    assert old.devices() == ["dev9"]

    new.remove_job(record.jid, ["dev9"])

    assert old.jids() == [] and old.devices() == []
    banks = server.client().zrange("$BANKS_", 0, -1)
    assert not any(b"dev9" in bank for bank in banks), banks


class CountingConnection(redis.Connection):
    sends = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def test_a_flush_of_many_records_is_one_round_trip(opts, server):
    pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, connection_class=CountingConnection)
    store = RedisStore(redis.Redis(connection_pool=pool))
    records = [make_record(10, f"dev{n}") for n in range(300)]
    store.index_job(records[0].jid, [r.device_id for r in records], records[0].created)
    CountingConnection.sends = 0

    store.save_many(records)

    assert CountingConnection.sends == 1
    CountingConnection.sends = 0
    assert len(store.records_of_job(records[0].jid)) == 300
    assert CountingConnection.sends == 2  # the job's index entry, then all its records


def test_the_records_of_many_jobs_are_read_in_two_round_trips(opts, server):
    pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, connection_class=CountingConnection)
    store = RedisStore(redis.Redis(connection_pool=pool))
    jobs = {n: [make_record(n, f"dev{d}") for d in (2, 1, 3)[:n]] for n in (1, 2, 3)}
    for records in jobs.values():
        store.index_job(records[0].jid, [r.device_id for r in records], records[0].created)
        store.save_many(records)
    jids = [jobs[3][0].jid, make_record(9, "dev1").jid, jobs[1][0].jid, jobs[2][0].jid]  # one without an entry
    CountingConnection.sends = 0

    found = store.records_of_jobs(jids)

    assert CountingConnection.sends == 2  # every index entry (HMGET), then every record (one pipeline)
    assert {jid: [r.device_id for r in records] for jid, records in found.items()} == {
        jid: [r.device_id for r in store.records_of_job(jid)] for jid in jids}
    assert [len(found[jid]) for jid in jids] == [3, 0, 1, 2]
    with pytest.raises(InputError):
        store.records_of_jobs([jids[0], "../tokens/abc"])


def test_an_unreachable_redis_fails_a_call_within_the_socket_timeout_with_a_clear_error(opts):
    store = new_store(opts, {"host": "127.0.0.1", "port": 1, "socket_timeout": 0.2})

    with pytest.raises(StoreError, match=r"could not read job 20240101000000000001 \(redis 127.0.0.1:1 db 0\)"):
        store.job("20240101000000000001")


def test_an_acl_user_with_a_password_is_used_and_a_wrong_one_is_refused_clearly(opts, server):
    admin = server.client()
    admin.acl_setuser("callbacks", enabled=True, passwords=["+cb-pass"], keys=["*"], commands=["+@all"])
    try:
        store = new_store(opts, {"host": "127.0.0.1", "port": server.port, "username": "callbacks",
                                 "password": "cb-pass"})
        record = make_record(4)
        store.add_job(record.jid, [record], record.created)
        assert store.get(record.device_id, record.jid).to_dict() == record.to_dict()

        wrong = new_store(opts, {"host": "127.0.0.1", "port": server.port, "username": "callbacks",
                                 "password": "nope"})
        with pytest.raises(StoreError) as caught:
            wrong.job(record.jid)
        assert "nope" not in str(caught.value) and "AuthenticationError" in str(caught.value)
    finally:
        admin.acl_deluser("callbacks")


def make_ca(directory):
    """A CA and a server certificate for 127.0.0.1, with openssl (no Python dependency)."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=callbacks test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return directory / "ca.pem"


def test_tls_verifies_the_server_against_the_ca_bundle_and_refuses_without_it(opts, tmp_path_factory):
    certs = tmp_path_factory.mktemp("redis-tls")
    ca = make_ca(certs)
    tls_server = RedisServer(tmp_path_factory.mktemp("redis-tls-data"))
    tls_port = tls_server.port
    tls_server.extra_args = ["--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(certs / "server.pem"),
                             "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file", str(ca),
                             "--tls-auth-clients", "no"]
    with tls_server:
        store = new_store(opts, {"host": "127.0.0.1", "port": tls_port, "ssl": str(ca)})
        record = make_record(5)
        store.add_job(record.jid, [record], record.created)
        assert store.get(record.device_id, record.jid).to_dict() == record.to_dict()

        untrusted = new_store(opts, {"host": "127.0.0.1", "port": tls_port, "ssl": True, "socket_timeout": 1})
        with pytest.raises(StoreError, match="certificate verify failed"):
            untrusted.job(record.jid)


def test_with_replicas_a_finishing_write_waits_for_one_in_the_same_round_trip(server, tmp_path_factory, caplog):
    replica_dir = tmp_path_factory.mktemp("redis-replica")
    replica = RedisServer(replica_dir)
    replica.extra_args = ["--replicaof", "127.0.0.1", str(server.port)]
    finished = make_record(20, phase="executed")  # executed, no payload pending: finished
    assert finished.finished
    pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, connection_class=CountingConnection)
    store = RedisStore(redis.Redis(connection_pool=pool), wait_replicas=1, wait_ms=300)

    with replica:
        for _ in range(300):  # bounded: until the replica is in sync
            if replica.client().info("replication").get("master_link_status") == "up":
                break
            time.sleep(0.1)
        store.jids()  # the connection's own handshake is not the flush's
        CountingConnection.sends = 0
        store.save_many([finished, make_record(21)])
        assert CountingConnection.sends == 1 and store.unconfirmed == 0
        assert replica.client().hexists(f"$KEYS_callbacks/records/{finished.device_id}/", finished.jid)

    with caplog.at_level(logging.WARNING):
        store.save_many([finished])  # the replica is gone: logged, not an error
    assert store.unconfirmed == 1
    assert any("not confirmed by 1 replica" in r.getMessage() for r in caplog.records)
