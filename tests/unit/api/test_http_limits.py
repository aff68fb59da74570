"""The HTTP API's limits and failure answers, over a real aiohttp server on
127.0.0.1 with Salt replaced by fakes: login throttling and its own pool,
bounded queues, bad JSON, pagination links, and the 500 that says nothing."""

import asyncio
import json
import logging
import threading

import pytest
from aiohttp.test_utils import TestClient, TestServer

from salt_callbacks.api.bodies import MAX_DEPTH, json_object, nesting_depth
from salt_callbacks.api.limits import BoundedPool, Busy, LoginThrottle, Throttled
from salt_callbacks.api.bodies import BadRequest

from tests.support.fakes import FakeClock, run
from tests.unit.api.test_http import ALICE, ApiRig, call, one

pytestmark = pytest.mark.timeout(30)

GOOD_LOGIN = {"username": "alice", "password": "pw", "eauth": "auto"}


def test_nested_and_malformed_json_is_a_400_naming_the_problem():
    rig = ApiRig()
    for raw, detail in [("[" * 100000, f"JSON parse error - nested deeper than {MAX_DEPTH} levels."),
                        ('{"a": ' * 5000 + "1" + "}" * 5000, f"JSON parse error - nested deeper than {MAX_DEPTH} levels."),
                        ('{"command": NaN}', "JSON parse error - NaN is not valid JSON"),
                        ("{", "JSON parse error - Expecting property name"),
                        ("[1]", "Expected a JSON object, got list.")]:
        status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", raw=raw)
        assert status == 400 and body["detail"].startswith(detail), (raw[:20], body)
    status, body, _ = one(rig, "POST", "/dongle/devices/dev1/execute/", raw=b"\xff\xfe{}")
    assert status == 400 and "not UTF-8" in body["detail"]
    assert rig.publisher.published == []


def test_nesting_inside_strings_does_not_count():
    assert nesting_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"["}') == 1
    assert json_object(('{"arg": ["' + "[" * 1000 + '"]}').encode())["arg"] == ["[" * 1000]
    with pytest.raises(BadRequest):
        json_object(("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode())


def test_pagination_links_are_relative_and_never_take_the_host_header():
    rig = ApiRig()
    status, body, _ = one(rig, "GET", "/dongle/devices/?page_size=1", headers={"Host": "evil.example"})
    assert status == 200 and body["next"] == "/dongle/devices/?page_size=1&page=2"


def test_pagination_links_use_the_public_url_when_set():
    rig = ApiRig(public_url="https://salt.example.com:8100/api/")
    _, body, _ = one(rig, "GET", "/dongle/devices/?page_size=1&page=2", headers={"Host": "evil.example"})
    assert body["next"] == "https://salt.example.com:8100/api/dongle/devices/?page_size=1&page=3"
    assert body["previous"] == "https://salt.example.com:8100/api/dongle/devices/?page_size=1&page=1"


def test_an_unplanned_failure_answers_internal_error_with_an_id_that_is_in_the_log(caplog):
    rig = ApiRig()

    def broken(*args):
        raise RuntimeError("redis at 10.1.2.3:6379 said NOAUTH")

    rig.api.service.devices = broken
    with caplog.at_level(logging.ERROR, logger="salt_callbacks.api.http"):
        status, body, _ = one(rig, "GET", "/dongle/devices/")
    assert status == 500 and set(body) == {"detail", "error_id"} and body["detail"] == "internal error"
    assert "10.1.2.3" not in json.dumps(body)
    (logged,) = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert logged.exc_info is not None


def test_logins_over_the_rate_get_a_429_with_retry_after_per_client_address():
    rig = ApiRig(login_rate=3)

    async def scenario(client):
        answers = [await call(client, "POST", "/auth/login/", token=None, body=GOOD_LOGIN) for _ in range(4)]
        return answers

    answers = rig.session(scenario)
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    status, body, headers = answers[-1]
    assert int(headers["Retry-After"]) >= 1 and "Too many login attempts" in body["detail"]
    # Other routes are not throttled.
    assert one(rig, "GET", "/dongle/devices/")[0] == 200


def test_the_throttle_refills_and_keeps_clients_apart():
    clock = FakeClock(0.0)
    throttle = LoginThrottle(rate=2, clock=clock)
    throttle.take("a"), throttle.take("a")
    with pytest.raises(Throttled) as refused:
        throttle.take("a")
    assert refused.value.retry_after == 30
    throttle.take("b")  # another address has its own bucket
    clock.now = 30.0
    throttle.take("a")


def test_a_stalled_login_does_not_hold_up_the_other_routes_and_its_queue_is_bounded():
    rig = ApiRig(login_threads=1, login_queue=1)
    release = threading.Event()
    entered = threading.Event()

    def slow_login(username, password, eauth):
        entered.set()
        release.wait(10)
        return None

    rig.api.service._login = slow_login  # pylint: disable=protected-access

    async def scenario(client):
        stalled = [asyncio.ensure_future(call(client, "POST", "/auth/login/", token=None, body=GOOD_LOGIN))
                   for _ in range(2)]
        while not entered.is_set():
            await asyncio.sleep(0.01)
        busy = await call(client, "POST", "/auth/login/", token=None, body=GOOD_LOGIN)
        devices = await call(client, "GET", "/dongle/devices/", token=ALICE)
        release.set()
        return busy, devices, await asyncio.gather(*stalled)

    busy, devices, stalled = rig.session(scenario)
    assert busy[0] == 503 and busy[2]["Retry-After"] == "1"
    assert devices[0] == 200
    assert [s for s, _, _ in stalled] == [401, 401]


def test_a_full_pool_refuses_at_once():
    pool = BoundedPool("test", threads=1, queue=0)
    pool.open()
    gate = threading.Event()

    async def scenario():
        first = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await pool.run(lambda: None)
        gate.set()
        return await first

    try:
        assert run(scenario()) is True
    finally:
        pool.close()
