"""Records leave the store after the retention; their pending deliveries are dropped.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

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


async def test_sweep_removes_expired_records_and_drops_their_pending_deliveries():
    rig = new_rig(status(500), config=make_config(retention=100))
    old = make_record(1, created=T0, timeout=60)
    young = make_record(2, created=T0 + 50, timeout=60)
    rig.add(old, young)

    await rig.engine.startup()
    rig.publish(old)
    rig.publish(young)
    rig.ret(old, OK)
    await settle(rig.engine)
    live_old = rig.engine.live[old.key]
    assert rig.engine.sweep(T0 + 99) == 0

    assert rig.engine.sweep(T0 + 100) == 1

    assert live_old.delivery("COMMAND_EXECUTED").status == Status.DROPPED
    assert "expired" in live_old.delivery("COMMAND_EXECUTED").reason
    await rig.tick(T0 + 105)  # when the dropped retry would have been due

    assert rig.store.get("dev1", old.jid) is None
    assert rig.store.job(old.jid) is None
    assert old.key not in rig.engine.live
    assert rig.store.get("dev1", young.jid) is not None
    assert young.key in rig.engine.live
    assert len(rig.transport.calls) == 1  # the dropped retry never went out


async def test_the_tick_sweeps_expired_records():
    rig = new_rig(config=make_config(retention=100))
    record = make_record(1, created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.ret(record, OK)
    await settle(rig.engine)
    await rig.tick(T0 + 100)

    assert rig.store.job(record.jid) is None
    assert rig.store.get("dev1", record.jid) is None


async def test_an_expired_waiting_record_sends_no_timeout_after_the_sweep():
    rig = new_rig(config=make_config(retention=30))
    record = make_record(1, created=T0, timeout=60)
    rig.add(record)

    await rig.engine.startup()
    rig.publish(record)
    assert rig.engine.sweep(T0 + 30) == 1
    await rig.tick(T0 + 60)

    assert rig.transport.calls == []
