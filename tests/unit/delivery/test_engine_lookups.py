"""Returns of jobs without callbacks cost no repeated store reads, and jobs
published together are read together.

The engine on a fake clock, a scripted transport and a dict store (a real
embedded store for the batched reads); each
``async def`` test is its scenario (tests/conftest.py runs it on a bounded loop).
"""

import json
import threading
import time

import pytest

from salt_callbacks.delivery import lookups
from salt_callbacks.store import EmbeddedStore
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


def posted_jids(rig):
    return sorted(json.loads(call["body"])["jid"] for call in rig.transport.calls)


class CountingStore(EmbeddedStore):
    """The embedded store, counting its job reads."""

    def __init__(self, path):
        super().__init__(path)
        self.batches, self.singles = [], 0

    def records_of_jobs(self, jids):
        self.batches.append(list(jids))
        return super().records_of_jobs(jids)

    def records_of_job(self, jid):
        self.singles += 1
        return super().records_of_job(jid)


def publish_with_returns(rig, records):
    rig.add(*records)
    for record in records:  # one bus read's worth of events, handled before the reads run
        rig.publish(record)
        rig.ret(record)


async def test_jobs_published_together_are_read_in_batches_and_all_delivered(tmp_path, monkeypatch):
    monkeypatch.setattr(lookups, "READ_SLICE", 60.0)  # no slice ends: every batch is read whole
    store = CountingStore(str(tmp_path / "callbacks.db"))
    rig = new_rig(store=store)
    await rig.engine.startup()
    records = [make_record(n, "dev1", created=T0) for n in range(1, lookups.READ_BATCH + 9)]
    publish_with_returns(rig, records)
    await settle(rig.engine)

    assert posted_jids(rig) == sorted(r.jid for r in records)  # every job's return delivered, once
    assert [len(batch) for batch in store.batches] == [lookups.READ_BATCH, 8] and store.singles == 0
    store.close()


async def test_jobs_a_slice_did_not_get_to_are_read_again_after_it(tmp_path, monkeypatch):
    # Events handled between slices may change a job: its records are never older than they are.
    monkeypatch.setattr(lookups, "READ_SLICE", 0.05)
    store = CountingStore(str(tmp_path / "callbacks.db"))
    rig = new_rig(store=store)
    handle = rig.engine.lookups._on_read  # pylint: disable=protected-access

    def slowly(*args):  # 10 ms a job: a slice handles ~5 of the first batch's 32
        time.sleep(0.01)
        handle(*args)

    rig.engine.lookups._on_read = slowly  # pylint: disable=protected-access
    await rig.engine.startup()
    records = [make_record(n, "dev1", created=T0) for n in range(1, 41)]
    publish_with_returns(rig, records)
    await settle(rig.engine)

    assert posted_jids(rig) == sorted(r.jid for r in records)  # each delivered, once
    first, second = store.batches[0], store.batches[1]
    assert len(first) == lookups.READ_BATCH and second[0] in first[1:]  # the first batch's rest, read again
    assert len(second) < len(first) / 2  # and read in batches a slice can handle
    store.close()


class NetworkLikeStore(CountingStore):
    """The embedded store flagged ``blocking``, as Redis is: the engine reads it in worker threads."""

    blocking = True

    def __init__(self, path):
        super().__init__(path)
        self.threads = set()

    def records_of_jobs(self, jids):
        self.threads.add(threading.get_ident())
        return super().records_of_jobs(jids)


@pytest.mark.parametrize("store_class", [CountingStore, NetworkLikeStore], ids=["on the loop", "in a thread"])
async def test_a_batch_read_that_meets_a_refused_jid_drops_it_and_reads_the_rest(tmp_path, store_class):
    store = store_class(str(tmp_path / "callbacks.db"))
    rig = new_rig(store=store)
    await rig.engine.startup()
    records = [make_record(n, "dev1", created=T0) for n in (1, 2)]
    rig.add(*records)
    rig.engine.lookups.request(records[0].jid, ret=("dev1", {"retcode": 0, "return": True, "success": True}))
    rig.engine.lookups.request("../tokens/abc")  # events.parse lets none through; the store refuses it
    rig.engine.lookups.request(records[1].jid, ret=("dev1", {"retcode": 0, "return": True, "success": True}))
    await settle(rig.engine)

    assert posted_jids(rig) == sorted(r.jid for r in records)
    assert len(rig.engine.lookups) == 0 and store.singles >= 2  # one at a time past the refused jid
    store.close()


async def test_a_network_store_reads_jobs_published_together_in_batches_off_the_loop(tmp_path):
    store = NetworkLikeStore(str(tmp_path / "callbacks.db"))
    rig = new_rig(store=store)
    await rig.engine.startup()
    records = [make_record(n, "dev1", created=T0) for n in range(1, lookups.READ_BATCH + 9)]
    publish_with_returns(rig, records)
    await settle(rig.engine)

    assert posted_jids(rig) == sorted(r.jid for r in records)  # every job's return delivered, once
    # A batch per thread read (not a read per job); a slice that ends on the loop re-reads the rest.
    assert sum(len(batch) for batch in store.batches) >= len(records) and len(store.batches) <= 4
    assert store.batches[0] == [r.jid for r in records[:lookups.READ_BATCH]]
    assert threading.get_ident() not in store.threads
    store.close()
