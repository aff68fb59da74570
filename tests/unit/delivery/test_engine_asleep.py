"""Records waiting for a return sleep in the embedded store after a start
(``CallbackEngine.asleep``): the engine keeps their keys and deadlines only,
and a return, the deadline or the retention sweep reads them back."""

import pytest

from salt_callbacks.delivery import engine as engine_module, holding, lookups
from salt_callbacks.store import EmbeddedStore

from tests.support.fakes import OK, T0, make_record, new_rig, settle, states

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def store(tmp_path):
    store = EmbeddedStore(str(tmp_path / "callbacks.db"))
    yield store
    store.close()


async def started(store, *records, **kwargs):
    rig = new_rig(store=store, **kwargs)
    rig.add(*records)
    await rig.engine.startup()
    return rig


async def test_waiting_records_sleep_and_a_return_or_the_deadline_reads_them_back(store, monkeypatch):
    monkeypatch.setattr(lookups, "OPEN_PAGE", 2)  # three pages: a job cut between two
    answered, late, third = (make_record(n, created=T0, timeout=60) for n in (1, 2, 3))
    other = make_record(3, device_id="dev2", created=T0, timeout=60)
    rig = await started(store, answered, late, third, other)
    assert rig.engine.live == {} and rig.engine.asleep == {r.key for r in (answered, late, third, other)}
    assert rig.engine.held_count() == 4

    rig.ret(answered, OK)
    await settle(rig.engine)
    assert states(rig) == ["COMMAND_EXECUTED"] and answered.key not in rig.engine.asleep
    monkeypatch.setattr(engine_module, "WAKE_SLICE", 0.0)  # one record read back per tick at least
    await rig.tick(T0 + 60)
    assert sorted(states(rig)) == ["COMMAND_EXECUTED", "TIMEOUT"]
    for _ in range(2):  # the others on the next ticks
        await rig.tick(T0 + 60)
    assert sorted(states(rig)) == ["COMMAND_EXECUTED", "TIMEOUT", "TIMEOUT", "TIMEOUT"]
    assert rig.engine.asleep == set()
    assert store.get("dev1", late.jid).phase == "timed_out"


async def test_a_return_found_in_the_job_cache_at_start_is_delivered(store):
    record = make_record(1, created=T0, timeout=60)
    rig = await started(store, record, recover=lambda jid: {"dev1": OK})
    await settle(rig.engine)
    assert states(rig) == ["COMMAND_EXECUTED"] and rig.engine.asleep == set()


async def test_an_asleep_record_that_expires_is_forgotten(store):
    record = make_record(1, created=T0, timeout=60)
    rig = await started(store, record)
    assert rig.engine.asleep == {record.key}
    rig.engine.sweep(T0 + rig.config.retention + 1)
    assert rig.engine.asleep == set() and store.get("dev1", record.jid) is None
    await rig.tick(T0 + 60)
    assert states(rig) == []


async def test_a_record_held_for_a_new_job_sleeps_once_it_waited_long(store):
    rig = await started(store)
    record = make_record(1, created=T0, timeout=600)
    rig.add(record)
    rig.publish(record)
    await settle(rig.engine)
    assert record.key in rig.engine.live
    await rig.tick(T0 + holding.DOZE_AFTER - 1)
    assert record.key in rig.engine.live
    await rig.tick(T0 + holding.DOZE_AFTER + 1)
    assert record.key not in rig.engine.live and rig.engine.asleep == {record.key}
    rig.ret(record, OK)
    await settle(rig.engine)
    assert states(rig) == ["COMMAND_EXECUTED"] and store.get("dev1", record.jid).phase == "executed"
