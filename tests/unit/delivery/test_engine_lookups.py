"""Returns of jobs without callbacks cost no repeated store reads.

The engine on a fake clock, a scripted transport and a dict store; each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import pytest

from tests.support.fakes import (
    OK,
    T0,
    jid,
    make_record,
    new_rig,
    settle,
)

pytestmark = pytest.mark.timeout(30)


async def test_a_jid_with_no_records_costs_no_further_store_reads():
    rig = new_rig()

    await rig.engine.startup()
    rig.backend.calls.clear()
    rig.engine.on_event(f"salt/job/{jid(7)}/ret/dev1", OK)
    await settle(rig.engine)
    assert rig.backend.count("fetch") == 1
    for device in ("dev1", "dev2", "dev3"):
        rig.engine.on_event(f"salt/job/{jid(7)}/ret/{device}", OK)
    await settle(rig.engine)

    assert rig.backend.count("fetch") == 1
    assert rig.backend.count("list") == 0
    assert rig.transport.calls == []


async def test_a_job_event_without_records_spares_the_store_for_its_returns():
    rig = new_rig()

    await rig.engine.startup()
    rig.backend.calls.clear()
    rig.engine.on_event(f"salt/job/{jid(8)}/new", {})
    await settle(rig.engine)
    reads = len(rig.backend.calls)
    assert reads >= 1
    rig.engine.on_event(f"salt/job/{jid(8)}/ret/dev1", OK)
    rig.engine.on_event(f"salt/job/{jid(8)}/ret/dev2", OK)
    await settle(rig.engine)
    assert len(rig.backend.calls) == reads


async def test_a_new_event_reads_the_store_even_for_a_jid_remembered_without_records():
    # A minion can fire salt/job/<jid>/new before the runner has written that
    # job's records: the job's own new event must still find them.
    rig = new_rig()
    await rig.engine.startup()
    record = make_record(9, "dev1", created=T0)
    rig.engine.on_event(f"salt/job/{record.jid}/new", {"jid": record.jid, "minions": ["dev1"]})  # the forgery
    await settle(rig.engine)
    rig.add(record)  # the runner writes, then publishes
    rig.engine.on_event(f"salt/job/{record.jid}/new", {"jid": record.jid, "minions": ["dev1"]})
    await settle(rig.engine)
    assert record.key in rig.engine.live


async def test_a_second_new_event_naming_other_minions_does_not_untrack_a_record():
    rig = new_rig()
    await rig.engine.startup()
    record = make_record(9, "dev1", created=T0)
    rig.add(record)
    rig.engine.on_event(f"salt/job/{record.jid}/new", {"jid": record.jid, "minions": ["dev1"]})
    rig.engine.on_event(f"salt/job/{record.jid}/new", {"jid": record.jid, "minions": ["dev2"]})  # a forgery
    await settle(rig.engine)
    assert record.key in rig.engine.live
