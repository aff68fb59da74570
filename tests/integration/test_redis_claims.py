"""RedisClaims on a real redis-server: the rules the unit tests' fake copies.

Each rule here has a twin in ``tests/unit/fakes_ha.py``; the two engines'
worth of engine logic is tested on that fake, the atomic steps here.
No Salt daemons: seconds.
"""

import time

import pytest

from salt_callbacks.exceptions import ClaimError
from salt_callbacks.ha.claims import RedisClaims, pack_message
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

TTL = 1.0
KEY = ("20260101000000000001", "minion-1")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis-claims")) as server:
        yield server


@pytest.fixture
def pair(redis_server, request):
    prefix = f"t-{request.node.name}:"
    make = lambda owner: RedisClaims(redis_server.client(), owner, TTL, retention=3600, prefix=prefix,
                                     endpoint=f"redis 127.0.0.1:{redis_server.port}")
    a, b = make("master-a"), make("master-b")
    now = time.time()
    a.start(now)
    b.start(now)
    return a, b


def wait_dead(claims, owner, timeout=5):
    """Until ``owner``'s heartbeat key has expired in Redis (bounded)."""
    deadline = time.monotonic() + timeout
    while claims.client.exists(claims._hb(owner)):  # pylint: disable=protected-access
        assert time.monotonic() < deadline, f"heartbeat of {owner} did not expire"
        time.sleep(0.05)


def test_one_claim_per_record_while_the_owner_lives(pair):
    a, b = pair
    assert a.claim(KEY, 1.0) is True
    assert a.claim(KEY, 1.0) is True  # already mine
    assert b.claim(KEY, 1.0) is False


def test_a_claim_of_a_dead_owner_is_free_and_shows_in_the_scan(pair):
    a, b = pair
    a.claim(KEY, time.time())
    assert b.free_keys(0, 0, 0) == ([], 0)
    wait_dead(b, "master-a")
    assert b.free_keys(0, 0, 0) == ([KEY], 0)
    assert b.claim(KEY, 1.0) is True


def test_a_hand_over_reaches_the_owner_and_a_free_claim_is_refused(pair):
    a, b = pair
    assert b.hand_over(KEY, pack_message("return", *KEY, {"return": b"\xff"})) is None  # nobody holds it
    a.claim(KEY, 1.0)
    assert b.hand_over(KEY, pack_message("return", *KEY, {"return": b"\xff", "retcode": 0})) == "master-a"
    assert a.hand_over(KEY, pack_message("return", *KEY, {})) == "master-a"  # mine: nothing queued
    (message,) = a.take_messages()
    assert message == {"kind": "return", "jid": KEY[0], "device_id": KEY[1], "data": {"return": b"\xff", "retcode": 0}}
    assert a.take_messages() == []


def test_a_dead_owners_inbox_moves_to_the_scanner(pair):
    a, b = pair
    a.claim(KEY, time.time())
    b.hand_over(KEY, pack_message("redeliver", *KEY))
    wait_dead(b, "master-a")
    b.free_keys(0, 0, 0)
    assert [m["kind"] for m in b.take_messages()] == ["redeliver"]


def test_release_is_compare_and_delete_and_finished_records_leave_the_open_set(pair):
    a, b = pair
    a.claim(KEY, 5.0)
    b.release_many([KEY])  # not b's: nothing happens
    assert b.claim(KEY, 5.0) is False
    a.release_many([KEY])
    assert a.client.zscore(a._open, "/".join(KEY)) is None  # pylint: disable=protected-access
    assert b.claim(KEY, 5.0) is True


def test_a_never_claimed_record_is_free_only_after_the_grace(pair):
    a, b = pair
    now = time.time()
    a.announce([(KEY, now)])
    assert b.free_keys(0, now - 3600, now - 10) == ([], 0)  # young: its publisher may still claim it
    assert b.free_keys(0, now - 3600, now + 1) == ([KEY], 0)
    assert b.free_keys(0, now + 1, now + 1) == ([], 0)  # older than the retention: forgotten
    assert a.client.zcard(a._open) == 0  # pylint: disable=protected-access


def test_the_scan_walks_the_open_set_in_chunks(pair):
    a, b = pair
    keys = [(f"2026010100000000{n:04d}", "m") for n in range(7)]
    a.announce([(k, 1.0) for k in keys])
    seen, cursor = [], 0
    for _ in range(10):
        free, cursor = b.free_keys(cursor, 0, 2.0, limit=3)
        seen += free
        if cursor == 0:
            break
    assert sorted(seen) == keys


def test_the_heartbeat_says_when_it_had_expired(pair):
    a, _ = pair
    assert a.heartbeat(time.time()) is False
    wait_dead(a, "master-a")
    assert a.heartbeat(time.time()) is True
    assert a.confident(time.time())


def test_an_unreachable_server_raises_claim_error_naming_it_without_hanging():
    port = free_port()
    import redis

    claims = RedisClaims(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1),
                         "m", TTL, 3600, endpoint=f"redis 127.0.0.1:{port}")
    # Hanging is ruled out by the client's socket timeouts (and the test's own timeout).
    with pytest.raises(ClaimError, match=f"127.0.0.1:{port}"):
        claims.heartbeat(time.time())
    assert not claims.confident(time.time())


def test_claims_survive_a_redis_restart(redis_server, pair):
    a, b = pair
    a.claim(KEY, 1.0)
    redis_server.restart()
    a.heartbeat(time.time())
    assert b.claim(KEY, 1.0) is False
    assert a.claim(KEY, 1.0) is True
