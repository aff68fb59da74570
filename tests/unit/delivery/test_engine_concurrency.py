"""A stuck receiver holds only its own host's slots; a swept record gets nothing written back.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import asyncio

import pytest

from salt_callbacks.model.records import Status

from tests.support.fakes import (
    OK,
    T0,
    make_config,
    make_record,
    new_rig,
    settle,
    status,
)

pytestmark = pytest.mark.timeout(30)


class GatedTransport:
    """Holds every POST to ``slow_host`` until ``gate`` opens; answers 200."""

    def __init__(self, slow_host):
        self.slow_host = slow_host
        self.gate = asyncio.Event()
        self.calls = []
        self.in_flight = {}
        self.peak = {}
        self.closed = False

    async def post(self, url, body, headers, timeout):
        host = url.split("/")[2]
        self.calls.append(host)
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.in_flight[host])
        try:
            if host == self.slow_host:
                await self.gate.wait()
            return status(200)
        finally:
            self.in_flight[host] -= 1

    async def close(self):
        self.closed = True


async def spin(condition, passes=100):
    """Yield to the loop until ``condition()`` holds, a bounded number of times."""
    for _ in range(passes):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_a_stuck_receiver_holds_only_its_own_host_slots():
    transport = GatedTransport("stuck.example.com")
    rig = new_rig(config=make_config(per_host_limit=1, max_concurrency=2), transport=transport)
    stuck = [make_record(n, url="https://stuck.example.com/cb", created=T0) for n in (1, 2, 3)]
    healthy = [make_record(n, url="https://ok.example.com/cb", created=T0) for n in (4, 5)]
    rig.add(*stuck, *healthy)

    await rig.engine.startup()
    for record in stuck + healthy:
        rig.ret(record, OK)
    await spin(lambda: transport.calls.count("ok.example.com") == 2)
    assert transport.calls.count("stuck.example.com") == 1  # the rest wait for its one slot
    transport.gate.set()
    await settle(rig.engine)

    assert transport.peak == {"stuck.example.com": 1, "ok.example.com": 1}
    assert sorted(transport.calls) == ["ok.example.com"] * 2 + ["stuck.example.com"] * 3
    assert all(rig.stored(r).delivery("COMMAND_EXECUTED").status == Status.DELIVERED for r in stuck + healthy)


async def test_an_attempt_that_finishes_after_its_record_was_swept_writes_nothing_back():
    transport = GatedTransport("receiver.example.com")
    rig = new_rig(config=make_config(retention=100), transport=transport)
    record = make_record(created=T0)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await spin(lambda: transport.calls)
    assert rig.engine.sweep(T0 + 100) == 1
    transport.gate.set()
    await settle(rig.engine)

    assert transport.calls == ["receiver.example.com"]
    assert rig.store.get("dev1", record.jid) is None
    assert rig.store.job(record.jid) is None
    assert rig.events == []
    assert rig.engine.live == {}
